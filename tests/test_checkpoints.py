"""Training checkpoints: exact round trips, atomic writes under SIGKILL, strict and safe loading with clear errors."""

from __future__ import annotations

import os
import signal
import multiprocessing
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import models
from train_lib.checkpoints import CheckpointError, load_checkpoint_file, restore_checkpoint, save_checkpoint

def make_state(seed: int = 0, width: int = 16) -> dict:
    torch.manual_seed(seed)
    model = models.MLPScoreNet(dim=2, hidden_dim=width, num_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ema = models.ExponentialMovingAverage(model.parameters(), decay=0.9)
    return {"model": model, "ema": ema, "optimizer": optimizer, "step": 0}


def train_steps(state: dict, steps: int, seed: int = 123) -> list[float]:
    """Deterministic steps: the batch of step k depends only on (seed, k), as a resumable loop draws it."""
    losses = []
    for _ in range(steps):
        generator = torch.Generator().manual_seed(seed + state["step"])
        x = torch.randn(32, 2, generator=generator)
        t = torch.rand(32, generator=generator)
        state["optimizer"].zero_grad()
        loss = (state["model"](x, t) - x).square().mean()
        loss.backward()
        state["optimizer"].step()
        state["ema"].update(state["model"].parameters())
        state["step"] += 1
        losses.append(loss.item())
    return losses


def test_round_trip_resumes_the_same_run(tmp_path):
    """Save after 5 steps, restore into a fresh state, run 5 more: the same losses and weights as 10 straight steps."""
    straight = make_state()
    expected = train_steps(straight, 10)

    first = make_state()
    train_steps(first, 5)
    path = save_checkpoint(tmp_path / "checkpoints-meta" / "checkpoint.pth", first)
    resumed = restore_checkpoint(path, make_state(seed=99))
    assert resumed["step"] == 5
    assert train_steps(resumed, 5) == expected[5:]
    for a, b in zip(resumed["model"].parameters(), straight["model"].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(resumed["ema"].shadow_params, straight["ema"].shadow_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed["ema"].num_updates == straight["ema"].num_updates == 10
    assert [p.name for p in tmp_path.rglob("*")] == ["checkpoints-meta", "checkpoint.pth"]  # no temporary left


def test_reference_warmup_learning_rate_loads(tmp_path):
    """The reference stores a numpy float64 learning rate during warm-up; it loads without unpickling code."""
    state = make_state()
    train_steps(state, 1)
    payload = {
        "model": {"module." + k: v for k, v in state["model"].state_dict().items()},
        "ema": state["ema"].state_dict(),
        "optimizer": state["optimizer"].state_dict(),
        "step": 1,
    }
    payload["optimizer"]["param_groups"][0]["lr"] = np.float64(4e-8)
    torch.save(payload, tmp_path / "reference.pth")
    restored = restore_checkpoint(tmp_path / "reference.pth", make_state(seed=5))
    assert restored["step"] == 1 and restored["optimizer"].param_groups[0]["lr"] == 4e-8


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    state = make_state()
    path = save_checkpoint(tmp_path / "checkpoint.pth", state)
    before = path.read_bytes()
    train_steps(state, 2)

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, state)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def _write_forever(path: str, state: dict, ready) -> None:
    """Child process: save a 2 MB checkpoint over and over, moving every weight by +1 per step."""
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    ready.set()
    while True:
        state["step"] += 1
        with torch.no_grad():
            for p in state["model"].parameters():
                p.add_(1.0)
        save_checkpoint(path, state)


@pytest.mark.skipif(sys.platform != "linux", reason="forks a writer process (Linux)")
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    """A writer saving in a loop is killed with SIGKILL at 8 arbitrary moments; the file always loads whole.

    The writer is forked (no second interpreter start-up), so the kills land at moments spread over many writes.
    """
    path = tmp_path / "checkpoint.pth"
    context = multiprocessing.get_context("fork")
    delays = np.random.default_rng(0).uniform(0.05, 0.5, size=8)
    fresh = next(make_state(width=512)["model"].parameters()).detach().clone()
    steps = []
    for delay in delays:
        ready = context.Event()
        writer = context.Process(target=_write_forever, args=(str(path), make_state(width=512), ready), daemon=True)
        writer.start()
        assert ready.wait(timeout=60)
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        if not path.exists():
            continue
        state = restore_checkpoint(path, make_state(width=512))  # raises CheckpointError if torn
        steps.append(state["step"])
        # the weights belong to the step recorded with them: every parameter moved by exactly `step`
        torch.testing.assert_close(next(state["model"].parameters()), fresh + state["step"])
    assert len(steps) >= 6 and max(steps) > 1, steps
    save_checkpoint(path, make_state(width=512))  # the next save sweeps temporaries of killed writers
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "cannot be read"),
        (b"not a checkpoint at all", "cannot be read"),
    ],
)
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}.*{message}|{message}.*{path}"):
        restore_checkpoint(path, make_state())


def test_truncated_checkpoint_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pth", make_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint_file(path)


def test_wrong_content_and_wrong_model_are_reported_and_leave_the_state_alone(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="is not a training checkpoint"):
        restore_checkpoint(tmp_path / "other.pth", make_state())

    path = save_checkpoint(tmp_path / "wide.pth", make_state(width=32))
    state = make_state(width=16)
    train_steps(state, 2)
    before = {k: v.clone() for k, v in state["model"].state_dict().items()}
    with pytest.raises(CheckpointError, match=f"checkpoint {path} does not fit this model"):
        restore_checkpoint(path, state)
    assert state["step"] == 2
    for key, value in state["model"].state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_a_malicious_pickle_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Exploit(), "step": 0}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint_file(path)


def test_missing_file_and_bad_state(tmp_path):
    with pytest.raises(FileNotFoundError):
        restore_checkpoint(tmp_path / "absent.pth", make_state())
    with pytest.raises(ValueError, match=r"lacks \['ema'\]"):
        save_checkpoint(tmp_path / "x.pth", {"model": nn.Linear(1, 1), "optimizer": None, "step": 0})
