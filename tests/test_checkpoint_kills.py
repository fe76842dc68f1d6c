"""A training run killed (SIGKILL) at every phase of a checkpoint save loses only the steps since its last meta
checkpoint: re-run, it writes every numbered checkpoint and ends with the weights of an uninterrupted run.

The run (the VP toy config, 12 steps, batch 32) writes the numbered checkpoint ``checkpoint_k.pth`` and the meta
checkpoint at steps 4, 8 and 12. A forked child trains and kills itself at step 8 while saving one of the two
files: half-way through writing the temporary file, after writing it but before the rename, right after the
rename, or once the save has returned (for the numbered file: between it and the meta checkpoint of the same
step). The parent then re-runs the job in the same workdir and compares every checkpoint with the uninterrupted
run's.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

import jobs.run
import train_lib.checkpoints
from configs import load_config
from jobs.run import train
from train_lib.checkpoints import DIGEST_KEY, load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
KILL_STEP = 8
FIELDS = {
    "training.n_iters": 12, "training.batch_size": 32, "training.log_freq": 4, "training.eval_freq": 4,
    "training.snapshot_freq": 4, "training.snapshot_freq_for_preemption": 4, "training.snapshot_sampling": False,
    "model.nf": 16, "data.num_train": 512, "data.num_test": 64, "optim.warmup": 0,
}
PHASES = ("mid_write", "before_replace", "after_replace", "after_save")
TARGETS = {"numbered": f"checkpoint_{KILL_STEP // 4}.pth", "meta": "checkpoint.pth"}

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(sys.platform != "linux", reason="forks the training process (Linux)"),
]


def small_config():
    config = load_config(ROOT / "configs" / "vp" / "toy_mlp_continuous.py")
    for path, value in FIELDS.items():
        section, field = path.split(".")
        setattr(config[section], field, value)
    return config


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _train_and_kill(workdir: str, target: str, phase: str) -> None:
    """Child process: train, and SIGKILL this process during ``phase`` of the save of ``target`` at ``KILL_STEP``."""
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    real_save, real_write, real_replace = jobs.run.save_checkpoint, train_lib.checkpoints.atomic_write, os.replace
    armed = False

    def save(path, state):
        nonlocal armed
        armed = Path(path).name == target and int(state["step"]) == KILL_STEP
        result = real_save(path, state)
        if armed and phase == "after_save":
            _die()
        return result

    def atomic_write(path, write):
        if not armed:
            return real_write(path, write)
        if phase == "mid_write":
            def write_half(file):
                buffer = io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                file.write(data[: len(data) // 2])
                file.flush()
                os.fsync(file.fileno())
                _die()

            return real_write(path, write_half)
        if phase in ("before_replace", "after_replace"):
            def replace(source, destination):
                if phase == "after_replace":
                    real_replace(source, destination)
                _die()

            os.replace = replace
        return real_write(path, write)

    jobs.run.save_checkpoint = save
    train_lib.checkpoints.atomic_write = atomic_write
    train(small_config(), workdir)


def checkpoint_files(workdir: Path) -> dict[str, Path]:
    return {p.relative_to(workdir).as_posix(): p for p in sorted(workdir.glob("checkpoints*/*"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    torch.set_num_threads(1)
    workdir = tmp_path_factory.mktemp("uninterrupted")
    train(small_config(), workdir)
    return {name: load_checkpoint_file(path) for name, path in checkpoint_files(workdir).items()}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("which", list(TARGETS))
def test_kill_during_a_save_then_resume_loses_nothing(which, phase, uninterrupted, tmp_path):
    target = TARGETS[which]
    child = multiprocessing.get_context("fork").Process(target=_train_and_kill, args=(str(tmp_path), target, phase))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL, f"the run was not killed while saving {target} ({phase})"

    meta = tmp_path / "checkpoints-meta" / "checkpoint.pth"
    renamed = which == "meta" and phase in ("after_replace", "after_save")  # the meta file of step 8 is in place
    assert int(load_checkpoint_file(meta)["step"]) == (KILL_STEP if renamed else KILL_STEP - 4)

    train(small_config(), tmp_path)
    files = checkpoint_files(tmp_path)
    assert list(files) == list(uninterrupted), "a checkpoint is missing, or a temporary file was left"
    for name, path in files.items():
        resumed, expected = load_checkpoint_file(path), uninterrupted[name]
        assert resumed["step"] == expected["step"], name
        for key, tensor in expected["model"].items():
            assert torch.equal(resumed["model"][key], tensor), (name, key)
        for ours, theirs in zip(resumed["ema"]["shadow_params"], expected["ema"]["shadow_params"], strict=True):
            assert torch.equal(ours, theirs), name
        assert resumed[DIGEST_KEY] == expected[DIGEST_KEY], name  # optimizer moments too
