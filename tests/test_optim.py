"""``train_lib.optim``: the optimizer of ``config.optim``, the warm-up schedule and gradient clipping, checked exactly."""

from __future__ import annotations

import io
import math

import ml_collections
import pytest
import torch
from torch import nn

import models
import sde_lib
import train_lib
from configs import load_config


def optim_config(**fields) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    defaults = dict(optimizer="Adam", lr=2e-4, beta1=0.9, eps=1e-8, weight_decay=0.0, warmup=10, grad_clip=1.0)
    config.optim = ml_collections.ConfigDict({**defaults, **fields})
    return config


def params_with_grads(grads: list[torch.Tensor]) -> list[nn.Parameter]:
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return params


def global_norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


# ---------------------------------------------------------------------------- optimizer


@pytest.mark.parametrize("name, cls", [("Adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_get_optimizer_reads_config_optim(name, cls):
    config = optim_config(optimizer=name, lr=3e-4, beta1=0.8, eps=1e-6, weight_decay=0.01)
    optimizer = train_lib.get_optimizer(config, nn.Linear(2, 2).parameters())
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (3e-4, (0.8, 0.999), 1e-6, 0.01)


def test_get_optimizer_rejects_bad_config():
    with pytest.raises(ValueError, match="config.optim.optimizer='SGD' is not supported; allowed: Adam, AdamW"):
        train_lib.get_optimizer(optim_config(optimizer="SGD"), nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="config.optim.beta1 must lie in \\[0.0, 1.0\\)"):
        train_lib.get_optimizer(optim_config(beta1=1.0), nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="config.optim.lr must be a finite number > 0"):
        train_lib.get_optimizer(optim_config(lr=0.0), nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="config.optim.warmup must lie in"):
        train_lib.optimization_manager(optim_config(warmup=-1))
    with pytest.raises(ValueError, match="config.optim.grad_clip must be a number"):
        train_lib.optimization_manager(optim_config(grad_clip="1"))


# ---------------------------------------------------------------------------- (5) warm-up


def test_warmup_sets_python_float_learning_rates_and_the_update_uses_them():
    """lr(step) = lr min(step / warmup, 1) with warmup 10: steps 0, 1, 5, 10, 25 -> 0, lr/10, lr/2, lr, lr; SGD
    then moves the parameter by exactly -lr(step) * grad (no clipping: the gradient norm 0.5 is below 1)."""
    optimize_fn = train_lib.optimization_manager(optim_config(lr=1e-2, warmup=10, grad_clip=1.0))
    for step, expected in ((0, 0.0), (1, 1e-3), (5, 5e-3), (10, 1e-2), (25, 1e-2)):
        (param,) = params_with_grads([torch.tensor([0.3, -0.4], dtype=torch.float64)])
        optimizer = torch.optim.SGD([param], lr=123.0)
        optimize_fn(optimizer, [param], step=step)
        lr = optimizer.param_groups[0]["lr"]
        assert type(lr) is float and math.isclose(lr, expected, rel_tol=1e-15)
        torch.testing.assert_close(param.detach(), -expected * torch.tensor([0.3, -0.4], dtype=torch.float64))
    assert train_lib.warmup_lr(1e-2, step=3, warmup=0) == 1e-2


def test_optimizer_state_with_warmup_loads_with_weights_only():
    """The learning rate is a Python float, so a checkpoint of the optimizer loads with torch.load(weights_only=True)."""
    config, model = load_config("configs/vp/toy_mlp_continuous.py"), nn.Linear(2, 2)
    optimizer = train_lib.get_optimizer(config, model.parameters())
    optimize_fn = train_lib.optimization_manager(config)
    for step in range(3):
        model(torch.ones(1, 2)).sum().backward()
        optimize_fn(optimizer, model.parameters(), step=step)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "step": 3}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["optimizer"]["param_groups"][0]["lr"] == config.optim.lr * 2 / config.optim.warmup


def test_step_fn_applies_the_warmup_of_the_state_step():
    """After k training steps the last update used lr min((k - 1) / warmup, 1) (step counted before the increment)."""
    config = load_config("configs/vp/toy_mlp_continuous.py")
    config.model.nf, config.model.num_layers, config.optim.warmup = 16, 1, 4
    model = models.create_model(config)
    state = {
        "model": model,
        "optimizer": train_lib.get_optimizer(config, model.parameters()),
        "ema": models.ExponentialMovingAverage(model.parameters(), decay=0.9),
        "step": 0,
    }
    step_fn = train_lib.get_step_fn_from_config(config, sde_lib.get_sde(config), train=True)
    x = sde_lib.GaussianMixture.ring().sample(32, generator=torch.Generator().manual_seed(0))
    for k in range(1, 7):
        step_fn(state, x, generator=torch.Generator().manual_seed(k))
        assert state["optimizer"].param_groups[0]["lr"] == config.optim.lr * min((k - 1) / 4, 1.0)


# ---------------------------------------------------------------------------- (5) clipping


GRADS = [torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([0.0, 0.0, 0.0])]  # global norm 5


@pytest.mark.parametrize("grad_clip", [1.0, 2.5])
def test_clipping_scales_large_gradients_to_the_bound(grad_clip):
    """A global norm of 5 above grad_clip is scaled to grad_clip (direction kept); the returned norm is 5."""
    params = params_with_grads(GRADS)
    optimize_fn = train_lib.optimization_manager(optim_config(warmup=0, grad_clip=grad_clip))
    norm = optimize_fn(torch.optim.SGD(params, lr=0.0), params, step=0)
    assert math.isclose(float(norm), 5.0, rel_tol=1e-6)
    assert math.isclose(global_norm(p.grad for p in params), grad_clip, rel_tol=1e-6)
    for p, g in zip(params, GRADS):
        torch.testing.assert_close(p.grad, g * (grad_clip / 5.0))


@pytest.mark.parametrize("grad_clip", [5.5, 100.0, -1.0])
def test_clipping_leaves_small_gradients_untouched(grad_clip):
    """Below the bound (or with clipping off, grad_clip < 0) the gradients are bit-identical; no norm when off."""
    params = params_with_grads(GRADS)
    norm = train_lib.optimization_manager(optim_config(grad_clip=grad_clip))(torch.optim.SGD(params, lr=0.0), params, 0)
    assert (norm is None) == (grad_clip < 0)
    for p, g in zip(params, GRADS):
        assert torch.equal(p.grad, g)
