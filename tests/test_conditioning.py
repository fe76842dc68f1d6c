"""The signal-conditioning mechanism (models.conditioning): the low-resolution map of SR3, the conditioned U-Net, the
score model's binding of the signal, the losses deriving it from the clean batch, and the config's refusals.

Exact answers: the block means of the low-resolution signal are those of the input (exactly, on dyadic levels where
every sum is exact in float32); the score of a conditioned network is the parameterization of ``network(x, labels, c)``
(bit for bit); a loss that derives ``c`` itself equals the loss given ``c`` (same seed, bit for bit).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models
import sde_lib
from configs import load_config
from jobs.config_checks import config_errors
from jobs.experiment import ConfigError, build_experiment
from jobs.run_config import apply_overrides
from models.conditioning import ConditionMap, LowResolution, condition_map_from_config, condition_map_of, register_condition
from train_lib import get_loss_fn, get_optimizer, get_step_fn_from_config
from train_lib.losses import condition_signal

ROOT = Path(__file__).resolve().parents[1]


def sr3_config(**fields):
    """The digits SR3 config with a tiny network."""
    overrides = [("model.nf", "4"), ("training.batch_size", "4"), ("eval.batch_size", "4"), ("model.num_scales", "21")]
    overrides += [(key, str(value)) for key, value in fields.items()]
    return apply_overrides(load_config(ROOT / "configs/vp/digits_sr3_continuous.py"), overrides)


def tiny_network(**kwargs) -> models.NCSNpp:
    options = dict(image_size=8, num_channels=1, nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                   resblock_type="biggan", embedding_type="positional", fir=False, progressive_input="none",
                   scale_by_sigma=False, centered=True, dropout=0.0)
    options.update(kwargs)
    torch.manual_seed(0)
    return models.NCSNpp(**options)


# ------------------------------------------------------------------ the low-resolution map
def test_low_resolution_block_means_are_the_inputs_exactly():
    generator = torch.Generator().manual_seed(0)
    for factor in (1, 2, 4):
        # dyadic levels k / 16 (the digits' grid): every block sum is exact, so the means compare bit for bit
        x0 = torch.randint(0, 17, (3, 2, 8, 8), generator=generator).float() / 16
        lowres = LowResolution(factor)
        c = lowres(x0)
        assert c.shape == x0.shape and lowres.signal_shape((2, 8, 8)) == (2, 8, 8)
        assert torch.equal(F.avg_pool2d(c, factor), F.avg_pool2d(x0, factor))
    # any input: the signal is constant on each block and its block corners are the block means of x0
    x0 = torch.randn(2, 1, 8, 8, generator=generator, dtype=torch.float64)
    c = LowResolution(2)(x0)
    expected = x0.reshape(2, 1, 4, 2, 4, 2).mean(dim=(3, 5))
    torch.testing.assert_close(c[..., ::2, ::2], expected, rtol=0, atol=1e-15)
    for di in (0, 1):
        for dj in (0, 1):
            assert torch.equal(c[..., di::2, dj::2], c[..., ::2, ::2])


def test_low_resolution_refuses_sizes_the_factor_does_not_divide():
    with pytest.raises(ValueError, match="low_resolution_factor=3.*divisible"):
        LowResolution(3).signal_shape((1, 8, 8))
    with pytest.raises(ValueError, match="low_resolution_factor"):
        LowResolution(0)


def test_registry_and_config():
    assert "low_resolution" in models.available_conditions()
    assert condition_map_from_config(load_config(ROOT / "configs/vp/digits_ddpmpp_continuous.py")) is None
    built = condition_map_from_config(sr3_config(**{"model.low_resolution_factor": 4}))
    assert isinstance(built, LowResolution) and built.factor == 4
    with pytest.raises(ValueError, match="config.model.conditioning must be one of .*low_resolution"):
        models.get_condition("no_such_map")
    with pytest.raises(ValueError, match="already registered"):
        @register_condition("low_resolution")
        class Other(ConditionMap):  # noqa: F841 - a second class under a taken name
            def forward(self, x0):
                return x0

            def signal_shape(self, data_shape):
                return data_shape
    with pytest.raises(ValueError, match="subclass of models.ConditionMap"):
        register_condition("not_a_map")(torch.nn.Identity)


# ------------------------------------------------------------------ the conditioned U-Net
def test_conditioned_unet_takes_the_signal_as_extra_channels():
    plain, conditioned = tiny_network(), tiny_network(condition_map=LowResolution(2))
    assert conditioned.conv_in.weight.shape[1] == 2 and plain.conv_in.weight.shape[1] == 1
    assert condition_map_of(conditioned) is conditioned.condition_map and condition_map_of(plain) is None
    assert not hasattr(plain, "condition_map") or plain.condition_map is None
    # the map holds no weights: the state dicts have the same keys, only the input convolution differs in shape
    a, b = plain.state_dict(), conditioned.state_dict()
    assert set(a) == set(b) and [k for k in a if a[k].shape != b[k].shape] == ["conv_in.weight"]
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    x = x0.clone().requires_grad_(True)
    c = conditioned.condition_map(x0)
    out = conditioned(x, torch.rand(3) * 999, c)
    out.square().sum().backward()
    assert out.shape == x.shape and x.grad.shape == x.shape
    assert all(p.grad is not None for p in conditioned.parameters())
    assert conditioned.conv_in.weight.grad[:, 1].abs().sum() > 0, "the signal channel reaches the loss"
    with pytest.raises(ValueError, match="c: the network is conditioned on a 'low_resolution' signal"):
        conditioned(x0, torch.rand(3))
    with pytest.raises(ValueError, match=r"c: the 'low_resolution' signal must have shape \(3, 1, 8, 8\)"):
        conditioned(x0, torch.rand(3), c[:2])
    with pytest.raises(ValueError, match="no counterpart in the 2021 reference"):
        conditioned.reference_key_map()
    with pytest.raises(ValueError, match="num_classes and condition_map together are not supported"):
        tiny_network(condition_map=LowResolution(2), num_classes=3)
    # a torch.compile wrapper (OptimizedModule) keeps the module as ``_orig_mod``: the map is found through it (a
    # stand-in here: importing Dynamo costs seconds; tests/test_compile.py covers the real wrapper's attributes)
    wrapper = torch.nn.Module()
    wrapper._orig_mod = conditioned
    assert condition_map_of(wrapper) is conditioned.condition_map


def test_progressive_input_paths_take_the_signal_too():
    for progressive_input in ("input_skip", "residual"):
        network = tiny_network(condition_map=LowResolution(2), progressive_input=progressive_input)
        x0 = torch.rand(2, 1, 8, 8)
        assert network(x0, torch.rand(2) * 999, network.condition_map(x0)).shape == x0.shape


# ------------------------------------------------------------------ the score model binds c
def test_score_model_binds_the_signal():
    network = tiny_network(condition_map=LowResolution(2)).eval()
    sde = sde_lib.VPSDE(N=21)
    score_model = models.ScoreModel(network, sde, "noise")
    assert score_model.condition_map is network.condition_map
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    x = torch.randn(4, 1, 8, 8, generator=generator)
    t = torch.rand(4, generator=generator) * 0.9 + 0.05
    c = network.condition_map(x0)
    with torch.no_grad():
        by_hand = -network(x, t * 999, c) / sde.marginal_coeffs(t)[1].view(-1, 1, 1, 1)
        assert torch.equal(score_model.score(x, t, c), by_hand)
        score_fn = score_model.score_fn(y=c)
        assert torch.equal(score_fn(x, t), by_hand)
        rows = torch.tensor([3, 1])  # the rows a solver still steps: bound to theirs
        assert torch.equal(score_fn.restrict(rows)(x[rows], t[rows]), by_hand[rows])
    with pytest.raises(ValueError, match="^y: the network NCSNpp is conditioned on a 'low_resolution' signal"):
        score_model.score(x, t)
    with pytest.raises(ValueError, match="^y: "):
        score_model.score(x, t, 3)


# ------------------------------------------------------------------ the losses derive c from x0
@pytest.mark.parametrize("parameterization", ["noise", "edm", "ddpm"])
def test_losses_derive_the_signal_from_the_batch(parameterization):
    network = tiny_network(condition_map=LowResolution(2))
    sde = sde_lib.VPSDE(N=21)
    loss_fn = get_loss_fn(sde, train=False, reduce_mean=True, parameterization=parameterization)
    batch = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    c = network.condition_map(batch)
    assert torch.equal(condition_signal(network, batch), c) and condition_signal(tiny_network(), batch) is None

    def loss(**kwargs):
        with torch.no_grad():
            return loss_fn(network, batch, generator=torch.Generator().manual_seed(3), per_example=True, **kwargs)

    derived = loss()
    if parameterization == "ddpm":  # the discrete losses take no y: the derived signal is the only one
        network_calls = []
        hook = network.register_forward_pre_hook(lambda module, args: network_calls.append(args[2]))
        loss()
        hook.remove()
        assert torch.equal(network_calls[0], c)
        return
    assert torch.equal(derived, loss(y=c))
    assert not torch.equal(derived, loss(y=torch.zeros_like(c))), "the signal changes the loss"


def test_a_training_step_of_the_sr3_config():
    config = sr3_config(**{"optim.warmup": 0})  # no warm-up: the first step moves the weights
    network = models.create_model(config)
    assert isinstance(network.condition_map, LowResolution)
    sde = sde_lib.get_sde(config)

    optimizer = get_optimizer(config, network.parameters())
    state = {"model": network, "ema": models.ExponentialMovingAverage(network.parameters(), decay=0.9),
             "optimizer": optimizer, "step": 0}
    step_fn = get_step_fn_from_config(config, sde, train=True)
    before = [p.detach().clone() for p in network.parameters()]
    batch = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    loss = step_fn(state, batch, torch.Generator().manual_seed(5))
    assert torch.isfinite(torch.as_tensor(loss)) and state["step"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))


# ------------------------------------------------------------------ config refusals, one line each
@pytest.mark.parametrize("fields, pattern", [
    ({"model.low_resolution_factor": 3}, r"config.model.low_resolution_factor=3 must divide config.data.image_size=8"),
    ({"model.low_resolution_factor": 1}, r"config.model.low_resolution_factor must be an integer >= 2 \(1 would condition"),
    ({"model.conditioning": "'nearest'"}, r"config.model.conditioning must be one of .*'low_resolution'"),
    ({"data.center_crop": 30}, r"config.data.center_crop must be an integer >= 1 and <= 25"),
])
def test_config_errors_are_one_line(fields, pattern):
    config = sr3_config()
    with config.unlocked():
        for key, value in fields.items():
            section, name = key.split(".")
            config[section][name] = value.strip("'") if isinstance(value, str) else value
    errors = config_errors(config)
    assert errors and "\n" not in errors[0]
    assert any(re.search(pattern, error) for error in errors), errors


def test_a_network_that_takes_no_signal_is_refused(tmp_path):
    config = sr3_config(**{"model.name": "ddpm", "model.nf": 32})
    with pytest.raises(ConfigError, match="^config.model.conditioning='low_resolution', but config.model.name='ddpm'"):
        build_experiment(config, tmp_path, "sample")
    config = sr3_config()
    with config.unlocked():  # fields of the class-conditional configs only
        config.model.class_conditional = True
        config.data.num_classes = 10
    with pytest.raises(ConfigError, match="^config.model.name='ncsnpp' cannot be built .*num_classes and condition_map"):
        build_experiment(config, tmp_path, "sample")
