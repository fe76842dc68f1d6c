"""NCSNv2 (``ncsnv2_64``/``_128``/``_256``), its RefineNet blocks and normalisation layers.

* InstanceNorm++, InstanceNorm and VarianceNorm against float64 numpy transcriptions of their equations.
* Parity with the 2021 reference: the stored ``ve_ncsnv2`` fixture loads strictly (same keys, same order) and
  gives the reference's output within the README tolerance; the full-size CIFAR-10 network has exactly the
  reference's keys and shapes.
* Properties of all three depths that a wrong port breaks: the resolution of every stage (dilated "down" blocks
  keep it), output shape, gradients reaching every parameter, division by the loaded ``sigmas[labels]``, input
  centring, float64, determinism, and bad inputs.
"""

from __future__ import annotations


import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from models.checkpoint import load_reference_weights
from models.ncsnv2 import NCSNv2, NCSNv2Deeper, NCSNv2Deepest, geometric_sigmas
from models.normalization import InstanceNorm2d, InstanceNorm2dPlus, VarianceNorm2d
from models.refinenet import get_activation
from reference_fixtures import PARITY_TOLERANCE, full_size_entry, load_fixture, needs_fixtures, parity_error

VARIANTS = {  # registered name -> (class, a small image size it accepts, stage resolutions at that size)
    "ncsnv2_64": (NCSNv2, 16, [16, 8, 8, 8]),
    "ncsnv2_128": (NCSNv2Deeper, 16, [16, 8, 4, 4, 4]),
    "ncsnv2_256": (NCSNv2Deepest, 32, [32, 16, 8, 4, 4, 4]),
}


def load_fixture_model(variant: str):
    """The fixture dict and the model built from its config with the stored weights, in eval mode."""
    fixture = load_fixture(variant)
    model = models.create_model(ml_collections.ConfigDict(fixture["config"]))
    assert list(model.state_dict()) == list(fixture["state_dict"])  # the reference's keys, in its order
    load_reference_weights(model, fixture["state_dict"])
    return fixture, model.eval()


def small_model(name: str, nf: int = 4, seed: int = 0, **kwargs) -> NCSNv2:
    cls, size, _ = VARIANTS[name]
    torch.manual_seed(seed)
    return cls(image_size=size, nf=nf, num_scales=kwargs.pop("num_scales", 10), **kwargs).eval()


def randomize_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Draw every float parameter away from its (partly constant) initialisation, as the fixtures do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5 + (1.0 if p.ndim == 1 else 0.0))
    return model


# ============================================================================ normalisation layers


def numpy_instance_norm_plus(x, gamma, alpha, beta, eps=1e-5):
    """NCSN eq. (A.1) in float64 numpy, written from the equation, per sample and channel."""
    x = np.asarray(x, np.float64)
    mu = x.mean(axis=(2, 3))  # (B, C)
    s2 = x.var(axis=(2, 3))  # biased
    m = mu.mean(axis=1, keepdims=True)
    v = mu.var(axis=1, ddof=1, keepdims=True)  # unbiased across channels, as the reference
    h = (x - mu[..., None, None]) / np.sqrt(s2[..., None, None] + eps)
    h = h + (alpha * (mu - m) / np.sqrt(v + eps))[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


def test_instance_norm_plus_matches_its_equation():
    g = torch.Generator().manual_seed(0)
    offsets = torch.randn(3, 5, 1, 1, generator=g, dtype=torch.float64)  # channel means that differ
    x = torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64) * 2 + offsets
    layer = InstanceNorm2dPlus(5).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(5, generator=g, dtype=torch.float64))
    params = (p.detach().numpy() for p in (layer.gamma, layer.alpha, layer.beta))
    expected = numpy_instance_norm_plus(x.numpy(), *params)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # the output keeps the spread of the channel means: its channel means are gamma alpha (standardised mu) + beta
    assert not torch.allclose(layer(x).mean((2, 3)), layer.beta.expand(3, 5))


def test_instance_norm_and_variance_norm_match_their_equations():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) + 3
    xn = x.numpy()
    inorm = InstanceNorm2d(3)(x).numpy()
    standardized = (xn - xn.mean((2, 3), keepdims=True)) / np.sqrt(xn.var((2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(inorm, standardized, rtol=1e-12)
    vnorm = VarianceNorm2d(3).double()
    expected = vnorm.alpha.detach().numpy()[:, None, None] * xn / np.sqrt(xn.var((2, 3), ddof=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(vnorm(x).detach().numpy(), expected, rtol=1e-12)
    assert list(dict(InstanceNorm2d(3).named_parameters())) == [] and list(dict(vnorm.named_parameters())) == ["alpha"]


def test_activations_follow_the_config_names():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(get_activation("ELU")(x), F.elu(x))
    assert torch.equal(get_activation("relu")(x), F.relu(x))
    assert torch.equal(get_activation("lrelu")(x), F.leaky_relu(x, 0.2))
    assert torch.equal(get_activation("swish")(x), F.silu(x))
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        get_activation("gelu")


# ============================================================================ parity with the reference


@needs_fixtures
def test_parity_with_reference_fixture():
    """``ve_ncsnv2`` (``ncsnv2_64``, nf=16, CIFAR-10 config): README tolerance 1e-4; measured about 2.6e-6."""
    fixture, model = load_fixture_model("ve_ncsnv2")
    assert isinstance(model, NCSNv2) and model.sigmas.dtype == torch.float64
    with torch.no_grad():
        out = model(fixture["x"], fixture["labels"])
        out64 = model.double()(fixture["x"].double(), fixture["labels"])
    assert out.dtype == torch.float32 and out64.dtype == torch.float64  # the input's dtype, not the buffer's
    assert parity_error(out, fixture["out"]) <= PARITY_TOLERANCE
    assert parity_error(out64, fixture["out"]) <= PARITY_TOLERANCE


@needs_fixtures
def test_forward_divides_by_the_loaded_sigmas_not_a_recomputed_ladder():
    """The fixture's ``sigmas`` are the config's ladder times exp(N(0, 0.1^2)): recomputing them must break parity."""
    fixture, model = load_fixture_model("ve_ncsnv2")
    config = fixture["config"]["model"]
    ladder = geometric_sigmas(config["sigma_min"], config["sigma_max"], config["num_scales"])
    assert not torch.allclose(model.sigmas, ladder, rtol=1e-3)
    model.sigmas.copy_(ladder)
    with torch.no_grad():
        out = model(fixture["x"], fixture["labels"])
    assert parity_error(out, fixture["out"]) > 1e-2


@needs_fixtures
def test_full_size_cifar10_network_has_the_reference_keys_and_shapes():
    entry = full_size_entry("ve/ncsnv2/cifar10")
    config = ml_collections.ConfigDict(
        {
            "data": {"num_channels": 3, "image_size": 32, "centered": False},
            "model": {"name": entry["model_name"], "nf": 128, "num_scales": 232, "sigma_min": 0.01, "sigma_max": 50,
                      "normalization": "InstanceNorm++", "nonlinearity": "elu"},
        }
    )
    with torch.device("meta"):
        model = models.get_model(entry["model_name"]).from_config(config)
    state = model.state_dict()
    assert [[k, list(v.shape)] for k, v in state.items()] == entry["keys"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    non_float32 = {k: str(v.dtype).removeprefix("torch.") for k, v in state.items() if v.dtype != torch.float32}
    assert non_float32 == entry["non_float32_entries"]
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == entry["parameters_without_grad"]


# ============================================================================ the three depths


def test_registry_and_from_config_build_each_depth():
    for name, (cls, size, _) in VARIANTS.items():
        assert models.get_model(name) is cls
        config = ml_collections.ConfigDict(
            {"data": {"num_channels": 1, "image_size": size, "centered": True},
             "model": {"name": name, "nf": 4, "num_scales": 7, "sigma_min": 0.1, "sigma_max": 3.0,
                       "normalization": "InstanceNorm++", "nonlinearity": "swish"}}
        )
        model = models.create_model(config)
        assert type(model) is cls and model.num_channels == 1 and model.centered
        torch.testing.assert_close(model.sigmas, torch.from_numpy(np.geomspace(3.0, 0.1, 7)), rtol=1e-12, atol=0)
        assert model.begin_conv.weight.shape == (4, 1, 3, 3) and isinstance(model.act, torch.nn.SiLU)


def test_deeper_variants_have_the_reference_layout():
    """Names and shapes of the reference's ``NCSNv2_128`` / ``NCSNv2_256`` (counts taken from the repaired reference:
    192 and 230 state_dict entries); ``NCSNv2_256`` defines ``refine3`` before ``refine31``."""
    deeper, deepest = small_model("ncsnv2_128", nf=4).state_dict(), small_model("ncsnv2_256", nf=4).state_dict()
    assert len(deeper) == 192 and len(deepest) == 230
    assert deeper["res4.0.shortcut.weight"].shape == (16, 8, 3, 3)  # 2nf -> 4nf, dilated 3x3 learned skip
    assert deeper["refine2.msf.convs.1.weight"].shape == (8, 16, 3, 3)  # refine1's 4nf output fused into 2nf
    assert deeper["refine5.output_convs.3_2_conv.weight"].shape == (4, 4, 3, 3)  # the end block: 3 output RCUs
    assert deepest["res31.0.conv2.conv.weight"].shape == (8, 8, 3, 3)  # the third mean-pooling stage
    refine_order = list(dict.fromkeys(k.split(".")[0] for k in deepest if k.startswith("refine")))
    assert refine_order == ["refine1", "refine2", "refine3", "refine31", "refine4", "refine5"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_stage_resolutions_and_dilations(name):
    """Mean-pooling stages halve the resolution, dilated "down" stages keep it; the output has the input's shape."""
    model = small_model(name)
    _, size, resolutions = VARIANTS[name]
    seen = []
    for stage in model.stages:
        model._modules[stage.res_name][1].register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
        for conv in (model._modules[stage.res_name][0].conv1, model._modules[stage.res_name][1].conv2):
            assert conv.dilation == (stage.dilation,) * 2 and conv.padding == (stage.dilation,) * 2
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 9]))
    assert seen == resolutions and out.shape == x.shape


@pytest.mark.parametrize("name", ["ncsnv2_128", "ncsnv2_256"])
def test_gradient_reaches_every_parameter(name):
    model = randomize_(small_model(name)).train()
    x = torch.rand(2, 3, *[VARIANTS[name][1]] * 2)
    model(x, torch.tensor([1, 8])).square().sum().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().max() > 0]
    assert silent == []


def test_output_is_divided_by_the_buffer_at_each_label():
    """``out(x, i) sigma_i`` does not depend on ``i``, and scaling the buffer by c scales the output by 1/c."""
    model = randomize_(small_model("ncsnv2_128")).double()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64).expand(3, -1, -1, -1)
    labels = torch.tensor([0, 4, 9])
    with torch.no_grad():
        out = model(x, labels)
        unscaled = out * model.sigmas[labels][:, None, None, None]
        model.sigmas.mul_(2.5)
        rescaled = model(x, labels)
    torch.testing.assert_close(unscaled[1:], unscaled[:1].expand(2, -1, -1, -1), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(out[0], out[2])  # sigma_0 / sigma_9 = 50: the labels matter
    torch.testing.assert_close(rescaled * 2.5, out, rtol=1e-12, atol=0)


def test_uncentered_inputs_are_mapped_to_two_x_minus_one():
    a = small_model("ncsnv2_64", centered=False)
    b = small_model("ncsnv2_64", centered=True)
    b.load_state_dict(a.state_dict())
    x, labels = torch.rand(2, 3, 16, 16), torch.tensor([2, 5])
    with torch.no_grad():
        torch.testing.assert_close(a(x, labels), b(2 * x - 1, labels), rtol=0, atol=0)
        assert not torch.allclose(a(x, labels), b(x, labels))


@pytest.mark.parametrize("normalization", ["InstanceNorm", "VarianceNorm"])
def test_other_normalizations_build_and_run(normalization):
    model = small_model("ncsnv2_64", normalization=normalization)
    keys = [k for k in model.state_dict() if k.startswith("normalizer.")]
    assert keys == ([] if normalization == "InstanceNorm" else ["normalizer.alpha"])
    with torch.no_grad():
        out = model(torch.rand(2, 3, 16, 16), torch.tensor([0, 3]))
    assert torch.isfinite(out).all()


def test_float64_agrees_with_float32_and_eval_is_deterministic():
    model = randomize_(small_model("ncsnv2_256"))
    x, labels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([3, 7])
    with torch.no_grad():
        out32, again = model(x, labels), model(x, labels)
        out64 = model.double()(x.double(), labels)
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    assert torch.equal(out32, again)
    assert parity_error(out32, out64) <= PARITY_TOLERANCE


# ============================================================================ bad input


@pytest.mark.parametrize(
    "cls, bad_sizes",
    [(NCSNv2, [15, 2]), (NCSNv2Deeper, [18, 4]), (NCSNv2Deepest, [20, 8])],
)
def test_image_sizes_the_architecture_cannot_take(cls, bad_sizes):
    for size in bad_sizes:
        with pytest.raises(ValueError, match="image_size must be a multiple of"):
            cls(image_size=size, nf=4)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="normalization must be one of"):
        NCSNv2(nf=4, normalization="GroupNorm")
    with pytest.raises(ValueError, match="nonlinearity"):
        NCSNv2(nf=4, nonlinearity="tanh")
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        NCSNv2(nf=4, sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="num_scales"):
        NCSNv2(nf=4, num_scales=0)
    with pytest.raises(ValueError, match="num_features must be >= 2"):
        NCSNv2(nf=1)


def test_bad_forward_inputs():
    model = small_model("ncsnv2_64")
    x, labels = torch.rand(2, 3, 16, 16), torch.tensor([0, 9])
    for bad_x in (torch.rand(2, 1, 16, 16), torch.rand(2, 3, 32, 32), torch.rand(3, 16, 16), x.long()):
        with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(B, 3, 16, 16\)"):
            model(bad_x, labels)
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(2,\)"):
        model(x, labels[:1])
    with pytest.raises(ValueError, match="labels must be integer noise-level indices"):
        model(x, torch.tensor([0.5, 2.0]))
    for bad in ([0, 10], [-1, 3]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
            model(x, torch.tensor(bad))
