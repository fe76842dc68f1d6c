"""The DDPM U-Net (``models.ddpm``): parity with the 2021 reference's recorded fixture and full-size key set, DDPM's
fixed choices (32 normalisation groups, DDPM blocks, non-FIR resampling), the reference's module order as the
forward order, ``scale_by_sigma`` with the stored ``sigmas`` buffer, and bad input. Shared helpers come from
``test_ncsnpp``."""

from __future__ import annotations

import ml_collections
import pytest
import torch

from models import create_model
from models.ddpm import DDPM
from models.layers import ResnetBlockDDPM, SelfAttention
from models.ncsnpp import NCSNpp
from test_ncsnpp import (
    check_fixture_parity,
    check_full_size_keys,
    check_reference_order_is_forward_order,
    inputs,
    needs_fixtures,
    randomise_,
)

SMALL = dict(image_size=16, num_channels=3, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0)


def build(seed: int = 0, **options) -> DDPM:
    torch.manual_seed(seed)
    return DDPM(**{**SMALL, **options})


@needs_fixtures
def test_fixture_parity():
    check_fixture_parity("vp_ddpm_continuous")


@needs_fixtures
def test_full_size_state_dict_keys_and_shapes():
    check_full_size_keys("vp/ddpm/cifar10_continuous", "vp_ddpm_continuous", nf=128, ch_mult=(1, 2, 2, 2))


@pytest.mark.parametrize("resamp_with_conv", [True, False])
def test_ddpm_structure_and_forward_order(resamp_with_conv):
    model = randomise_(build(resamp_with_conv=resamp_with_conv)).eval()
    assert isinstance(model, NCSNpp) and model.resblock_type == "ddpm" and model.embedding_type == "positional"
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    blocks = [m for m in model.modules() if isinstance(m, ResnetBlockDDPM)]
    assert len(blocks) == 2 * 1 + 2 + 2 * 2  # encoder, bottleneck, decoder (num_res_blocks + 1 per level)
    assert all(not b.skip_rescale for b in blocks) and all(not a.skip_rescale for a in model.modules() if isinstance(a, SelfAttention))
    state = model.state_dict()
    assert ("down.0.downsample.Conv_0.weight" in state) == resamp_with_conv
    assert ("up.1.upsample.Conv_0.weight" in state) == resamp_with_conv
    assert not any(k.endswith("resample_kernel") or "Conv2d_0" in k or "label_embed.fourier" in k for k in state)
    x, _ = inputs(size=16)
    steps = torch.tensor([3.5, 870.25])
    check_reference_order_is_forward_order(model, x, steps)
    with torch.no_grad():
        out = model(x, steps)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.std() > 1e-3


def test_gradient_reaches_every_parameter_and_labels_matter():
    model = randomise_(build())
    x, _ = inputs(size=16)
    steps = torch.tensor([10.0, 600.0])
    model(x, steps).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x, steps), model(x, steps.flip(0)), atol=1e-4)


def test_scale_by_sigma_divides_by_the_sigmas_buffer_at_integer_labels():
    plain = randomise_(build(num_scales=10)).eval()
    scaled = build(num_scales=10, scale_by_sigma=True).eval()
    scaled.load_state_dict(plain.state_dict())
    scaled.sigmas.mul_(torch.linspace(0.5, 2.0, 10, dtype=torch.float64))  # the stored buffer is what counts
    x, _ = inputs(size=16)
    steps = torch.tensor([0, 9])
    with torch.no_grad():
        expected = plain(x, steps) / scaled.sigmas[steps].float()[:, None, None, None]
        torch.testing.assert_close(scaled(x, steps), expected, rtol=1e-5, atol=1e-6)


def test_float64_agrees_with_float32():
    model = randomise_(build()).eval()
    x, _ = inputs(size=16)
    steps = torch.tensor([10.0, 600.0])
    with torch.no_grad():
        out32 = model(x, steps)
        out64 = model.double()(x.double(), steps)
    assert out64.dtype == torch.float64
    assert (out64 - out32.double()).abs().max() <= 1e-4 * max(1.0, out64.abs().max().item())


def test_from_config_and_bad_input():
    config = ml_collections.ConfigDict({
        "data": {"image_size": 16, "num_channels": 1, "centered": True},
        "model": {"name": "ddpm", "nf": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,),
                  "dropout": 0.2, "resamp_with_conv": False, "conditional": True, "scale_by_sigma": True,
                  "nonlinearity": "relu", "sigma_min": 0.1, "sigma_max": 5.0, "num_scales": 4},
    })
    model = create_model(config)
    assert isinstance(model, DDPM)
    assert (model.image_size, model.num_channels, model.nf, model.centered, model.scale_by_sigma) == (16, 1, 32, True, True)
    assert isinstance(model.act, torch.nn.ReLU) and len(model.sigmas) == 4
    assert model.down[0].res[0].Dropout_0.p == 0.2 and not model.down[0].downsample.with_conv
    x = torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match="num_channels"):
        model(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        model(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="GroupNorm"):
        build(nf=16)  # DDPM normalises with 32 groups: channel counts must be multiples of 32
    with pytest.raises(ValueError, match="divisible"):
        build(image_size=17)
    del config.model["ch_mult"]
    with pytest.raises(ValueError, match="model.ch_mult"):
        create_model(config)
