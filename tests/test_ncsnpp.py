"""NCSN++ / DDPM++ (``models.ncsnpp``) and its building blocks (``models.layers``).

* Parity with the 2021 reference: the recorded fixtures (weights, inputs, outputs of the reference) must be
  reproduced within the fixture README's criterion ``max|diff| <= 1e-4 max(1, max|out|)``; the full-size CIFAR-10
  configs must give exactly the reference's state-dict keys and shapes.
* The options no fixture covers, by properties that fail when the construction or the forward pass is wrong: the
  reference's module order is the order in which the forward pass uses the modules (its ``m_idx``), parameter keys
  follow from the construction rules, every parameter gets a gradient, exact algebraic identities
  (``scale_by_sigma``, ``centered``, ``conditional``), float64 agreement with float32, seeded reproducibility.
* The blocks against explicit formulas written here with plain torch (attention, NIN, resampling layers, the
  DDPM initialiser's variance within 5 standard errors).
"""

from __future__ import annotations

import math

import ml_collections
import pytest
import torch
import torch.nn.functional as F

from models import ScoreModel, create_model
from sde_lib import VESDE
from models.checkpoint import from_reference_keys, load_reference_weights, to_reference_keys
from models.layers import (
    NIN,
    SLOW_CPU_ATTENTION_BACKWARD_BELOW,
    Combine,
    Downsample,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    SelfAttention,
    Upsample,
    attention,
    ddpm_init_,
    group_norm,
)
from models.ncsnpp import NCSNpp
from models.registry import get_model
from models.upfirdn2d import downsample_2d, upsample_2d
from reference_fixtures import PARITY_TOLERANCE, fixture_model, full_size_entry, load_fixture, needs_fixtures, parity_error



# ============================================================================ helpers (also used by test_ddpm.py)


def check_fixture_parity(variant: str) -> float:
    """Build the fixture's model from its config, load the reference weights, and compare outputs; returns the
    normalised error."""
    fixture, model = fixture_model(variant)
    with torch.no_grad():
        out = model(fixture["x"], fixture["labels"])
    error = parity_error(out, fixture["out"])
    assert out.dtype == torch.float32 and out.shape == fixture["out"].shape
    assert error <= PARITY_TOLERANCE, f"{variant}: normalised error {error:.3g}"
    return error


def check_full_size_keys(config_name: str, variant: str, **size_overrides) -> None:
    """The full-size model of ``config_name`` (the fixture config with the README's size overrides undone) has exactly
    the reference's state-dict keys and shapes, in the reference's names. Built on the meta device: no memory, no init."""
    entry = full_size_entry(config_name)
    config = ml_collections.ConfigDict(load_fixture(variant)["config"])
    for key, value in size_overrides.items():
        config.model[key] = value
    with torch.device("meta"):
        model = get_model(config.model.name).from_config(config)
    state = model.state_dict()
    ours = sorted((key, tuple(t.shape)) for key, t in zip(to_reference_keys(model, state.keys()), state.values()))
    theirs = sorted((key, tuple(shape)) for key, shape in entry["keys"])
    assert ours == theirs
    assert len(ours) == entry["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    assert state["sigmas"].dtype == torch.float64
    no_grad = sorted(to_reference_keys(model, [n for n, p in model.named_parameters() if not p.requires_grad]))
    assert no_grad == sorted(entry.get("parameters_without_grad", []))


def check_reference_order_is_forward_order(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> None:
    """The reference numbers its modules in the order its forward pass consumes them (``m_idx``). So the modules that
    our ``reference_key_map`` sends ``all_modules.0, 1, ...`` to must be called, each once, in exactly that order;
    and the map must be a bijection whose inverse round-trips every state-dict key."""
    key_map = model.reference_key_map()
    indices = sorted(int(k.split(".")[1]) for k in key_map)
    assert indices == list(range(len(key_map)))
    assert len(set(key_map.values())) == len(key_map)
    modules = dict(model.named_modules())
    calls: list[str] = []
    handles = [
        modules[name].register_forward_pre_hook(lambda _m, _a, name=name: calls.append(name)) for name in key_map.values()
    ]
    try:
        with torch.no_grad():
            model(x, labels)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [key_map[f"all_modules.{i}"] for i in range(len(key_map))]
    keys = list(model.state_dict())
    reference_keys = to_reference_keys(model, keys)
    assert from_reference_keys(model, reference_keys) == keys
    assert all(k == "sigmas" or k.startswith("all_modules.") for k in reference_keys)


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights as the fixtures draw them (N(0, 1/fan_in) for matrices, N(1, 0.2^2) norm scales, N(0, 0.2^2) shifts),
    so that no branch starts near zero and every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("fourier.W"):
                continue
            if p.ndim >= 2:
                fan_in = p.shape[0] if name.endswith(".W") else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif "GroupNorm" in name or "norm" in name.split(".")[-2]:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def inputs(batch: int = 2, size: int = 32, channels: int = 3, seed: int = 1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=gen, dtype=dtype)
    sigmas = torch.exp(torch.empty(batch, dtype=dtype).uniform_(math.log(0.01), math.log(50.0), generator=gen))
    return x, sigmas


# ============================================================================ parity with the reference


@needs_fixtures
@pytest.mark.parametrize("variant", ["ve_ncsnpp_continuous", "vp_ddpmpp_continuous"])
def test_fixture_parity(variant):
    check_fixture_parity(variant)


@needs_fixtures
@pytest.mark.parametrize(
    "config_name,variant,overrides",
    [
        ("ve/cifar10_ncsnpp_continuous", "ve_ncsnpp_continuous", dict(nf=128, num_res_blocks=4)),
        ("ve/cifar10_ncsnpp_deep_continuous", "ve_ncsnpp_continuous", dict(nf=128, num_res_blocks=8)),
        ("vp/cifar10_ddpmpp_continuous", "vp_ddpmpp_continuous", dict(nf=128, num_res_blocks=4)),
    ],
)
def test_full_size_state_dict_keys_and_shapes(config_name, variant, overrides):
    check_full_size_keys(config_name, variant, **overrides)


@needs_fixtures
def test_fixture_weights_load_strictly_and_mismatches_are_refused():
    fixture = load_fixture("ve_ncsnpp_continuous")
    config = ml_collections.ConfigDict(fixture["config"])
    config.model.num_res_blocks = 1
    with pytest.raises(ValueError, match="unexpected keys"):
        load_reference_weights(create_model(config), fixture["state_dict"])


# ============================================================================ every option, by its properties

SMALL = dict(image_size=32, num_channels=3, nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,),
             dropout=0.0, init_scale=1.0, fourier_scale=1.0)

OPTIONS = {
    "biggan_fir_output_skip_input_skip_cat": dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="cat"),
    "biggan_fir_output_skip_input_skip_sum": dict(progressive="output_skip", progressive_input="input_skip"),
    "biggan_nofir_residual_residual": dict(fir=False, progressive="residual", progressive_input="residual"),
    "ddpm_fir_residual_residual": dict(resblock_type="ddpm", progressive="residual", progressive_input="residual"),
    "ddpm_nofir_residual_input_skip": dict(resblock_type="ddpm", fir=False, progressive="residual", progressive_input="input_skip"),
    "ddpm_nofir_noconv_output_skip": dict(resblock_type="ddpm", fir=False, resamp_with_conv=False, progressive="output_skip", progressive_input="none"),
    "ddpm_fir_noconv_positional": dict(resblock_type="ddpm", resamp_with_conv=False, embedding_type="positional", scale_by_sigma=False, skip_rescale=False),
    "biggan_positional_noskip_rescale": dict(embedding_type="positional", scale_by_sigma=False, skip_rescale=False, progressive_input="none"),
}


def build(seed: int = 0, **options) -> NCSNpp:
    torch.manual_seed(seed)
    return NCSNpp(**{**SMALL, **options})


def option_labels(model: NCSNpp, sigmas: torch.Tensor) -> torch.Tensor:
    return sigmas if model.embedding_type == "fourier" else sigmas * 10  # noise scales or float time steps


def expected_weights(options: dict) -> dict[str, tuple[int, ...]]:
    """The main weight of every resampling / progressive module, derived from the construction rules."""
    o = {**SMALL, **options}
    fir, conv = o.get("fir", True), o.get("resamp_with_conv", True)
    resblock, prog, prog_in = o.get("resblock_type", "biggan"), o.get("progressive", "none"), o.get("progressive_input", "residual")
    nf, C, L = o["nf"], o["num_channels"], len(o["ch_mult"])
    ch = [nf * m for m in o["ch_mult"]]
    resample_conv = "Conv2d_0.weight" if fir else "Conv_0.weight"
    expected = {}
    pyramid_ch = C
    for i in range(L - 1):
        if resblock == "biggan":
            expected[f"down.{i}.downsample.Conv_2.weight"] = (ch[i], ch[i], 1, 1)  # the shortcut of a resampling block
        elif conv:
            expected[f"down.{i}.downsample.{resample_conv}"] = (ch[i], ch[i], 3, 3)
        if prog_in == "input_skip":
            expected[f"down.{i}.input_skip.Conv_0.weight"] = (ch[i], C, 1, 1)
            width = 2 * ch[i] if o.get("progressive_combine", "sum") == "cat" else ch[i]
            expected[f"down.{i + 1}.res.0.Conv_0.weight"] = (ch[i + 1], width, 3, 3)
        elif prog_in == "residual":
            expected[f"down.{i}.pyramid_downsample.{resample_conv}"] = (ch[i], pyramid_ch, 3, 3)
            pyramid_ch = ch[i]
    for i in range(L):
        if i and resblock == "biggan":
            expected[f"up.{i}.upsample.Conv_2.weight"] = (ch[i], ch[i], 1, 1)
        elif i and conv:
            expected[f"up.{i}.upsample.{resample_conv}"] = (ch[i], ch[i], 3, 3)
        if prog == "output_skip":
            expected[f"up.{i}.pyramid_conv.weight"] = (C, ch[i], 3, 3)
            expected[f"up.{i}.pyramid_norm.weight"] = (ch[i],)
        elif prog == "residual" and i == L - 1:
            expected[f"up.{i}.pyramid_conv.weight"] = (ch[i], ch[i], 3, 3)
            expected[f"up.{i}.pyramid_norm.weight"] = (ch[i],)
        elif prog == "residual":
            expected[f"up.{i}.pyramid_upsample.{resample_conv}"] = (ch[i], ch[i + 1], 3, 3)
    if prog != "output_skip":
        expected["conv_out.weight"] = (C, ch[0], 3, 3)
    expected["down.1.attn.0.NIN_0.W"] = (ch[1], ch[1])  # attention at resolution 16 only
    expected["up.1.attn.NIN_3.W"] = (ch[1], ch[1])
    return expected


RESAMPLING_GROUPS = ("downsample", "upsample", "input_skip", "pyramid_downsample", "pyramid_upsample", "pyramid_norm", "pyramid_conv", "attn")


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_builds_runs_and_follows_construction_rules(name):
    options = OPTIONS[name]
    model = randomise_(build(**options)).eval()
    x, sigmas = inputs()
    labels = option_labels(model, sigmas)
    with torch.no_grad():
        out = model(x, labels)
        again = model(x, labels)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out, again)  # eval mode is deterministic
    assert out.std() > 1e-3  # not a degenerate (zero) network

    state = model.state_dict()
    expected = expected_weights(options)
    for key, shape in expected.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    # and no resampling / progressive / attention module has weights where the rules give none
    groups = lambda keys: {".".join(k.split(".")[:3]) for k in keys if k.split(".")[0] in ("down", "up") and k.split(".")[2] in RESAMPLING_GROUPS}  # noqa: E731
    assert groups(state) == groups(expected)
    assert ("conv_out.weight" in state) == (model.progressive != "output_skip")

    check_reference_order_is_forward_order(model, x, labels)


@pytest.mark.parametrize("name", ["biggan_fir_output_skip_input_skip_cat", "ddpm_fir_residual_residual", "ddpm_nofir_residual_input_skip"])
def test_gradient_reaches_every_parameter(name):
    model = randomise_(build(**OPTIONS[name]))
    model.train()  # dropout is 0 here: train mode only changes nothing, but exercises the training path
    x, sigmas = inputs()
    model(x, option_labels(model, sigmas)).square().sum().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            assert pname == "label_embed.fourier.W"
            continue
        assert p.grad is not None and p.grad.abs().max() > 0, pname


def test_dropout_acts_in_train_mode_only():
    model = randomise_(build(dropout=0.5))
    x, sigmas = inputs()
    model.train()
    a, b = model(x, sigmas), model(x, sigmas)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x, sigmas), model(x, sigmas))


def test_same_seed_same_model_and_different_seed_different_model():
    a, b, c = build(seed=3), build(seed=3), build(seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("name", ["biggan_fir_output_skip_input_skip_cat", "ddpm_fir_residual_residual", "ddpm_fir_noconv_positional"])
def test_float64_agrees_with_float32(name):
    """The FIR kernels follow the model's dtype (the reference's stay float32 and cannot run in float64)."""
    model = randomise_(build(**OPTIONS[name])).eval()
    x, sigmas = inputs()
    labels = option_labels(model, sigmas)
    with torch.no_grad():
        out32 = model(x, labels)
        model.double()
        assert all(b.dtype == torch.float64 for n, b in model.named_buffers() if n.endswith("resample_kernel"))
        out64 = model(x.double(), labels.double())
    assert out64.dtype == torch.float64
    assert (out64 - out32.double()).abs().max() <= 1e-4 * max(1.0, out64.abs().max().item())
    with pytest.raises(ValueError, match="dtype"):
        model(x, labels)  # float32 input into the float64 network


def test_scale_by_sigma_divides_by_the_noise_scale():
    x, sigmas = inputs()
    plain = randomise_(build(scale_by_sigma=False)).eval()
    scaled = build(scale_by_sigma=True).eval()
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, sigmas) * sigmas[:, None, None, None], plain(x, sigmas), rtol=1e-5, atol=1e-6)
    # positional embedding: the divisor is the stored sigmas buffer at the (integer) labels, not the labels
    plain = randomise_(build(embedding_type="positional", scale_by_sigma=False, num_scales=10)).eval()
    scaled = build(embedding_type="positional", scale_by_sigma=True, num_scales=10).eval()
    scaled.load_state_dict(plain.state_dict())
    scaled.sigmas.mul_(torch.linspace(1.0, 3.0, 10, dtype=torch.float64))  # the buffer, not a recomputed ladder
    steps = torch.tensor([7, 2])
    with torch.no_grad():
        expected = plain(x, steps) / scaled.sigmas[steps].float()[:, None, None, None]
        torch.testing.assert_close(scaled(x, steps), expected, rtol=1e-5, atol=1e-6)


def test_uncentered_inputs_are_mapped_to_minus_one_one():
    x, sigmas = inputs()
    centered = randomise_(build(centered=True)).eval()
    uncentered = build(centered=False).eval()
    uncentered.load_state_dict(centered.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(uncentered(x, sigmas), centered(2 * x - 1, sigmas), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(uncentered(x, sigmas), centered(x, sigmas), atol=1e-3)


def test_conditioning_on_the_labels():
    x, sigmas = inputs()
    conditional = randomise_(build(scale_by_sigma=False)).eval()
    unconditional = randomise_(build(scale_by_sigma=False, conditional=False)).eval()
    assert not any(k.startswith("label_embed.dense") for k in unconditional.state_dict())
    with torch.no_grad():
        assert not torch.allclose(conditional(x, sigmas), conditional(x, sigmas.flip(0)), atol=1e-4)
        torch.testing.assert_close(unconditional(x, sigmas), unconditional(x, sigmas.flip(0)), rtol=0, atol=0)
        # the batch elements are processed independently
        torch.testing.assert_close(conditional(x[:1], sigmas[:1]), conditional(x, sigmas)[:1], rtol=1e-5, atol=1e-5)


def test_from_config_reads_every_field():
    config = ml_collections.ConfigDict({
        "training": {"continuous": True},
        "data": {"image_size": 16, "num_channels": 1, "centered": True},
        "model": {"name": "ncsnpp", "nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,),
                  "dropout": 0.0, "resamp_with_conv": False, "conditional": True, "fir": False, "fir_kernel": (1, 1),
                  "skip_rescale": False, "resblock_type": "ddpm", "progressive": "output_skip",
                  "progressive_input": "input_skip", "progressive_combine": "cat", "embedding_type": "positional",
                  "fourier_scale": 3.0, "init_scale": 0.5, "scale_by_sigma": False, "nonlinearity": "elu",
                  "sigma_min": 0.1, "sigma_max": 5.0, "num_scales": 7},
    })
    model = create_model(config)
    assert isinstance(model, NCSNpp)
    assert (model.image_size, model.num_channels, model.nf, model.num_res_blocks) == (16, 1, 8, 1)
    assert (model.resblock_type, model.progressive, model.progressive_input) == ("ddpm", "output_skip", "input_skip")
    assert model.embedding_type == "positional" and model.label_embed.fourier is None
    assert model.centered and not model.scale_by_sigma and not model.skip_rescale
    assert isinstance(model.act, torch.nn.ELU)
    assert model.down[0].input_skip.method == "cat"
    assert not model.down[0].downsample.with_conv and not model.down[0].downsample.fir
    assert model.sigmas.dtype == torch.float64 and len(model.sigmas) == 7
    torch.testing.assert_close(model.sigmas[[0, -1]], torch.tensor([5.0, 0.1], dtype=torch.float64))
    out = model(torch.randn(2, 1, 16, 16), torch.tensor([3.0, 500.0]))
    assert out.shape == (2, 1, 16, 16)
    config.model.embedding_type = "fourier"
    fourier = create_model(config)  # the Fourier embedding of log sigma cannot take the level indices of 'smld'
    with pytest.raises(ValueError, match="NCSNpp takes sigma labels, but the 'smld' parameterization gives index labels"):
        ScoreModel(fourier, VESDE(N=7), "smld")
    assert ScoreModel(fourier, VESDE(N=7), "score").parameterization.continuous_time
    del config.model["nf"]
    with pytest.raises(ValueError, match="model.nf"):
        create_model(config)


def test_bad_inputs_and_options_raise_value_error():
    model = build()
    x, sigmas = inputs()
    with pytest.raises(ValueError, match="num_channels"):
        model(x[:, :2], sigmas)
    with pytest.raises(ValueError, match="image_size"):
        model(x[:, :, :16, :16], sigmas)
    with pytest.raises(ValueError, match="image_size"):
        model(x[0], sigmas)
    with pytest.raises(ValueError, match="labels"):
        model(x, sigmas[:, None])
    with pytest.raises(ValueError, match="labels"):
        model(x, sigmas[:1])
    with pytest.raises(ValueError, match="floating-point noise scales"):
        model(x, torch.tensor([1, 2]))
    for bad, match in [
        (dict(image_size=34), "divisible"),
        (dict(resblock_type="resnet"), "resblock_type"),
        (dict(progressive="skip"), "progressive"),
        (dict(progressive_input="output_skip"), "progressive_input"),
        (dict(progressive_combine="mean"), "progressive_combine"),
        (dict(embedding_type="learned"), "embedding_type"),
        (dict(nonlinearity="tanh"), "nonlinearity"),
        (dict(nf=6), "GroupNorm"),
        (dict(ch_mult=()), "ch_mult"),
        (dict(num_res_blocks=0), "num_res_blocks"),
        (dict(dropout=1.0), "dropout"),
        (dict(fourier_scale=-1.0), "fourier_scale"),
        (dict(norm_groups=32), "GroupNorm"),
    ]:
        with pytest.raises(ValueError, match=match):
            build(**bad)


# ============================================================================ blocks against explicit formulas


def test_ddpm_init_variance_and_bounds():
    """Var of U(-b, b) is b^2 / 3 = scale / fan_avg; the sample variance of n draws has standard error
    sqrt(Var(u^2) / n) = Var * sqrt(4/5 / n); we allow 5 standard errors."""
    torch.manual_seed(0)
    weight = torch.empty(64, 48, 3, 3)
    scale = 2.0
    ddpm_init_(weight, scale)
    fan_avg = (64 + 48) * 9 / 2
    variance = scale / fan_avg
    n = weight.numel()
    assert weight.abs().max() <= math.sqrt(3 * variance)
    assert abs(weight.square().mean().item() - variance) < 5 * variance * math.sqrt(0.8 / n)
    tiny = ddpm_init_(torch.empty(100, 100), 0.0)  # scale 0 means 1e-10
    assert 0 < tiny.abs().max() <= math.sqrt(3e-10 / 100)


@pytest.mark.parametrize("shape", [(4, 32, 8, 8), (2, 128, 16, 16), (2, 128, 32, 32)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_group_norm_equals_torch_and_keeps_channels_last(shape, dtype):
    """``layers.GroupNorm`` (small bf16 channels-last examples take the plain-layout kernel) gives torch's
    ``F.group_norm`` of the same input to rounding of ``dtype``, forward and backward, and returns channels-last;
    the state dict is ``nn.GroupNorm``'s."""
    gen = torch.Generator().manual_seed(0)
    norm = group_norm(shape[1])
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[1], generator=gen))
        norm.bias.copy_(torch.randn(shape[1], generator=gen))
    assert isinstance(norm, torch.nn.GroupNorm) and list(norm.state_dict()) == ["weight", "bias"]
    x = (3 * torch.randn(shape, generator=gen) + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = norm(x)
    expected = F.group_norm(x.detach().float().contiguous(), norm.num_groups, norm.weight, norm.bias, norm.eps)
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5  # bf16 keeps 8 significant bits: 2^-8 relative, values up to ~4
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.float(), expected, rtol=tolerance, atol=tolerance)
    upstream = torch.randn(shape, generator=gen)
    (y.float() * upstream).sum().backward()
    x_ref = x.detach().float().requires_grad_(True)
    (F.group_norm(x_ref, norm.num_groups, norm.weight, norm.bias, norm.eps) * upstream).sum().backward()
    torch.testing.assert_close(x.grad.float(), x_ref.grad, rtol=10 * tolerance, atol=10 * tolerance)


@pytest.mark.parametrize("tokens", [16, 256])
@pytest.mark.parametrize("precision", ["float32", "bf16 inputs", "bf16 autocast"])
@pytest.mark.parametrize("grad", [False, True])
def test_attention_is_the_softmax_product_and_takes_float32_where_the_bf16_backward_is_slow(tokens, precision, grad):
    """``layers.attention`` equals ``softmax(q k^T / sqrt(d)) v`` (float64, explicit) to the rounding of the dtype,
    forward and backward, in the dtype the blocks expect. Which kernel ran is told by exact equality: a
    reduced-precision product of fewer than 256 tokens under autograd is the float32 product rounded once to bf16;
    every other case is the fused call in its own dtype."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, tokens, 8, generator=gen) for _ in range(3))
    if precision == "bf16 inputs":
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    q, k, v = (t.requires_grad_(grad) for t in (q, k, v))
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16 autocast")
    with autocast:
        out = attention(q, k, v)
    reduced = precision != "float32"
    assert out.dtype == (torch.bfloat16 if reduced else torch.float32)

    with torch.no_grad(), autocast:
        fused = F.scaled_dot_product_attention(q, k, v)
    q32, k32, v32 = (t.detach().float() for t in (q, k, v))
    in_float32 = F.scaled_dot_product_attention(q32, k32, v32).to(out.dtype)
    takes_float32 = reduced and grad and tokens < SLOW_CPU_ATTENTION_BACKWARD_BELOW
    if reduced:
        assert not torch.equal(fused, in_float32)  # the two paths are told apart
    assert torch.equal(out.detach(), in_float32 if takes_float32 else fused)

    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    expected = torch.softmax(q64 @ k64.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v64
    tolerance = 2e-2 if reduced else 1e-5  # bf16 keeps 8 significant bits: 2^-8 relative, values of order 1
    torch.testing.assert_close(out.detach().double(), expected.detach(), rtol=tolerance, atol=tolerance)
    if grad:
        upstream = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
        (out.double() * upstream).sum().backward()
        (expected * upstream).sum().backward()
        for ours, exact in ((q, q64), (k, k64), (v, v64)):
            torch.testing.assert_close(ours.grad.double(), exact.grad, rtol=5 * tolerance, atol=5 * tolerance)


def test_nin_is_a_channel_contraction_with_w_stored_in_out():
    torch.manual_seed(0)
    nin = NIN(5, 7)
    torch.nn.init.normal_(nin.b)
    x = torch.randn(2, 5, 4, 3)
    assert nin.W.shape == (5, 7)
    torch.testing.assert_close(nin(x), torch.einsum("bchw,co->bohw", x, nin.W) + nin.b[:, None, None])


@pytest.mark.parametrize("skip_rescale", [False, True])
def test_self_attention_matches_explicit_softmax(skip_rescale):
    torch.manual_seed(0)
    block = randomise_(SelfAttention(16, skip_rescale=skip_rescale, init_scale=1.0)).double()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    b, c, height, width = x.shape
    h = block.GroupNorm_0(x)
    q, k, v = (torch.einsum("bchw,co->bohw", h, n.W) + n.b[:, None, None] for n in (block.NIN_0, block.NIN_1, block.NIN_2))
    w = torch.einsum("bchw,bcij->bhwij", q, k).reshape(b, height, width, -1) / math.sqrt(c)
    w = torch.softmax(w, dim=-1).reshape(b, height, width, height, width)
    a = torch.einsum("bhwij,bcij->bchw", w, v)
    out = torch.einsum("bchw,co->bohw", a, block.NIN_3.W) + block.NIN_3.b[:, None, None]
    expected = (x + out) / math.sqrt(2) if skip_rescale else x + out
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_resampling_layers_match_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    up = Upsample(4, 6, with_conv=True, fir=False).double()  # the reference's non-FIR Upsample crashes
    torch.testing.assert_close(up(x), up.Conv_0(F.interpolate(x, scale_factor=2, mode="nearest")))
    assert torch.equal(Upsample(4, fir=False)(x), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    torch.testing.assert_close(Upsample(4, fir=True)(x), upsample_2d(x, [1, 3, 3, 1]))
    fir_up = Upsample(4, 6, with_conv=True, fir=True).double()
    weight = fir_up.Conv2d_0.weight
    torch.nn.init.normal_(fir_up.Conv2d_0.bias)
    inner = fir_up(x)[..., 1:-1, 1:-1]  # the fused op equals the two-step one away from the one-pixel border
    two_step = F.conv2d(upsample_2d(x, [1, 3, 3, 1]), weight, fir_up.Conv2d_0.bias, padding=1)[..., 1:-1, 1:-1]
    torch.testing.assert_close(inner, two_step)

    down = Downsample(4, 6, with_conv=True, fir=False).double()
    torch.testing.assert_close(down(x), F.conv2d(F.pad(x, (0, 1, 0, 1)), down.Conv_0.weight, down.Conv_0.bias, stride=2))
    torch.testing.assert_close(Downsample(4)(x), F.avg_pool2d(x, 2))
    torch.testing.assert_close(Downsample(4, fir=True)(x), downsample_2d(x, [1, 3, 3, 1]))
    with pytest.raises(ValueError, match="channel count"):
        Upsample(4, 6, with_conv=False)


@pytest.mark.parametrize("fir", [False, True])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_biggan_block_matches_its_formula(fir, direction):
    torch.manual_seed(0)
    block = randomise_(ResnetBlockBigGAN(torch.nn.SiLU(), 8, 12, temb_dim=5, up=direction == "up",
                                         down=direction == "down", dropout=0.0, fir=fir, skip_rescale=True)).double()
    x, temb = torch.randn(2, 8, 8, 8, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    if direction == "up":
        resample = (lambda t: upsample_2d(t, [1, 3, 3, 1])) if fir else (lambda t: F.interpolate(t, scale_factor=2))
    else:
        resample = (lambda t: downsample_2d(t, [1, 3, 3, 1])) if fir else (lambda t: F.avg_pool2d(t, 2))
    h = block.Conv_0(resample(F.silu(block.GroupNorm_0(x)))) + block.Dense_0(F.silu(temb))[:, :, None, None]
    h = block.Conv_1(F.silu(block.GroupNorm_1(h)))
    expected = (block.Conv_2(resample(x)) + h) / math.sqrt(2)
    torch.testing.assert_close(block(x, temb), expected)


@pytest.mark.parametrize("conv_shortcut", [False, True])
def test_ddpm_block_shortcuts_and_combine(conv_shortcut):
    torch.manual_seed(0)
    block = randomise_(ResnetBlockDDPM(torch.nn.SiLU(), 8, 12, temb_dim=5, conv_shortcut=conv_shortcut, dropout=0.0)).double()
    assert hasattr(block, "Conv_2") == conv_shortcut and hasattr(block, "NIN_0") != conv_shortcut
    x, temb = torch.randn(2, 8, 6, 6, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    h = block.Conv_0(F.silu(block.GroupNorm_0(x))) + block.Dense_0(F.silu(temb))[:, :, None, None]
    h = block.Conv_1(F.silu(block.GroupNorm_1(h)))
    shortcut = block.Conv_2(x) if conv_shortcut else block.NIN_0(x)
    torch.testing.assert_close(block(x, temb), shortcut + h)
    combine_sum, combine_cat = Combine(3, 8, "sum").double(), Combine(3, 8, "cat").double()
    combine_cat.load_state_dict(combine_sum.state_dict())
    pyramid = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    projected = combine_sum.Conv_0(pyramid)
    torch.testing.assert_close(combine_sum(pyramid, x), projected + x)
    torch.testing.assert_close(combine_cat(pyramid, x), torch.cat([projected, x], dim=1))
