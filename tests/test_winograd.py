"""The CPU inference fast paths of the U-Nets: Winograd F(4x4, 3x3) convolutions (``models.winograd``) and the
channels-last layout of ``NCSNpp``.

* In float64 the Winograd algorithm is the convolution: it must match ``F.conv2d`` to ~1e-12 relative (the
  transforms are exact rationals; only float64 rounding remains).
* In float32 its rounding error is larger than a direct convolution's because the transforms' entries reach 8
  (``A^T``) and 5 (``B^T``) (measured here: ~5e-6 normalised against ~1e-6 for ``F.conv2d``). We bound the
  normalised error by ``WINOGRAD_F32_BOUND = 200 eps_32`` (2.4e-5, about 5 times the measured value), a bound that
  still leaves the networks' parity with the reference (1e-4 after dozens of layers) intact, which the fixture tests
  check with the Winograd path active.
* ``WinogradConv2d`` is a drop-in ``nn.Conv2d``: same state dict; autograd and float64 use the direct convolution
  (bit-identical to ``F.conv2d``); the cached filter transform follows weight updates.
* ``NCSNpp`` stores its convolution weights channels-last and runs channels-last, returning the input's layout; the
  output does not depend on the layout or on the Winograd switch beyond float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.ncsnpp import NCSNpp
from models.winograd import (
    MIN_CHANNELS,
    MIN_SIZE,
    WinogradConv2d,
    set_winograd_enabled,
    winograd_applies,
    winograd_conv3x3,
    winograd_disabled,
    winograd_enabled,
    winograd_weight,
)

WINOGRAD_F32_BOUND = 200 * torch.finfo(torch.float32).eps


def normalised_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    return float((out.double() - expected.double()).abs().max() / expected.double().abs().max())


@pytest.mark.parametrize("shape", [(2, 5, 4, 8, 3), (1, 7, 12, 16, 9), (3, 4, 20, 8, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_winograd_is_the_convolution_in_float64(shape, channels_last, bias):
    batch, in_ch, height, width, out_ch = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_ch, height, width, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(out_ch, in_ch, 3, 3, dtype=torch.float64, generator=gen)
    b = torch.randn(out_ch, dtype=torch.float64, generator=gen) if bias else None
    out = winograd_conv3x3(x, winograd_weight(w), b)
    assert out.shape == (batch, out_ch, height, width)
    assert normalised_error(out, F.conv2d(x, w, b, padding=1)) < 1e-12


@pytest.mark.parametrize("shape", [(4, 64, 16, 16, 64), (2, 128, 32, 32, 32)])
def test_winograd_float32_error_is_bounded(shape):
    batch, in_ch, height, width, out_ch = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, in_ch, height, width, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(out_ch, in_ch, 3, 3, generator=gen) / (9 * in_ch) ** 0.5
    b = torch.randn(out_ch, generator=gen)
    exact = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    error = normalised_error(winograd_conv3x3(x, winograd_weight(w), b), exact)
    direct = normalised_error(F.conv2d(x, w, b, padding=1), exact)
    assert error < WINOGRAD_F32_BOUND, (error, direct)


def make_conv(in_ch: int = MIN_CHANNELS, out_ch: int = MIN_CHANNELS) -> WinogradConv2d:
    torch.manual_seed(2)
    return WinogradConv2d(in_ch, out_ch)


@pytest.fixture(autouse=True)
def winograd_on():
    """The Winograd path switched on for each test (off by default on AVX-512 CPUs), then the default restored."""
    previous = winograd_enabled()
    set_winograd_enabled(True)
    yield
    set_winograd_enabled(previous)


def test_winograd_conv2d_is_a_drop_in_conv2d():
    conv = make_conv()
    assert isinstance(conv, torch.nn.Conv2d)
    assert list(conv.state_dict()) == ["weight", "bias"] and conv.weight.shape == (MIN_CHANNELS, MIN_CHANNELS, 3, 3)
    x = torch.randn(2, MIN_CHANNELS, MIN_SIZE, MIN_SIZE)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
    with torch.no_grad():
        assert winograd_applies(x, conv.weight)
        assert normalised_error(conv(x), expected) < WINOGRAD_F32_BOUND
        with winograd_disabled():
            assert not winograd_applies(x, conv.weight)
            assert torch.equal(conv(x), expected)
    assert winograd_enabled()
    # with autograd: the direct convolution, and gradients flow
    out = conv(x)
    assert torch.equal(out, expected)
    out.sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_winograd_applies_only_where_it_pays_and_is_exact_enough():
    w = torch.zeros(MIN_CHANNELS, MIN_CHANNELS, 3, 3)
    ok = torch.zeros(1, MIN_CHANNELS, MIN_SIZE, MIN_SIZE)
    with torch.no_grad():
        assert winograd_applies(ok, w)
        assert not winograd_applies(ok.double(), w.double())  # float64: direct, exact
        assert not winograd_applies(torch.zeros(1, MIN_CHANNELS - 1, MIN_SIZE, MIN_SIZE), w[:, 1:])
        assert not winograd_applies(ok, torch.zeros(MIN_CHANNELS - 1, MIN_CHANNELS, 3, 3))
        assert not winograd_applies(torch.zeros(1, MIN_CHANNELS, MIN_SIZE // 2, MIN_SIZE // 2), w)
        assert not winograd_applies(torch.zeros(1, MIN_CHANNELS, MIN_SIZE + 2, MIN_SIZE + 2), w)  # not a multiple of 4
    assert not winograd_applies(ok.requires_grad_(), w)
    try:
        set_winograd_enabled(False)
        with torch.no_grad():
            assert not winograd_applies(ok, w)
    finally:
        set_winograd_enabled(True)


def test_cached_filter_transform_follows_weight_updates():
    conv = make_conv()
    x = torch.randn(1, MIN_CHANNELS, MIN_SIZE, MIN_SIZE)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.5)
    for update in ("optimizer", "copy_", "load_state_dict", "to"):
        with torch.inference_mode():
            conv(x)  # fills the cache with the current weight
        if update == "optimizer":
            conv(x).square().sum().backward()
            optimizer.step()
        elif update == "copy_":
            with torch.no_grad():
                conv.weight.copy_(torch.randn_like(conv.weight))
        elif update == "load_state_dict":
            conv.load_state_dict({"weight": torch.randn_like(conv.weight), "bias": torch.randn_like(conv.bias)})
        else:
            conv.to(torch.float64).to(torch.float32)
        with torch.inference_mode():
            out = conv(x)
        expected = F.conv2d(x, conv.weight.detach(), conv.bias.detach(), padding=1)
        assert normalised_error(out, expected) < WINOGRAD_F32_BOUND, update
    # writes through .data bypass the version counter: clear_winograd_cache is the documented remedy
    with torch.inference_mode():
        conv(x)
    conv.weight.data.mul_(-1.0)
    conv.clear_winograd_cache()
    with torch.inference_mode():
        out = conv(x)
    expected = F.conv2d(x, conv.weight.detach(), conv.bias.detach(), padding=1)
    assert normalised_error(out, expected) < WINOGRAD_F32_BOUND


def small_unet(**overrides) -> NCSNpp:
    torch.manual_seed(3)
    options = dict(image_size=16, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                   init_scale=1.0)
    options.update(overrides)
    return NCSNpp(**options).eval()


@pytest.mark.parametrize("options", [{}, {"resblock_type": "ddpm", "fir": False, "embedding_type": "positional",
                                          "progressive_input": "none", "scale_by_sigma": False}])
def test_unet_runs_channels_last_and_returns_the_input_layout(options):
    model = small_unet(**options)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.ndim == 4)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    labels = torch.tensor([0.5, 20.0]) if "embedding_type" not in options else torch.tensor([3.0, 700.0])
    with torch.inference_mode():
        out = model(x, labels)
        out_cl = model(x.contiguous(memory_format=torch.channels_last), labels)
        with winograd_disabled():
            direct = model(x, labels)
        nchw = model.to(memory_format=torch.contiguous_format)
        with winograd_disabled():
            plain = nchw(x, labels)
    assert out.is_contiguous() and out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, out_cl)
    # the layout changes only the summation order; Winograd only float32 rounding (the whole network stays within
    # the one-layer bound: measured ~4e-6)
    assert normalised_error(plain, direct) < 1e-5
    assert normalised_error(out, direct) < WINOGRAD_F32_BOUND


def test_unet_training_path_matches_inference_and_float64():
    model = small_unet()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([1.0, 10.0])
    with torch.inference_mode():
        fast = model(x, labels)
    slow = model(x, labels)  # autograd on: direct convolutions, out-of-place activations
    exact = model.double()(x.double(), labels.double())
    assert normalised_error(slow.detach(), exact.detach()) < 1e-5
    assert normalised_error(fast, exact.detach()) < WINOGRAD_F32_BOUND
