"""``train_lib.get_optimizer``'s kernels: fused and foreach Adam/AdamW give the per-parameter update to float rounding
(with warm-up and clipping, through ``optimization_manager``), and optimizer state dicts move between kernels, the
kernel chosen at construction being kept by ``load_state_dict``."""

from __future__ import annotations

import io

import ml_collections
import pytest
import torch
from torch import nn

import models
import train_lib
from train_lib.optim import adam_kernel

KERNELS = ("fused", "foreach")
N_STEPS = 8


def optim_config(optimizer: str = "Adam", weight_decay: float = 0.0) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.optim = ml_collections.ConfigDict(
        dict(optimizer=optimizer, lr=1e-2, beta1=0.9, eps=1e-8, weight_decay=weight_decay, warmup=3, grad_clip=0.2)
    )
    return config


def make_model(dtype: torch.dtype) -> nn.Module:
    """A small network with a frozen parameter (no gradient: the optimizers must skip it alike)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 3)).to(dtype)
    model[0].bias.requires_grad_(False)
    return model


def train(model: nn.Module, optimizer: torch.optim.Optimizer, config, steps: range) -> list[float]:
    """``steps`` updates on fixed random regression batches; the gradient norms before clipping."""
    optimize_fn = train_lib.optimization_manager(config)
    dtype = next(model.parameters()).dtype
    norms = []
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(32, 3, generator=generator, dtype=dtype)
        optimizer.zero_grad(set_to_none=True)
        (model(x) - x.flip(-1)).square().mean().backward()
        norms.append(float(optimize_fn(optimizer, model.parameters(), step=step)))
    return norms


def assert_same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer, **tolerance) -> None:
    state_a, state_b = a.state_dict()["state"], b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert float(state_a[index]["step"]) == float(state_b[index]["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state_a[index][key], state_b[index][key], **tolerance)


TOLERANCE = {torch.float64: dict(rtol=1e-11, atol=1e-14), torch.float32: dict(rtol=2e-5, atol=1e-7)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name, weight_decay", [("Adam", 0.0), ("Adam", 0.1), ("AdamW", 0.1)])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_matches_the_per_parameter_update(kernel, name, weight_decay, dtype):
    """``N_STEPS`` updates with warm-up (3 steps) and clipping (bound 0.2, which binds): weights, moments, step
    counts and gradient norms of the fused / foreach update equal those of torch's per-parameter loop to float
    rounding."""
    config = optim_config(name, weight_decay)
    reference, model = make_model(dtype), make_model(dtype)
    loop = train_lib.get_optimizer(config, reference.parameters(), kernel="loop")
    optimizer = train_lib.get_optimizer(config, model.parameters(), kernel=kernel)
    assert (optimizer.param_groups[0]["fused"], optimizer.param_groups[0]["foreach"]) == (kernel == "fused", kernel == "foreach")
    reference_norms = train(reference, loop, config, range(N_STEPS))
    norms = train(model, optimizer, config, range(N_STEPS))
    assert min(reference_norms) > 0.2  # clipping scaled every step's gradients
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(reference_norms), **TOLERANCE[dtype])
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, **TOLERANCE[dtype])
    assert not torch.equal(model[0].weight, make_model(dtype)[0].weight)  # the weights did move
    torch.testing.assert_close(model[0].bias, make_model(dtype)[0].bias, rtol=0, atol=0)  # the frozen one did not
    assert_same_state(optimizer, loop, **TOLERANCE[dtype])


def test_auto_chooses_fused_for_floating_parameters_on_the_cpu():
    model = make_model(torch.float32)
    optimizer = train_lib.get_optimizer(optim_config(), model.parameters())
    assert optimizer.param_groups[0]["fused"] is True and optimizer.param_groups[0]["foreach"] is False
    assert adam_kernel([torch.zeros(2), torch.zeros(2, dtype=torch.float64)]) == "fused"
    assert adam_kernel([torch.zeros(2, dtype=torch.int64)]) == "foreach"  # fused kernels take floating point only
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 1e-3}]  # generators
    grouped = train_lib.get_optimizer(optim_config(), groups)
    assert [len(g["params"]) for g in grouped.param_groups] == [2, 2] and grouped.param_groups[1]["lr"] == 1e-3
    with pytest.raises(ValueError, match="kernel must be one of"):
        train_lib.get_optimizer(optim_config(), model.parameters(), kernel="fast")


def saved(optimizer: torch.optim.Optimizer, drop_kernel_flags: bool = False) -> dict:
    """``optimizer.state_dict()`` through ``torch.save`` / ``torch.load(weights_only=True)``, as in a checkpoint;
    ``drop_kernel_flags``: without the ``fused`` / ``foreach`` group options, as a torch that had none wrote it."""
    state = optimizer.state_dict()
    if drop_kernel_flags:
        state["param_groups"] = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in state["param_groups"]]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("written, read", [("loop", "fused"), ("loop", "foreach"), ("fused", "loop"), ("foreach", "fused")])
@pytest.mark.parametrize("drop_kernel_flags", [False, True])
def test_state_dicts_move_between_kernels_and_the_kernel_is_kept(written, read, drop_kernel_flags):
    """A state written by one kernel (e.g. a checkpoint of the per-parameter loop, torch's CPU default before) loads
    into an optimizer of another, which keeps its own kernel and continues as the writer would have."""
    config = optim_config("Adam", 0.0)
    writer_model = make_model(torch.float64)
    writer = train_lib.get_optimizer(config, writer_model.parameters(), kernel=written)
    train(writer_model, writer, config, range(4))
    reader_model = make_model(torch.float64)
    reader_model.load_state_dict(writer_model.state_dict())
    reader = train_lib.get_optimizer(config, reader_model.parameters(), kernel=read)
    reader.load_state_dict(saved(writer, drop_kernel_flags))
    group = reader.param_groups[0]
    assert (group["fused"], group["foreach"]) == (read == "fused", read == "foreach")
    assert group["lr"] == writer.param_groups[0]["lr"]
    train(writer_model, writer, config, range(4, N_STEPS))
    train(reader_model, reader, config, range(4, N_STEPS))
    for p, q in zip(reader_model.parameters(), writer_model.parameters()):
        torch.testing.assert_close(p, q, **TOLERANCE[torch.float64])
    assert_same_state(reader, writer, **TOLERANCE[torch.float64])


def test_a_checkpoint_of_the_per_parameter_optimizer_restores_into_the_fused_one(tmp_path):
    """A training state saved with torch's per-parameter Adam (what runs wrote before the kernel was chosen) restores
    through ``train_lib.restore_checkpoint`` into a state whose optimizer is fused, which stays fused and goes on
    as the saved run would."""
    config = optim_config("Adam", 0.0)
    old_model = make_model(torch.float32)
    old = {"model": old_model, "optimizer": train_lib.get_optimizer(config, old_model.parameters(), kernel="loop"),
           "ema": models.ExponentialMovingAverage(old_model.parameters(), decay=0.9), "step": 4}
    train(old_model, old["optimizer"], config, range(4))
    train_lib.save_checkpoint(tmp_path / "checkpoint.pth", old)
    new_model = make_model(torch.float32)
    new = {"model": new_model, "optimizer": train_lib.get_optimizer(config, new_model.parameters()),
           "ema": models.ExponentialMovingAverage(new_model.parameters(), decay=0.9), "step": 0}
    train_lib.restore_checkpoint(tmp_path / "checkpoint.pth", new)
    assert new["step"] == 4 and new["optimizer"].param_groups[0]["fused"] is True
    train(old_model, old["optimizer"], config, range(4, N_STEPS))
    train(new_model, new["optimizer"], config, range(4, N_STEPS))
    for p, q in zip(new_model.parameters(), old_model.parameters()):
        torch.testing.assert_close(p, q, **TOLERANCE[torch.float32])
