"""The ``eval`` and ``sample`` jobs (:mod:`jobs.evaluation`, ``main.py --mode eval|sample``).

* A toy run (VP, MLP, 300 steps on ``8gaussians``) is evaluated: the report holds the test loss over the whole
  test split, the exact log-likelihood in nats (checked against :func:`samplers.log_likelihood` called directly,
  and against Gibbs' inequality: the model's mean log-likelihood cannot exceed the true mean log-density by more
  than 4 standard errors of the paired difference), NFE, and the sample metrics.
* Resume: round files deleted as a pre-emption would leave them are redrawn (and only those: a spy counts the
  sampler calls, the other files keep their mtime), identical to the uninterrupted run's (seeds per round).
* A tiny digits run (DDPM++ of width 8, ``train_and_evaluate`` with ``eval.after_training``) gives bits/dim with
  17 levels equal to an independent computation: the same dequantization and probes, ``samplers.log_likelihood``
  and the change of variables ``bpd = -log p / (D ln 2) + log2(17) + log2(1/2)`` written out here.
* The toy metrics are checked on exact data: samples that are fresh data score within the null distribution of
  the sliced Wasserstein distance (mean + 4 sd over 16 draws) and within 4 standard errors of the data's mean
  log-density; shifted samples do not.
* Errors: no checkpoint, a corrupt checkpoint; ``main.py`` as a subprocess (sample mode, and eval mode without
  a checkpoint: exit status 1 and one line).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data_lib
import models
import jobs.evaluation as evaluation
import jobs.experiment as experiment
from configs import load_config
from sample_quality import sliced_wasserstein
from data_lib.dequantize import uniform_dequantize
from samplers import log_likelihood
from samplers.likelihood import grid_offsets, solver_error
from train_lib import CheckpointError, get_loss_fn, restore_checkpoint, step_fn_options
from jobs.evaluation import (
    MetricContext,
    evaluate,
    sample,
    sample_metrics,
    train_and_evaluate,
)
from jobs.experiment import build_experiment
from jobs.run import step_seed, train
from jobs.streams import Stream
from models.compiled import is_compiled

from call_spies import count_built_calls

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / "configs" / "vp" / "toy_mlp_continuous.py"
DIGITS_CONFIG = ROOT / "configs" / "vp" / "digits_ddpmpp_continuous.py"
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TOY = {
    "training.n_iters": 300, "training.batch_size": 256, "training.snapshot_freq": 300, "training.log_freq": 100,
    "training.eval_freq": 100, "training.snapshot_freq_for_preemption": 300, "training.snapshot_sampling": False,
    "model.nf": 64, "model.num_scales": 100, "optim.lr": 3e-3, "optim.warmup": 50, "data.num_test": 500,
    "eval.batch_size": 125, "eval.num_samples": 500, "eval.begin_ckpt": 1, "eval.end_ckpt": 1,
    "eval.likelihood_method": "dopri5", "eval.likelihood_rtol": 1e-4, "eval.likelihood_atol": 1e-4,
}
DIGITS = {
    "model.nf": 4, "model.ch_mult": (1,), "model.num_res_blocks": 1, "model.attn_resolutions": (), "training.n_iters": 10,
    "training.batch_size": 32, "training.snapshot_freq": 10, "training.log_freq": 5, "training.eval_freq": 5,
    "training.snapshot_freq_for_preemption": 10, "training.snapshot_sampling": False, "sampling.nfe": 6,
    "eval.batch_size": 100, "eval.num_samples": 100, "eval.bpd_num_repeats": 2, "eval.after_training": True,
    "eval.likelihood_method": "dopri5", "eval.likelihood_rtol": 1e-2, "eval.likelihood_atol": 1e-2,
    "eval.hutchinson_type": "Rademacher",
}


def make_config(path: Path, fields: dict, **extra):
    config = load_config(path)
    for name, value in {**fields, **{k.replace("__", "."): v for k, v in extra.items()}}.items():
        section, field = name.split(".")
        with config.unlocked():
            setattr(config[section], field, value)
    return config


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A trained toy workdir and its evaluation (loss, exact log-likelihood, 4 rounds of 125 samples)."""
    torch.set_num_threads(1)
    workdir = tmp_path_factory.mktemp("toy")
    config = make_config(TOY_CONFIG, TOY)
    train(config, workdir)
    reports = evaluate(config, workdir)
    return config, workdir, reports


def ema_experiment(config, workdir, checkpoint: Path):
    exp = build_experiment(config, workdir, "eval")
    restore_checkpoint(checkpoint, exp.state)
    exp.ema.copy_to(exp.model.parameters())
    return exp


# ------------------------------------------------------------------ the toy evaluation
def test_toy_report(toy_run):
    config, workdir, reports = toy_run
    folder = workdir / "eval" / "ckpt_1"
    report = json.loads((folder / "report.json").read_text())
    assert report == json.loads(json.dumps(reports[1]))  # the returned report is what was written
    assert report["step"] == 300 and report["loss"]["count"] == 500 and math.isfinite(report["loss"]["mean"])
    likelihood = report["likelihood"]
    assert likelihood["unit"] == "nats" and likelihood["divergence"] == "exact" and likelihood["count"] == 500
    assert likelihood["nfe"] > 0
    samples = report["samples"]
    assert samples["count"] == 500 and samples["rounds"] == 4 and samples["nfe_per_round"] == [100] * 4
    assert set(samples["metrics"]) == {
        "sliced_wasserstein", "sliced_wasserstein_data_to_data", "sample_log_density", "sample_zero_density_fraction",
        "data_log_density",
    }
    assert (folder / "samples.png").stat().st_size > 0
    log = (workdir / "log.txt").read_text()
    assert "ckpt 1 (step 300): test log-likelihood (nats per example)" in log and "sliced_wasserstein" in log


def test_the_likelihood_of_the_train_split_with_bpd_dataset_train(toy_run, tmp_path):
    """``eval.bpd_dataset='train'`` measures the train split: its examples, named in the report and the log."""
    config, workdir, reports = toy_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    train_config = make_config(TOY_CONFIG, TOY, data__num_train=250, eval__bpd_dataset="train",
                               eval__enable_sampling=False, eval__enable_loss=False)
    likelihood = evaluate(train_config, copy, "eval_train")[1]["likelihood"]
    assert likelihood["split"] == "train" and likelihood["count"] == 250
    assert reports[1]["likelihood"]["split"] == "test" and reports[1]["likelihood"]["count"] == 500
    assert likelihood["mean"] != reports[1]["likelihood"]["mean"]
    assert "ckpt 1 (step 300): train log-likelihood (nats per example)" in (copy / "log.txt").read_text()


def test_toy_loss_is_the_mean_over_the_test_split(toy_run):
    """The loss equals the eval step function applied to the test batches with the documented seeds."""
    config, workdir, reports = toy_run
    exp = build_experiment(config, workdir, "eval")
    restore_checkpoint(workdir / "checkpoints" / "checkpoint_1.pth", exp.state)
    test = exp.test_ds.gather(torch.arange(len(exp.test_ds)))
    total = 0.0
    for index, batch in enumerate(test.split(125)):
        generator = torch.Generator().manual_seed(step_seed(config, Stream.TEST_LOSS, 1, 0, index))
        total += float(exp.eval_step_fn(exp.state, batch.float(), generator)) * len(batch)
    assert reports[1]["loss"]["mean"] == pytest.approx(total / len(test), rel=1e-6)


def test_toy_log_likelihood_matches_a_direct_computation_and_gibbs(toy_run):
    config, workdir, reports = toy_run
    exp = ema_experiment(config, workdir, workdir / "checkpoints" / "checkpoint_1.pth")
    test = exp.test_ds.gather(torch.arange(len(exp.test_ds))).float()
    score_fn = exp.score_model.in_precision("no").score_fn()  # the likelihood runs in full precision
    logp = torch.cat([
        log_likelihood(exp.sde, score_fn, batch, divergence="exact", rtol=1e-4, atol=1e-4, eps=1e-5, method="dopri5")[0]
        for batch in test.split(125)
    ]).double()
    report = reports[1]["likelihood"]
    assert report["mean"] == pytest.approx(float(logp.mean()), rel=1e-6, abs=1e-6)
    assert report["stderr"] == pytest.approx(float(logp.std() / math.sqrt(len(logp))), rel=1e-6)
    true = data_lib.toy_log_prob("8gaussians")(test.double())
    assert report["true_log_density_mean"] == pytest.approx(float(true.mean()), rel=1e-9)
    # Gibbs: E_p[log q] <= E_p[log p]; the paired difference's standard error bounds the sampling noise
    difference = logp - true
    assert float(difference.mean()) <= 4 * float(difference.std()) / math.sqrt(len(difference))
    # and the model has learnt more than the moment-matched Gaussian (mean log-density -log(2 pi e var) ~ -4.9)
    gaussian = -math.log(2 * math.pi * math.e) - 0.5 * float(torch.log(test.double().var(0)).sum())
    assert report["mean"] > gaussian + 1.0


def test_the_likelihood_runs_a_compiled_network_uncompiled(toy_run):
    """``model.compile`` is for training and sampling: the likelihood's solver drops finished examples, and every
    new batch shape would compile again. The network is called eagerly there, and is compiled again after it."""
    config, workdir, _ = toy_run
    config = make_config(TOY_CONFIG, TOY, eval__likelihood_method="rk4", eval__likelihood_steps=2,
                         model__compile="default")
    exp = ema_experiment(config, workdir, workdir / "checkpoints" / "checkpoint_1.pth")
    assert is_compiled(exp.model)
    traced, forward = [], exp.model.forward

    def spy(*args, **kwargs):
        traced.append(torch.compiler.is_compiling())
        return forward(*args, **kwargs)

    exp.model.forward = spy
    evaluation.test_likelihood(exp, 1)
    assert traced and not any(traced)
    assert is_compiled(exp.model)


def test_fixed_grid_likelihood_and_its_error_check(toy_run):
    """``eval.likelihood_method='rk4'``: the reported mean is that of ``samplers.log_likelihood`` with the same per-batch
    generator (probes, then each sample's grid offset), and the error check compares the first test examples' reported
    values with a solve on the same grids at twice the steps, the only solve it makes."""
    config, workdir, _ = toy_run
    config = make_config(TOY_CONFIG, TOY, eval__likelihood_method="rk4", eval__likelihood_steps=8)
    exp = ema_experiment(config, workdir, workdir / "checkpoints" / "checkpoint_1.pth")
    report = evaluation.test_likelihood(exp, 1)
    assert report["method"] == "rk4" and report["steps"] == 8 and report["solver_error_samples"] == 4
    score_fn = exp.score_model.in_precision("no").score_fn()
    values, first = [], None
    for index, batch in enumerate(evaluation._test_batches(exp, dequantize=False)):
        generator = torch.Generator().manual_seed(step_seed(config, Stream.LIKELIHOOD, 1, 0, index))
        values.append(log_likelihood(exp.sde, score_fn, exp.scaler(batch), divergence="exact", method="rk4", steps=8,
                                     eps=1e-5, generator=generator)[0].double())
        first = exp.scaler(batch) if index == 0 else first
    logp = torch.cat(values)
    assert report["mean"] == pytest.approx(float(logp.mean()), rel=1e-6, abs=1e-6)
    assert report["nfe"] == 4 * 9 * len(values) + report["solver_error_nfe"]
    assert report["solver_error_nfe"] == 4 * (2 * 8 + 1)  # the finer solve; the coarse values are the pass's
    offsets = grid_offsets(first, torch.Generator().manual_seed(step_seed(config, Stream.LIKELIHOOD, 1, 0, 0)))[:4]
    coarse = log_likelihood(exp.sde, score_fn, first[:4], divergence="exact", method="rk4", steps=8, eps=1e-5, grid_offset=offsets)[0]
    torch.testing.assert_close(coarse.double(), values[0][:4], rtol=0, atol=1e-5)  # the reported values themselves
    estimate = solver_error(exp.sde, score_fn, first[:4], divergence="exact", method="rk4", steps=8, eps=1e-5, grid_offset=offsets)
    assert report["solver_error"] == pytest.approx(estimate.error, rel=1e-6)


def test_sampling_rounds_resume_without_recomputing(toy_run, monkeypatch):
    """Deleting rounds 1 and 3 (as a kill before they were written would leave them) and re-running redraws
    exactly those two, identical to the uninterrupted run's; the others are not touched."""
    config, workdir, _ = toy_run
    resumed = workdir.parent / "toy_resumed"
    shutil.copytree(workdir, resumed)
    folder = resumed / "eval" / "ckpt_1"
    original = {r: np.load(folder / f"samples_{r}.npz")["samples"] for r in range(4)}
    for r in (1, 3):
        (folder / f"samples_{r}.npz").unlink()
    (folder / ".samples_1.npz.killed.tmp").write_bytes(b"partial")  # what a killed writer leaves: ignored
    kept = {r: (folder / f"samples_{r}.npz").stat().st_mtime_ns for r in (0, 2)}
    calls = count_built_calls(monkeypatch, [experiment], "get_sampling_fn")
    report = evaluate(make_config(TOY_CONFIG, TOY, eval__enable_loss=False, eval__enable_bpd=False), resumed)[1]
    assert len(calls) == 2
    assert {r: (folder / f"samples_{r}.npz").stat().st_mtime_ns for r in (0, 2)} == kept
    for r in range(4):
        assert np.array_equal(np.load(folder / f"samples_{r}.npz")["samples"], original[r])
    assert report["samples"]["metrics"] == toy_run[2][1]["samples"]["metrics"]


# ------------------------------------------------------------------ digits: bits/dim with 17 levels
def test_digits_bits_per_dim_matches_an_independent_computation(tmp_path):
    config = make_config(DIGITS_CONFIG, DIGITS)
    calls = []
    with pytest.MonkeyPatch.context() as patch:  # the extension point: a metric for the digits
        patch.setitem(evaluation._SAMPLE_METRICS, "digits", [lambda x, ctx: calls.append(x.shape) or {"ink": float(x.mean())}])
        train_and_evaluate(config, tmp_path)
    folder = tmp_path / "eval" / "ckpt_1"
    report = json.loads((folder / "report.json").read_text())
    assert calls == [(100, 1, 8, 8)] and 0 < report["samples"]["metrics"]["ink"] < 1
    likelihood = report["likelihood"]
    assert likelihood["unit"] == "bits/dim" and likelihood["n_bins"] == 17 and likelihood["count"] == 297
    assert likelihood["num_repeats"] == 2 and likelihood["nfe"] > likelihood["solver_error_nfe"] > 0
    assert likelihood["solver_error"] > 0 and likelihood["solver_error_samples"] == 4 and likelihood["rtol"] == 1e-2

    exp = ema_experiment(config, tmp_path, tmp_path / "checkpoints" / "checkpoint_1.pth")
    score_fn = exp.score_model.in_precision("no").score_fn()  # the likelihood runs in full precision
    levels = data_lib.digits("test").gather(torch.arange(297)).float() / 16.0  # k / 16, k = 0..16
    per_example = []
    for index, x in enumerate(levels.split(100)):
        generator = torch.Generator().manual_seed(step_seed(config, Stream.LIKELIHOOD, 1, 0, index))
        repeats = []
        for _ in range(2):
            y = 2.0 * uniform_dequantize(x, 17, generator) - 1.0  # dequantize, then the centred scaler
            logp = log_likelihood(exp.sde, score_fn, y, divergence="rademacher", rtol=1e-2, atol=1e-2, eps=1e-5,
                                  method="dopri5", generator=generator)[0]
            repeats.append(-logp.double() / (64 * math.log(2)) + math.log2(17) + math.log2(0.5))
        per_example.append(torch.stack(repeats).mean(0))
    bpd = torch.cat(per_example)
    assert likelihood["mean"] == pytest.approx(float(bpd.mean()), rel=1e-5)
    assert likelihood["stderr"] == pytest.approx(float(bpd.std() / math.sqrt(297)), rel=1e-4)

    samples = np.load(folder / "samples_0.npz")["samples"]
    assert samples.shape == (100, 8, 8, 1) and samples.dtype == np.uint8
    from PIL import Image

    with Image.open(folder / "samples.png") as png:
        assert png.size == (4 * (10 * 10 + 2), 4 * (10 * 10 + 2))  # 8 px digits are shown 4x larger


def test_sample_mode_writes_npz_and_picture(toy_run):
    config, workdir, _ = toy_run
    report = sample(make_config(TOY_CONFIG, TOY, eval__num_samples=300), workdir)
    folder = workdir / "samples" / "step_300"
    assert report["count"] == 300 and report["rounds"] == 3 and report["png"] == str(folder / "samples.png")
    assert report["checkpoint"] == str(workdir / "checkpoints-meta" / "checkpoint.pth")  # the latest state
    points = np.concatenate([np.load(folder / f"samples_{r}.npz")["samples"] for r in range(3)])
    assert points.shape == (300, 2) and np.isfinite(points).all()  # the last round draws only the 50 left
    from PIL import Image

    with Image.open(folder / "samples.png") as png:
        assert png.size == (500, 500)


# ------------------------------------------------------------------ the toy metrics on exact data
def _context(config) -> MetricContext:
    exp = build_experiment(config, "unused", "sample")
    return MetricContext(exp, torch.Generator().manual_seed(0))


def test_toy_metrics_on_exact_samples():
    """The toy metrics that ``--mode eval`` reports, on samples that are exact data: the sliced Wasserstein
    distance lies below the null distribution's mean + 4 sd (16 draws of the distance between two fresh sets),
    and the mean log-density within 4 standard errors of that of fresh data; shifted or spread samples fail both."""
    config = make_config(TOY_CONFIG, TOY)
    n = 1000
    null = torch.tensor([
        float(sliced_wasserstein(data_lib.sample_toy("8gaussians", n, torch.Generator().manual_seed(2 * i)),
                                 data_lib.sample_toy("8gaussians", n, torch.Generator().manual_seed(2 * i + 1)),
                                 generator=torch.Generator().manual_seed(i)))
        for i in range(16)
    ])
    bound = float(null.mean() + 4 * null.std())
    exact = data_lib.sample_toy("8gaussians", n, torch.Generator().manual_seed(99))
    metrics = sample_metrics(exact, _context(config))
    assert metrics["sliced_wasserstein"] < bound and metrics["sliced_wasserstein_data_to_data"] < bound
    assert sample_metrics(exact + 2.0, _context(config))["sliced_wasserstein"] > 2 * bound
    values = data_lib.toy_log_prob("8gaussians")(exact.double())
    tolerance = 4 * math.sqrt(2) * float(values.std()) / math.sqrt(n)  # two independent means of n values
    assert abs(metrics["sample_log_density"] - metrics["data_log_density"]) < tolerance
    assert metrics["sample_zero_density_fraction"] == 0.0
    assert metrics["data_log_density"] - sample_metrics(exact * 1.5, _context(config))["sample_log_density"] > 10 * tolerance


def test_zero_density_samples_are_counted():
    """Checkerboard: three points in black squares (i + j even, density 1/32) and one outside the support."""
    config = make_config(TOY_CONFIG, TOY, data__dataset="checkerboard")
    points = torch.tensor([[-3.0, -3.0], [-1.0, -1.0], [3.0, 3.0], [-3.0, -1.0]])
    result = sample_metrics(points, _context(config))
    assert result["sample_zero_density_fraction"] == 0.25
    assert result["sample_log_density"] == pytest.approx(-math.log(32.0), rel=1e-12)


# ------------------------------------------------------------------ errors
def test_missing_and_corrupt_checkpoints(toy_run, tmp_path):
    config = toy_run[0]
    with pytest.raises(CheckpointError, match="no checkpoint to evaluate.*holds checkpoints none"):
        evaluate(config, tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        sample(config, tmp_path / "empty")
    with pytest.raises(CheckpointError, match=r"config.eval.ckpt=7: .*checkpoint_7.pth does not exist"):
        sample(make_config(TOY_CONFIG, TOY, eval__ckpt=7), toy_run[1])
    with pytest.raises(CheckpointError, match=r"begin_ckpt..end_ckpt = 5..6.*holds checkpoints 1"):
        evaluate(make_config(TOY_CONFIG, TOY, eval__begin_ckpt=5, eval__end_ckpt=6), toy_run[1])
    corrupt = tmp_path / "corrupt"
    (corrupt / "checkpoints").mkdir(parents=True)
    (corrupt / "checkpoints" / "checkpoint_1.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint_1.pth cannot be read"):
        evaluate(config, corrupt)


def _command(mode: str, workdir: Path, **fields) -> list[str]:
    """``main.py`` with the fields of :data:`TOY` that the toy config file has (the command line cannot add fields)."""
    config = load_config(TOY_CONFIG)
    known = {k: v for k, v in {**TOY, **fields}.items() if k.split(".")[1] in config[k.split(".")[0]]}
    flags = [f"--config.{k}={v}" for k, v in known.items()]
    return [sys.executable, str(ROOT / "main.py"), f"--config={TOY_CONFIG}", f"--workdir={workdir}", f"--mode={mode}", *flags]


def test_main_sample_and_eval_modes(toy_run, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(toy_run[1], workdir)
    done = subprocess.run(_command("sample", workdir, **{"eval.num_samples": 125}), env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "samples" / "step_300" / "samples.png").exists() and "picture" in done.stdout
    failed = subprocess.run(_command("eval", tmp_path / "empty"), env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0 and failed.stderr.startswith("main.py: error: no checkpoint to evaluate")


def test_two_process_evaluation_equals_one_process(toy_run, tmp_path):
    """``torchrun --nproc_per_node=2 main.py --mode eval`` (gloo): rank ``r % 2`` draws round ``r``, so the round files
    equal the single process's bit for bit; the exact log-likelihood (per-example adaptive steps) is all-reduced over
    the two shards to the same mean (to the solver's tolerance); the loss covers the same 500 examples with other
    noise draws (seeded per rank and batch), so it agrees to Monte-Carlo error only (measured: 10% apart, 0.7
    standard errors of the difference; bound 4)."""
    import socket

    config_file = tmp_path / "toy_eval.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_evaluation import TOY, TOY_CONFIG, make_config\n\n\n"
        "def get_config():\n    return make_config(TOY_CONFIG, TOY)\n"
    )
    workdir = tmp_path / "ddp"
    shutil.copytree(toy_run[1] / "checkpoints", workdir / "checkpoints")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in CHILD_ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", str(ROOT / "main.py"), f"--config={config_file}", f"--workdir={workdir}", "--mode=eval"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    single, double = toy_run[2][1], json.loads((workdir / "eval" / "ckpt_1" / "report.json").read_text())
    for r in range(4):
        one = np.load(toy_run[1] / "eval" / "ckpt_1" / f"samples_{r}.npz")["samples"]
        assert np.array_equal(np.load(workdir / "eval" / "ckpt_1" / f"samples_{r}.npz")["samples"], one)
    assert double["samples"]["metrics"] == single["samples"]["metrics"]
    assert double["likelihood"]["count"] == 500
    # other batch compositions change the solver's steps slightly: the per-example values agree to about the ODE
    # tolerance 1e-4 (measured: means 1e-5 apart relative, standard errors 4e-4), bounded by 10 tolerances
    assert double["likelihood"]["mean"] == pytest.approx(single["likelihood"]["mean"], abs=1e-3)
    assert double["likelihood"]["stderr"] == pytest.approx(single["likelihood"]["stderr"], rel=1e-2)
    assert double["loss"]["count"] == 500
    # two independent Monte-Carlo estimates of the same mean over 500 examples: 4 standard errors of their
    # difference, from the spread of the per-example losses (one draw each) of the same EMA model
    exp = ema_experiment(toy_run[0], toy_run[1], toy_run[1] / "checkpoints" / "checkpoint_1.pth")
    options = {k: v for k, v in step_fn_options(exp.config, exp.sde).items() if k != "mixed_precision"}
    loss_fn = get_loss_fn(exp.sde, False, **options)
    with torch.no_grad():
        losses = loss_fn(exp.model, exp.test_ds.gather(torch.arange(500)).float(), torch.Generator().manual_seed(5), per_example=True)
    tolerance = 4 * float(losses.std()) * math.sqrt(2 / 500)
    assert abs(double["loss"]["mean"] - single["loss"]["mean"]) < tolerance
