"""End-to-end tests of the training job (``main.py``, :func:`jobs.train`) on the 2-D toy configs.

* Quality: each SDE's toy config (MLP of width 64, 1000 steps of batch 256, lr 3e-3) trains and its EMA weights,
  sampled with the configured sampler (reverse diffusion, 1000 steps), give ``N_SAMPLES`` points whose sliced
  Wasserstein distance to fresh data (mean over ``N_REFERENCES`` sets of ``N_SAMPLES`` points) is below ``null mean + K_NULL null sd``, the null
  distribution being the same distance for ``N_SAMPLES`` fresh data points (``NULL_DRAWS`` draws): the noise floor
  of the statistic at this sample size. The untrained model's samples must be ``UNTRAINED_RATIO`` times farther.
  Measured (seed 42): null mean 0.215, sd 0.059, so the bound is 0.45; VP 0.22, sub-VP 0.30, VE 0.21; untrained
  models 150 to 350. VP trains through ``main.py`` (a killed and resumed run), sub-VP and VE in-process.
* Resume: ``main.py`` killed (SIGKILL) once a meta checkpoint exists, then re-run, continues from that step and
  ends with weights, EMA and optimizer state bit-identical to an uninterrupted run (one thread on the CPU).
* Failures: a truncated meta checkpoint, a diverging run, and config errors that must stop before any step.
* Outputs: ``log.txt``, a TensorBoard scalar that matches the log, the sample PNG and npz.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data_lib
from configs import load_config
from sample_quality import sliced_wasserstein
from train_lib import CheckpointError, restore_checkpoint
from jobs.experiment import ConfigError, build_experiment
from jobs.images import SCATTER_DPI, SCATTER_SIZE_INCHES, image_grid, save_image_grid
from jobs.run import TrainingDivergedError, train

ROOT = Path(__file__).resolve().parents[1]
N_ITERS = 1000
# the run shared by every test: a command line and the same fields set in-process
OVERRIDES = {
    "training.n_iters": N_ITERS,
    "training.batch_size": 256,
    "training.log_freq": 100,
    "training.eval_freq": 250,
    "training.snapshot_freq": N_ITERS,
    "training.snapshot_freq_for_preemption": 100,
    "training.snapshot_sampling": False,
    "model.nf": 64,
    "optim.lr": 3e-3,
    "optim.warmup": 100,
    "eval.batch_size": 1000,
}
N_SAMPLES = 1000  # model samples scored (eval.batch_size)
N_REFERENCES = 4  # independent sets of N_SAMPLES fresh data points; the statistic is the mean SW to them
NULL_DRAWS = 16  # draws of the null distribution
K_NULL = 4.0  # bound: null mean + K_NULL null standard deviations
UNTRAINED_RATIO = 50.0  # the untrained model must be this many times farther than the bound
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def toy_config_path(sde: str) -> Path:
    return ROOT / "configs" / sde / "toy_mlp_continuous.py"


def toy_config(sde: str, **extra):
    """The toy config of ``sde`` with :data:`OVERRIDES` and ``extra`` (``a__b=v`` sets ``a.b``)."""
    config = load_config(toy_config_path(sde))
    for path, value in {**OVERRIDES, **{k.replace("__", "."): v for k, v in extra.items()}}.items():
        section, field = path.split(".")
        setattr(config[section], field, value)
    return config


def main_command(sde: str, workdir: Path, **extra) -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **{k.replace("__", "."): v for k, v in extra.items()}}.items()]
    return [sys.executable, str(ROOT / "main.py"), f"--config={toy_config_path(sde)}", f"--workdir={workdir}", "--mode=train", *flags]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def sample_ema(sde: str, workdir: Path, checkpoint: Path | None, seed: int = 1) -> torch.Tensor:
    """``eval.batch_size`` samples of the configured sampler under the EMA weights of ``checkpoint`` (or of the
    untrained model when ``None``)."""
    exp = build_experiment(toy_config(sde), workdir, "sample")
    if checkpoint is not None:
        restore_checkpoint(checkpoint, exp.state)
        exp.ema.copy_to(exp.model.parameters())
    samples, _ = exp.sampling_fn(exp.model, generator=torch.Generator().manual_seed(seed))
    return samples


def data(n: int, seed: int) -> torch.Tensor:
    return data_lib.sample_toy("8gaussians", n, torch.Generator().manual_seed(seed))


def sw_to_reference(x: torch.Tensor, references: list[torch.Tensor]) -> float:
    """The mean sliced Wasserstein distance (256 projections) from ``x`` to each reference set of the same size
    (equal sizes: the exact quantile coupling is a sort)."""
    return sum(float(sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(123))) for y in references) / len(references)


# ------------------------------------------------------------------ shared runs
@pytest.fixture(scope="module")
def resumed_vp(tmp_path_factory):
    """``main.py`` on VP killed after its first meta checkpoint, re-run to the end; and an uninterrupted run."""
    torch.set_num_threads(1)
    killed = tmp_path_factory.mktemp("vp_resumed")
    meta = killed / "checkpoints-meta" / "checkpoint.pth"
    child = subprocess.Popen(main_command("vp", killed, **{"training.snapshot_sampling": True}), env=CHILD_ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not meta.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "main.py ended before it could be killed"
    kill_step = int(torch.load(meta, weights_only=True)["step"])
    rerun = subprocess.run(main_command("vp", killed, **{"training.snapshot_sampling": True}), env=CHILD_ENV,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    uninterrupted = tmp_path_factory.mktemp("vp_uninterrupted")
    train(toy_config("vp"), uninterrupted)
    return {"killed": killed, "kill_step": kill_step, "uninterrupted": uninterrupted}


@pytest.fixture(scope="module")
def null_distribution():
    """The statistic for ``N_SAMPLES`` fresh data points, ``NULL_DRAWS`` times: the noise floor at this size."""
    references = [data(N_SAMPLES, 7 + k) for k in range(N_REFERENCES)]
    null = torch.tensor([sw_to_reference(data(N_SAMPLES, 1000 + i), references) for i in range(NULL_DRAWS)])
    return references, float(null.mean()), float(null.std())


# ------------------------------------------------------------------ 1. quality per SDE
@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_trained_samples_match_data(sde, resumed_vp, null_distribution, tmp_path):
    references, null_mean, null_sd = null_distribution
    if sde == "vp":
        workdir = resumed_vp["killed"]  # trained by main.py
    else:
        workdir = tmp_path / sde
        train(toy_config(sde), workdir)
    bound = null_mean + K_NULL * null_sd
    trained = sw_to_reference(sample_ema(sde, workdir, workdir / "checkpoints" / "checkpoint_1.pth"), references)
    untrained = sw_to_reference(sample_ema(sde, workdir, None), references)
    print(f"{sde}: SW trained {trained:.4f}, untrained {untrained:.1f}, bound {bound:.4f} (null {null_mean:.4f} +- {null_sd:.4f})")
    assert trained < bound, f"{sde}: SW {trained:.4f} >= bound {bound:.4f} (null {null_mean:.4f} +- {null_sd:.4f})"
    assert untrained > UNTRAINED_RATIO * bound, f"{sde}: untrained SW {untrained:.3f} is not far above {bound:.4f}"


def test_bound_rejects_a_ring_without_modes(null_distribution):
    """The bound is not vacuous: points spread uniformly around the circle of the 8 modes (radius 4, noise 0.3),
    i.e. a model that learnt the ring but not the modes, fail it."""
    references, null_mean, null_sd = null_distribution
    generator = torch.Generator().manual_seed(5)
    angle = 2 * math.pi * torch.rand(N_SAMPLES, generator=generator)
    ring = 4 * torch.stack([angle.cos(), angle.sin()], 1) + 0.3 * torch.randn(N_SAMPLES, 2, generator=generator)
    assert sw_to_reference(ring, references) > null_mean + 3 * null_sd


# ------------------------------------------------------------------ 2. resume after a kill
def test_resume_after_kill_continues_identically(resumed_vp):
    killed, kill_step = resumed_vp["killed"], resumed_vp["kill_step"]
    assert 0 < kill_step < N_ITERS
    log = (killed / "log.txt").read_text()
    assert f"resumed from {killed / 'checkpoints-meta' / 'checkpoint.pth'} at step {kill_step}" in log
    resumed = torch.load(killed / "checkpoints" / "checkpoint_1.pth", weights_only=True)
    reference = torch.load(resumed_vp["uninterrupted"] / "checkpoints" / "checkpoint_1.pth", weights_only=True)
    assert resumed["step"] == reference["step"] == N_ITERS
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for ours, theirs in zip(resumed["ema"]["shadow_params"], reference["ema"]["shadow_params"], strict=True):
        assert torch.equal(ours, theirs)
    for index, moments in reference["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], value), (index, key)


# ------------------------------------------------------------------ 3. corrupt checkpoint, divergence
def test_truncated_meta_checkpoint_is_reported_with_its_name(resumed_vp, tmp_path):
    good = (resumed_vp["killed"] / "checkpoints-meta" / "checkpoint.pth").read_bytes()
    meta = tmp_path / "checkpoints-meta" / "checkpoint.pth"
    meta.parent.mkdir(parents=True)
    meta.write_bytes(good[: len(good) // 2])
    run = subprocess.run(main_command("vp", tmp_path), env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"checkpoint {meta} cannot be read" in run.stderr
    assert "Traceback" not in run.stderr
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {meta} cannot be read")):
        train(toy_config("vp"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # nothing trained, nothing overwritten


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """lr = 1e10 without clipping blows the weights up; every finite step writes the meta checkpoint, the first
    non-finite loss stops the run, and the meta checkpoint left behind is the previous, loadable, finite state."""
    config = toy_config("vp", optim__lr=1e10, optim__grad_clip=-1.0, optim__warmup=0,
                        training__snapshot_freq_for_preemption=1, training__log_freq=1, training__n_iters=50)
    with pytest.raises(TrainingDivergedError, match=r"the training loss is (nan|inf) at step (\d+)") as failure:
        train(config, tmp_path)
    step = int(re.search(r"at step (\d+)", str(failure.value)).group(1))
    assert 1 < step < 50 and str(tmp_path / "checkpoints-meta" / "checkpoint.pth") in str(failure.value)
    exp = build_experiment(config, tmp_path, "train")
    restore_checkpoint(tmp_path / "checkpoints-meta" / "checkpoint.pth", exp.state)
    assert exp.state["step"] == step - 1
    assert all(torch.isfinite(p).all() for p in [*exp.model.parameters(), *exp.ema.shadow_params])


def test_a_last_step_between_snapshots_takes_the_next_checkpoint_number(tmp_path):
    """``checkpoint_k`` is step ``k * snapshot_freq``; a run that ends between two multiples writes its last step
    as the next number (the reference overwrote the previous multiple's), and a run shorter than ``snapshot_freq``
    writes ``checkpoint_1``, which the default evaluation range starts at."""
    def steps(workdir: Path) -> dict[int, int]:
        return {int(p.stem.split("_")[1]): int(torch.load(p, weights_only=True)["step"])
                for p in (workdir / "checkpoints").glob("checkpoint_*.pth")}

    fields = dict(training__batch_size=16, training__snapshot_freq=5, training__log_freq=1, training__eval_freq=100)
    train(toy_config("vp", training__n_iters=7, **fields), tmp_path / "run")
    assert steps(tmp_path / "run") == {1: 5, 2: 7}
    train(toy_config("vp", training__n_iters=9, **fields), tmp_path / "run")  # trained further: the same interval
    assert steps(tmp_path / "run") == {1: 5, 2: 9}
    train(toy_config("vp", training__n_iters=3, **fields), tmp_path / "short")
    assert steps(tmp_path / "short") == {1: 3}


# ------------------------------------------------------------------ 4. errors before any step
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"data__dataset": "nosuchdata"}, r"unknown config.data.dataset 'nosuchdata'; known: CIFAR10"),
        ({"model__name": "nosuchnet"}, r"unknown model 'nosuchnet'; known models: .*mlp"),
        ({"training__sde": "nosuchsde"}, r"config.training.sde='nosuchsde' is not a known SDE; known: "),
        ({"sampling__method": "nosuchsampler"}, r"config.sampling.method"),
        ({"sampling__predictor": "nosuchpredictor"}, r"config.sampling.predictor"),
        ({"data__dim": 3}, r"config.data.dim must be 2"),
        ({"training__batch_size": 0}, r"config.training.batch_size"),
        ({"training__n_iters": -1}, r"config.training.n_iters"),
        ({"training__batch_size": 100_001}, r"config.training.batch_size=100001 is more than the 100000 examples"),
        ({"sampling__method": "fast", "sampling__nfe": 3, "sampling__order": 3}, r"config.sampling.nfe is too small"),
        ({"training__mixed_precision": "fp16"}, r"config.training.mixed_precision='fp16' needs a CUDA device"),
        ({"sampling__fast_tuning": True}, r"fast_tuning=True tunes the options of method 'fast'"),
    ],
)
def test_config_errors_stop_before_any_step(fields, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(toy_config("vp", **fields), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def image_config(dataset: str, **fields):
    """The reference's NCSN CIFAR-10 config (an image network) on ``dataset``, on the CPU, with ``fields`` set."""
    config = load_config(ROOT / "configs" / "ve" / "ncsn" / "cifar10.py")
    config.data.dataset = dataset
    for path, value in fields.items():
        section, field = path.split("__")
        setattr(config[section], field, value)
    config.device = "cpu"
    return config


def test_image_errors_stop_before_any_step(tmp_path):
    """A resolution the network cannot take, a resolution the data does not have, and a missing data folder."""
    with pytest.raises(ConfigError, match=r"image_size must be a multiple of 2 and >= 4 for NCSN"):
        build_experiment(image_config("CIFAR10", data__image_size=5, data__root=str(tmp_path)), tmp_path, "train")
    with pytest.raises(ConfigError, match=r"config.data.image_size must be 8 for digits"):
        build_experiment(image_config("digits", data__num_channels=1), tmp_path, "train")
    missing = tmp_path / "no_cifar_here"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        train(image_config("CIFAR10", data__root=str(missing)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"mode must be one of train, eval, sample, got 'fit'"):
        build_experiment(toy_config("vp"), tmp_path, "fit")


def test_batch_must_split_over_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"batch_size=256 must be divisible by the number of processes WORLD_SIZE=3"):
        build_experiment(toy_config("vp"), tmp_path, "train")


# ------------------------------------------------------------------ 5. outputs
def test_outputs_log_tensorboard_samples(resumed_vp):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = resumed_vp["killed"]
    log = (workdir / "log.txt").read_text(encoding="utf-8")
    logged = {int(s): float(v) for s, v in re.findall(r"step (\d+)/1000  training_loss (\S+)", log)}
    assert set(range(100, N_ITERS + 1, 100)) <= set(logged)
    assert "eval_loss" in log and "finished training at step 1000" in log
    events = {}
    for event_file in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        events.update({e.step: e.value for e in accumulator.Scalars("training_loss")})
    assert events[N_ITERS] == pytest.approx(logged[N_ITERS], rel=1e-6)  # float32 in TensorBoard
    with Image.open(workdir / "samples" / f"iter_{N_ITERS}" / "sample.png") as png:
        png.load()
        assert png.size == (int(SCATTER_SIZE_INCHES * SCATTER_DPI),) * 2
    samples = np.load(workdir / "samples" / f"iter_{N_ITERS}" / "sample.npz")["samples"]
    assert samples.shape == (256, 2) and np.isfinite(samples).all()
    assert np.abs(np.linalg.norm(samples, axis=1).mean() - 4.0) < 0.2  # the ring of the 8 modes


def test_image_grid_layout(tmp_path):
    """5 one-channel 8x8 images: 2 per row (floor(sqrt(5))), 3 rows, 2-pixel padding; each image lands in its cell,
    quantized as floor(255 x + 0.5)."""
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    grid = image_grid(images)
    assert grid.shape == (3 * 10 + 2, 2 * 10 + 2, 1)
    expected = np.floor(images.numpy() * 255 + 0.5).astype(np.uint8)
    for index in range(5):
        row, col = divmod(index, 2)
        assert np.array_equal(grid[2 + 10 * row : 10 + 10 * row, 2 + 10 * col : 10 + 10 * col, 0], expected[index, 0])
    assert grid[:2].max() == 0 and grid[-12:, 12:].max() == 0  # padding and the empty sixth cell
    from PIL import Image

    with Image.open(save_image_grid(images, tmp_path / "grid.png")) as png:  # 8 px images are shown 4x larger
        assert png.size == (4 * 22, 4 * 32) and png.mode == "L"
        assert np.array_equal(np.asarray(png), grid[..., 0].repeat(4, axis=0).repeat(4, axis=1))


def test_image_run_writes_a_grid_of_its_samples(tmp_path):
    """A tiny NCSN on the 8x8 digits (4 steps, batch 8): the snapshot PNG is the 2 x 4 grid of the npz samples."""
    from PIL import Image

    config = image_config(
        "digits", data__image_size=8, data__num_channels=1, data__centered=False, model__nf=8,
        training__batch_size=8, training__n_iters=4, training__snapshot_freq=4, training__eval_freq=2,
        training__log_freq=2, sampling__n_steps_each=2,
    )
    train(config, tmp_path)
    folder = tmp_path / "samples" / "iter_4"
    samples = np.load(folder / "sample.npz")["samples"]
    assert samples.shape == (8, 8, 8, 1) and samples.dtype == np.uint8
    with Image.open(folder / "sample.png") as png:
        grid = np.asarray(png)[::4, ::4]  # the PNG shows 8 px images 4x larger, each pixel a 4x4 block
    assert grid.shape == (4 * 10 + 2, 2 * 10 + 2)  # floor(sqrt(8)) = 2 per row, 4 rows, 2-pixel padding
    for index in range(8):
        row, col = divmod(index, 2)
        assert np.array_equal(grid[2 + 10 * row : 10 + 10 * row, 2 + 10 * col : 10 + 10 * col], samples[index, ..., 0])


@pytest.mark.parametrize("native", [False, True])
def test_bf16_without_matrix_units_is_flagged_in_the_log(native, tmp_path, monkeypatch):
    """``training.mixed_precision='bf16'`` on a device without bf16 units (``native_bf16`` false: oneDNN has no bf16
    convolution there, ``benchmarks/precision.py``) trains, with a warning line in the log saying it is slower."""
    import jobs.run

    monkeypatch.setattr(jobs.run, "native_bf16", lambda device: native)
    train(toy_config("vp", training__mixed_precision="bf16", training__n_iters=2, training__snapshot_freq=2,
                     training__snapshot_freq_for_preemption=2, training__snapshot_sampling=False), tmp_path)
    log = (tmp_path / "log.txt").read_text()
    assert ("WARNING training.mixed_precision='bf16'" in log and "no bf16 matrix units" in log) is not native
