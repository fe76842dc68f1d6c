"""``config.model.compile``: the compiled network computes what the eager one does (forward and a gradient step), its
checkpoints load with compilation off and the other way round, a bad value is a one-line error naming the field.

Tolerances: the compiled graph reorders and fuses float32 arithmetic, so outputs agree to rounding (``1e-5``
relative for the MLP, ``1e-4`` of the output's scale for the digits U-Net, whose eager CPU inference convolves by
Winograd and the compiled graph directly). The digits U-Net's gradient step and its bf16 forward compile for about
two minutes on two cores: they run only with ``SCORE_SDE_SLOW_TESTS=1``.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import pytest
import torch

import models
from configs import load_config
from jobs.experiment import ConfigError, build_experiment
from jobs.run_config import apply_overrides
from models.compiled import COMPILE_MODES, compile_network, is_compiled, uncompiled
from train_lib import restore_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
slow = pytest.mark.skipif(os.environ.get("SCORE_SDE_SLOW_TESTS") != "1", reason="slow: set SCORE_SDE_SLOW_TESTS=1")


def _toy_config(compile_mode: str):
    return apply_overrides(load_config(ROOT / "configs/vp/toy_mlp_continuous.py"),
                           [("model.nf", "16"), ("training.batch_size", "8"), ("eval.batch_size", "8"),
                            ("training.mixed_precision", "no"), ("model.compile", compile_mode)])


def _mlp(seed: int = 0) -> models.MLPScoreNet:
    torch.manual_seed(seed)
    return models.MLPScoreNet(dim=2, hidden_dim=32, num_layers=3)


def _sgd_step(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> float:
    """One plain gradient step (Adam's first step, ``lr * sign(g)``, would magnify rounding in tiny gradients)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.train()
    loss = (model(x, t) - x).square().mean()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def test_bad_value_is_a_one_line_error_naming_the_field(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_experiment(_toy_config("fast"), tmp_path, "sample")
    message = str(error.value)
    assert "\n" not in message and "config.model.compile" in message and "'fast'" in message
    assert all(repr(mode) in message for mode in COMPILE_MODES)
    with pytest.raises(ValueError, match="mode must be one of"):
        compile_network(_mlp(), "fastest")


def test_none_leaves_the_network_alone():
    network = _mlp()
    assert compile_network(network, "none") is network and not is_compiled(network)


def test_mlp_forward_and_gradient_step_match_eager():
    eager, compiled = _mlp(), _mlp()
    reports: list[tuple[float, int, bool]] = []
    assert compile_network(compiled, "default", on_compile=lambda *report: reports.append(report)) is compiled
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(16, 2, generator=gen), torch.rand(16, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x, t), eager.eval()(x, t), rtol=1e-5, atol=1e-6)
    assert len(reports) == 1 and reports[0][0] > 0 and reports[0][1:] == (1, False)  # the compiling call, reported
    loss_eager, loss_compiled = _sgd_step(eager, x, t), _sgd_step(compiled, x, t)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-5)
    assert [report[1:] for report in reports] == [(1, False), (2, True)]  # train mode with autograd: a new graph
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` prefix
    copied = copy.deepcopy(compiled)
    assert not is_compiled(copied) and not is_compiled(uncompiled(compiled))


@pytest.mark.parametrize("counter, reported", [("unchanged", False), ("grows", True), ("unavailable", True)])
def test_a_first_call_is_reported_only_if_it_compiled(counter, reported, monkeypatch):
    """A network whose first call finds its graphs already compiled in the process (another module of the same code,
    e.g. the evaluation's copy of a trained network) compiled nothing and is not reported; without Dynamo's graph
    counter the first call is reported, as the one known to compile."""
    counts = iter(range(100))
    values = {"unchanged": lambda: 7, "grows": lambda: next(counts), "unavailable": lambda: None}
    monkeypatch.setattr(models.compiled, "_graphs_compiled", values[counter])
    reports: list[tuple[float, int, bool]] = []
    network = compile_network(_mlp(), "default", on_compile=lambda *report: reports.append(report))
    with torch.no_grad():
        network.eval()(torch.zeros(4, 2), torch.full((4,), 0.5))
    assert [report[1:] for report in reports] == ([(1, False)] if reported else [])


def test_checkpoints_load_with_compilation_on_or_off(tmp_path):
    """Train two steps compiled, save, restore into an uncompiled experiment: the same weights and outputs; then one
    step there, save, restore into the compiled one."""
    logger, records = logging.getLogger("train_lib"), []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        on = build_experiment(_toy_config("default"), tmp_path / "on", "train")
        assert is_compiled(on.model) and on.state["model"] is on.model
        gen = torch.Generator().manual_seed(0)
        for _ in range(2):
            on.train_step_fn(on.state, torch.randn(8, 2, generator=gen), gen)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    messages = [record.getMessage() for record in records]
    assert messages and messages[0].startswith("compiled mlp (torch.compile mode 'default') in ")
    path = save_checkpoint(tmp_path / "on.pth", on.state)

    off = build_experiment(_toy_config("none"), tmp_path / "off", "train")
    assert not is_compiled(off.model)
    restore_checkpoint(path, off.state)
    assert off.state["step"] == 2
    for (name, a), b in zip(off.model.state_dict().items(), on.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # the network itself in train mode with autograd, as the training step called it: the compiled graph is reused
    x, labels = torch.randn(8, 2, generator=gen), torch.rand(8, generator=gen) * 999
    torch.testing.assert_close(on.model.train()(x, labels), off.model.train()(x, labels), rtol=1e-5, atol=1e-6)

    off.train_step_fn(off.state, torch.randn(8, 2, generator=gen), gen)
    restore_checkpoint(save_checkpoint(tmp_path / "off.pth", off.state), on.state)
    assert on.state["step"] == 3 and is_compiled(on.model)
    torch.testing.assert_close(on.model(x, labels), off.model(x, labels), rtol=1e-5, atol=1e-6)


def _digits_network() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    config = load_config(ROOT / "configs/vp/digits_ddpmpp_continuous.py")
    torch.manual_seed(0)
    network = models.create_model(config)
    with torch.no_grad():  # weights of unit scale: the initial last layers (init_scale 0) would hide every error
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(2)
    size, channels = config.data.image_size, config.data.num_channels
    return network, torch.randn(2, channels, size, size, generator=gen), torch.rand(2, generator=gen) * 999


def _close_to_scale(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    actual, expected = actual.detach().float(), expected.detach().float()
    error = float((actual - expected).abs().max() / expected.abs().max())
    assert error < tolerance, f"compiled vs eager: error {error:.2e} of the output's scale (tolerance {tolerance:.0e})"


def test_digits_ddpmpp_forward_matches_eager():
    eager, x, t = _digits_network()
    compiled = compile_network(copy.deepcopy(eager), "default")
    with torch.no_grad():
        _close_to_scale(compiled.eval()(x, t), eager.eval()(x, t), 1e-4)


@slow
def test_digits_ddpmpp_gradient_step_and_bf16_match_eager():
    eager, x, t = _digits_network()
    compiled = compile_network(copy.deepcopy(eager), "default")
    loss_eager, loss_compiled = _sgd_step(eager, x, t), _sgd_step(compiled, x, t)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-4)
    # all gradients as one vector, on the scale of the largest: some layers' gradients are ~0 at this point
    flat = lambda tensors: torch.cat([t.detach().flatten() for t in tensors])  # noqa: E731
    _close_to_scale(flat(p.grad for p in compiled.parameters()), flat(p.grad for p in eager.parameters()), 1e-3)
    _close_to_scale(flat(compiled.parameters()), flat(eager.parameters()), 1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _close_to_scale(compiled.eval()(x, t), eager.eval()(x, t), 3e-2)  # bf16 rounding, in a different order
