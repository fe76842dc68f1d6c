"""``models.upfirdn2d`` against direct numpy/scipy computations of its definition: zero insertion, padding (negative
crops), true 2-D convolution (``scipy.signal.convolve2d``), decimation; and against ``scipy.signal.upfirdn`` applied
per axis for separable kernels. The fused convolution + resampling helpers are checked against the two-step
definition ``conv2d(upsample_2d(x))`` / ``downsample_2d(conv2d(x))`` written with plain ``torch.nn.functional``.

Tolerances: float64 results agree to ~1e-12 (rounding only); float32 to a few ulps of the output scale (1e-5)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from models.upfirdn2d import (
    conv_downsample_2d,
    downsample_2d,
    fir_kernel_2d,
    upfirdn2d,
    upsample_2d,
    upsample_conv_2d,
)

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def numpy_upfirdn2d(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """The definition, step by step, on a (B, C, H, W) array in float64."""
    b, c, h, w = x.shape
    stuffed = np.zeros((b, c, h * up, w * up))
    stuffed[:, :, ::up, ::up] = x
    p0, p1 = pad
    padded = np.pad(stuffed, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    hh, ww = padded.shape[2:]
    padded = padded[:, :, max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    out = np.stack(
        [np.stack([scipy.signal.convolve2d(img, kernel, mode="valid") for img in batch]) for batch in padded]
    )
    return out[:, :, ::down, ::down]


def random_images(shape, dtype, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


KERNELS = {
    "symmetric_1331": np.outer([1.0, 3, 3, 1], [1.0, 3, 3, 1]) / 64,
    "asymmetric_separable": np.outer([1.0, 2.0, 0.5], [0.3, -1.0, 2.0, 0.7]),
    "asymmetric_full": np.random.default_rng(3).normal(size=(3, 5)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3), (4, 1), (1, 4), (2, 3), (3, 2)])
@pytest.mark.parametrize("pad", [(0, 0), (2, 1), (-1, 3), (1, -2), (4, 4)])
def test_upfirdn2d_matches_its_definition(dtype, kernel_name, up, down, pad):
    kernel = KERNELS[kernel_name]
    x = random_images((2, 3, 7, 9), dtype, seed=up * 10 + down)
    if min(7 * up, 9 * up) + sum(pad) < max(kernel.shape):
        pytest.skip("output would be empty")
    expected = numpy_upfirdn2d(x.double().numpy(), kernel, up, down, pad)
    got = upfirdn2d(x, torch.tensor(kernel, dtype=dtype), up=up, down=down, pad=pad)
    assert got.dtype == dtype
    assert got.shape == expected.shape
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (3, 2), (4, 1), (1, 4)])
def test_upfirdn2d_separable_matches_scipy_upfirdn(up, down):
    """``scipy.signal.upfirdn`` (zero insertion, full convolution, decimation) along each axis; our padding
    ``(L - 1, L - up)`` makes the same full convolution."""
    taps_h = np.array([0.2, 1.0, -0.4, 0.7])
    taps_w = np.array([1.0, 2.0, 3.0, 4.0])
    x = random_images((1, 2, 6, 6), torch.float64, seed=5)
    length = len(taps_h)
    got = upfirdn2d(x, torch.tensor(np.outer(taps_h, taps_w)), up, down, pad=(length - 1, length - up))
    arr = x.numpy()
    expected = scipy.signal.upfirdn(taps_h, arr, up=up, down=down, axis=2)
    expected = scipy.signal.upfirdn(taps_w, expected, up=up, down=down, axis=3)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_fir_kernel_is_normalised_outer_product_times_gain():
    k = fir_kernel_2d([1, 3, 3, 1], gain=4.0)
    assert k.dtype == torch.float32
    expected = 4.0 * np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    np.testing.assert_array_equal(k.numpy(), expected.astype(np.float32))  # dyadic values: exact
    k2 = fir_kernel_2d(np.array([[1.0, 2.0], [3.0, 4.0]]), dtype=torch.float64)
    np.testing.assert_allclose(k2.numpy(), np.array([[1, 2], [3, 4]]) / 10.0, rtol=0, atol=1e-15)
    for bad in ([1, -1], [[1, 2, 3], [4, 5, 6]], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="FIR taps"):
            fir_kernel_2d(bad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [0.5, 1.0, -0.25], None])
def test_upsample_and_downsample_2d(dtype, factor, taps):
    x = random_images((2, 3, 8, 8), dtype, seed=factor)
    taps_np = np.ones(factor) if taps is None else np.array(taps, dtype=float)
    kernel = np.outer(taps_np, taps_np) / np.outer(taps_np, taps_np).sum()
    p = len(taps_np) - factor
    up = upsample_2d(x, taps, factor=factor, gain=1.5)
    assert up.shape == (2, 3, 8 * factor, 8 * factor)
    expected = numpy_upfirdn2d(x.double().numpy(), kernel * 1.5 * factor**2, factor, 1, ((p + 1) // 2 + factor - 1, p // 2))
    np.testing.assert_allclose(up.double().numpy(), expected, rtol=0, atol=TOL[dtype] * max(1, np.abs(expected).max()))
    down = downsample_2d(x, taps, factor=factor)
    assert down.shape == (2, 3, 8 // factor, 8 // factor)
    expected = numpy_upfirdn2d(x.double().numpy(), kernel, 1, factor, ((p + 1) // 2, p // 2))[:, :, : 8 // factor, : 8 // factor]
    np.testing.assert_allclose(down.double().numpy(), expected, rtol=0, atol=TOL[dtype] * max(1, np.abs(expected).max()))


def test_default_kernels_are_nearest_neighbour_and_average_pooling():
    x = random_images((2, 3, 6, 6), torch.float64, seed=9)
    for factor in (2, 3):
        nearest = F.interpolate(x, scale_factor=factor, mode="nearest")
        torch.testing.assert_close(upsample_2d(x, factor=factor), nearest, rtol=0, atol=1e-14)
        torch.testing.assert_close(downsample_2d(x, factor=factor), F.avg_pool2d(x, factor), rtol=0, atol=1e-14)


def test_constant_image_is_scaled_by_gain_away_from_borders():
    x = torch.full((1, 1, 10, 10), 2.0, dtype=torch.float64)
    up = upsample_2d(x, [1, 3, 3, 1], factor=2, gain=0.5)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 1.0))
    down = downsample_2d(x, [1, 3, 3, 1], factor=2, gain=3.0)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 6.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "factor,taps,size", list(itertools.product([1, 2, 3, 4], [[1, 3, 3, 1], [1, 2, 1], [2.0, -1.0, 0.5]], [1, 3, 5]))
)
def test_fused_resampling_convolutions_match_pad_once_definition(dtype, factor, taps, size):
    """The fused ops against their definition with plain conv2d and the (separately tested) upfirdn2d, padding once
    at the start; and against the naive two-step composition (zero padding between the steps) away from the border,
    the only place where the two differ."""
    gen = torch.Generator().manual_seed(factor * 100 + size)
    x = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64).to(dtype)
    weight = torch.randn(5, 4, size, size, generator=gen, dtype=torch.float64).to(dtype)
    c = size // 2
    taps_t = torch.tensor(taps, dtype=torch.float64)
    kernel = (torch.outer(taps_t, taps_t) / torch.outer(taps_t, taps_t).sum()).to(dtype)
    p = len(taps) - factor
    atol = lambda ref: TOL[dtype] * 10 * max(1.0, ref.abs().max().item())  # noqa: E731

    up = upsample_conv_2d(x, weight, taps, factor=factor, gain=0.7)
    pad_once = F.conv2d(upfirdn2d(x, kernel * 0.7 * factor**2, up=factor, pad=((p + 1) // 2 + factor - 1 + c, p // 2 + c)), weight)
    assert up.shape == (2, 5, 16 * factor, 16 * factor) == pad_once.shape
    torch.testing.assert_close(up, pad_once, rtol=0, atol=atol(pad_once))
    two_step = F.conv2d(upsample_2d(x, taps, factor=factor, gain=0.7), weight, padding=c)
    inner = (slice(None), slice(None), slice(c, up.shape[2] - c), slice(c, up.shape[3] - c))
    torch.testing.assert_close(up[inner], two_step[inner], rtol=0, atol=atol(two_step))

    down = conv_downsample_2d(x, weight, taps, factor=factor, gain=0.7)
    full_conv_first = upfirdn2d(F.conv2d(x, weight, padding=2 * c), kernel * 0.7, down=factor, pad=((p + 1) // 2 - c, p // 2 - c))
    assert down.shape == (2, 5, 16 // factor, 16 // factor) == full_conv_first.shape
    torch.testing.assert_close(down, full_conv_first, rtol=0, atol=atol(full_conv_first))
    two_step = downsample_2d(F.conv2d(x, weight, padding=c), taps, factor=factor, gain=0.7)
    m = -(-(c + len(taps)) // factor)  # output samples whose filter window reaches the zero-padded conv border
    inner = (slice(None), slice(None), slice(m, down.shape[2] - m), slice(m, down.shape[3] - m))
    torch.testing.assert_close(down[inner], two_step[inner], rtol=0, atol=atol(two_step))


def test_fused_upsampling_differs_from_zero_padded_two_step_only_at_the_border():
    """With the NCSN++ kernel the filtered signal extends one pixel past the up-sampled image: the pad-once op uses
    it where the naive two-step composition sees zeros, so the two differ on the outermost ring and nowhere else."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 8, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    diff = (upsample_conv_2d(x, weight, [1, 3, 3, 1]) - F.conv2d(upsample_2d(x, [1, 3, 3, 1]), weight, padding=1)).abs()
    ring = torch.ones_like(diff, dtype=torch.bool)
    ring[..., 1:-1, 1:-1] = False
    assert diff[~ring].max() < 1e-12
    assert diff[ring].max() > 1e-3


def test_gradients_match_finite_differences():
    x = random_images((1, 2, 5, 5), torch.float64, seed=2).requires_grad_()
    k = torch.tensor(KERNELS["asymmetric_full"])
    torch.autograd.gradcheck(lambda t: upfirdn2d(t, k, up=2, down=1, pad=(1, -1)), (x,))
    torch.autograd.gradcheck(lambda t: upfirdn2d(t, k, up=1, down=2, pad=(2, 1)), (x,))
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t, ww: upsample_conv_2d(t, ww, [1, 3, 3, 1]), (x, w))


def test_bad_arguments_raise_value_error():
    x = torch.zeros(1, 2, 4, 4)
    k = torch.ones(2, 2)
    with pytest.raises(ValueError, match="x must be"):
        upfirdn2d(torch.zeros(2, 4, 4), k)
    with pytest.raises(ValueError, match="x must be"):
        upfirdn2d(torch.zeros(1, 2, 4, 4, dtype=torch.int64), k)
    with pytest.raises(ValueError, match="kernel"):
        upfirdn2d(x, torch.ones(4))
    with pytest.raises(ValueError, match="up must be"):
        upfirdn2d(x, k, up=0)
    with pytest.raises(ValueError, match="down must be"):
        upfirdn2d(x, k, down=1.5)
    with pytest.raises(ValueError, match="pad"):
        upfirdn2d(x, k, pad=(1, 2, 3))
    with pytest.raises(ValueError, match="smaller than"):
        upfirdn2d(x, k, pad=(-2, -2))
    with pytest.raises(ValueError, match="input channels"):
        upsample_conv_2d(x, torch.zeros(3, 5, 3, 3))
    with pytest.raises(ValueError, match="odd size"):
        conv_downsample_2d(x, torch.zeros(3, 2, 2, 2))
    with pytest.raises(ValueError, match="factor"):
        upsample_2d(x, factor=0)
