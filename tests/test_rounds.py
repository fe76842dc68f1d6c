"""Sampling rounds are never stale (:func:`jobs.evaluation.sampling_rounds`, ``--mode sample`` and ``--mode eval``).

A tiny toy run (VP, an MLP of width 16, 4 steps; ``N = 50`` noise levels, so the configured PC sampler without a
corrector makes 50 score evaluations per round) stands in for a trained one: what is checked holds for any network.

* A round whose record is the one asked for is kept: a re-run calls no sampler and leaves the files as they were.
* A round drawn with another sampler (``sampling.method``), from another checkpoint content (same path and step,
  other weights), for another round size, or with no record (a file from before records) is drawn again, and the
  log names the field that changed; back to the first settings, the same seeds give the first samples again.
* ``eval.num_samples`` below ``eval.batch_size`` draws exactly ``num_samples`` (the sampler is built for that
  shape), class-conditional ones with the first classes of a batch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import jobs.evaluation as evaluation
import jobs.experiment as experiment
from configs import load_config
from jobs.evaluation import evaluate, sample
from jobs.run import train
from train_lib import restore_checkpoint, save_checkpoint

from call_spies import count_built_calls

ROOT = Path(__file__).resolve().parents[1]
N_LEVELS = 50  # model.num_scales: N score evaluations of PC without a corrector (VP needs beta_max / N < 1)
TINY = {
    "training.n_iters": 4, "training.batch_size": 32, "training.snapshot_freq": 4, "training.log_freq": 2,
    "training.eval_freq": 2, "training.snapshot_freq_for_preemption": 4, "training.snapshot_sampling": False,
    "model.nf": 16, "model.num_scales": N_LEVELS, "data.num_test": 64, "eval.batch_size": 32, "eval.num_samples": 64,
    "eval.begin_ckpt": 1, "eval.end_ckpt": 1, "eval.enable_loss": False, "eval.enable_bpd": False,
}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_config(name: str = "toy_mlp_continuous", **extra):
    """The VP toy config ``name`` with :data:`TINY` and ``extra`` (``a__b=v`` sets ``a.b``)."""
    config = load_config(ROOT / "configs" / "vp" / f"{name}.py")
    for path, value in {**TINY, **{k.replace("__", "."): v for k, v in extra.items()}}.items():
        section, field = path.split(".")
        with config.unlocked():
            setattr(config[section], field, value)
    return config


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy")
    train(tiny_config(), workdir)
    return workdir


@pytest.fixture
def workdir(toy_run, tmp_path):
    """A private copy of the trained run."""
    copy = tmp_path / "run"
    shutil.copytree(toy_run, copy)
    return copy


@pytest.fixture
def sampler_calls(monkeypatch):
    """The shapes of the sampling functions the jobs build and call, in call order."""
    return count_built_calls(monkeypatch, [experiment, evaluation], "get_sampling_fn",
                             entry=lambda args, kwargs: tuple(args[2]))  # get_sampling_fn(config, sde, shape, ...)


def round_files(folder: Path) -> dict[str, tuple[np.ndarray, int]]:
    paths = sorted(folder.glob("samples_*.npz"))
    return {path.name: (np.load(path)["samples"], path.stat().st_mtime_ns) for path in paths}


def unchanged(before: dict[str, tuple[np.ndarray, int]], after: dict[str, tuple[np.ndarray, int]]) -> bool:
    """The same round files, with the same samples and modification times."""
    return before.keys() == after.keys() and all(
        np.array_equal(before[name][0], after[name][0]) and before[name][1] == after[name][1] for name in before
    )


def new_log(workdir: Path, start: int) -> str:
    return (workdir / "log.txt").read_text()[start:]


def log_size(workdir: Path) -> int:
    return len((workdir / "log.txt").read_text())


def test_matching_rounds_are_reused(workdir, sampler_calls):
    first = sample(tiny_config(), workdir)
    folder = workdir / "samples" / "step_4"
    files = round_files(folder)
    assert first["nfe_per_round"] == [N_LEVELS, N_LEVELS] and len(sampler_calls) == 2
    assert all(np.isfinite(array).all() for array, _ in files.values())
    start = log_size(workdir)
    second = sample(tiny_config(), workdir)
    assert len(sampler_calls) == 2 and unchanged(files, round_files(folder))
    assert second["nfe_per_round"] == first["nfe_per_round"]
    assert new_log(workdir, start).count("exists, skipped") == 2


def test_a_round_of_another_sampler_is_drawn_again(workdir):
    folder = workdir / "samples" / "step_4"
    assert sample(tiny_config(), workdir)["nfe_per_round"] == [N_LEVELS, N_LEVELS]
    pc = {name: array for name, (array, _) in round_files(folder).items()}
    start = log_size(workdir)
    fast = sample(tiny_config(sampling__method="fast", sampling__nfe=4), workdir)
    assert fast["nfe_per_round"] == [4, 4]  # not the PC rounds' 50
    stale = "is stale, it was drawn with other settings: sampling.method 'pc' -> 'fast'"
    assert new_log(workdir, start).count(stale) == 2
    assert all(not np.array_equal(array, pc[name]) for name, (array, _) in round_files(folder).items())
    assert sample(tiny_config(), workdir)["nfe_per_round"] == [N_LEVELS, N_LEVELS]
    assert all(np.array_equal(array, pc[name]) for name, (array, _) in round_files(folder).items())  # same seeds


def test_an_evaluation_round_of_another_sampler_is_drawn_again(workdir):
    assert evaluate(tiny_config(), workdir)[1]["samples"]["nfe_per_round"] == [N_LEVELS, N_LEVELS]
    start = log_size(workdir)
    nfes = evaluate(tiny_config(sampling__method="fast", sampling__nfe=4), workdir)[1]["samples"]["nfe_per_round"]
    assert nfes == [4, 4] and "sampling.method 'pc' -> 'fast'" in new_log(workdir, start)


def test_a_round_of_another_checkpoint_content_is_drawn_again(workdir):
    """The meta checkpoint is overwritten by other weights at the same step: same path, same step, other samples."""
    config = tiny_config()
    sample(config, workdir)
    folder = workdir / "samples" / "step_4"
    files = round_files(folder)
    exp = experiment.build_experiment(config, workdir, "train")  # a state with its optimizer, to save
    meta = exp.layout.meta_checkpoint
    restore_checkpoint(meta, exp.state)
    with torch.no_grad():
        for parameter in exp.ema.shadow_params:
            parameter.add_(0.5)
    save_checkpoint(meta, exp.state)
    start = log_size(workdir)
    sample(config, workdir)
    assert new_log(workdir, start).count("is stale, it was drawn with other settings: checkpoint_sha256 ") == 2
    assert all(not np.array_equal(array, files[name][0]) for name, (array, _) in round_files(folder).items())


def test_a_round_without_a_record_is_drawn_again(workdir):
    config = tiny_config()
    sample(config, workdir)
    path = workdir / "samples" / "step_4" / "samples_0.npz"
    with np.load(path) as old:
        kept = {name: old[name] for name in old.files if name != "record"}
    np.savez_compressed(path, **kept)  # as rounds were written before they had records
    start = log_size(workdir)
    sample(config, workdir)
    log = new_log(workdir, start)
    assert "samples_0.npz is stale, it has no (readable) record" in log and log.count("exists, skipped") == 1
    assert np.array_equal(np.load(path)["samples"], kept["samples"])  # the same seed draws the same round


def test_fewer_samples_than_a_round_draws_only_those(workdir, sampler_calls):
    report = sample(tiny_config(eval__num_samples=7), workdir)
    folder = workdir / "samples" / "step_4"
    assert report["count"] == 7 and report["rounds"] == 1 and sampler_calls == [(7, 2)]
    assert np.load(folder / "samples_0.npz")["samples"].shape == (7, 2)


def test_the_last_round_draws_what_is_left_and_grows_when_asked(workdir, sampler_calls):
    folder = workdir / "samples" / "step_4"
    report = sample(tiny_config(eval__num_samples=40), workdir)
    assert report["count"] == 40 and sampler_calls == [(32, 2), (8, 2)]
    assert [array.shape[0] for array, _ in round_files(folder).values()] == [32, 8]
    first = round_files(folder)["samples_0.npz"]
    start = log_size(workdir)
    report = sample(tiny_config(eval__num_samples=64), workdir)
    assert report["count"] == 64 and sampler_calls[2:] == [(32, 2)]  # round 0 kept, round 1 drawn in full
    assert round_files(folder)["samples_0.npz"][1] == first[1]
    assert "round_size 8 -> 32" in new_log(workdir, start)


def test_fewer_samples_than_before_leave_no_round_of_the_former_request(workdir, sampler_calls):
    """Asking for fewer rounds than the folder holds removes the rounds beyond them: the folder's files are the
    report's, and round 0 is kept."""
    folder = workdir / "samples" / "step_4"
    sample(tiny_config(eval__num_samples=64), workdir)
    first = round_files(folder)["samples_0.npz"]
    start = log_size(workdir)
    report = sample(tiny_config(eval__num_samples=20), workdir)
    assert report["count"] == 20 and report["files"] == ["samples_0.npz"]
    assert list(round_files(folder)) == ["samples_0.npz"] and sampler_calls[2:] == [(20, 2)]  # drawn again: 32 -> 20
    assert "removed 1 round(s) beyond the 1 of config.eval.num_samples=20 (samples_1.npz" in new_log(workdir, start)
    sample(tiny_config(eval__num_samples=64), workdir)
    assert np.array_equal(round_files(folder)["samples_0.npz"][0], first[0])  # the same seed: the same samples


def test_fewer_class_conditional_samples_than_a_round(tmp_path, sampler_calls):
    config = tiny_config("toy_mlp_cfg", eval__num_samples=5)
    train(config, tmp_path)
    report = sample(config, tmp_path)
    saved = np.load(tmp_path / "samples" / "step_4" / "samples_0.npz")
    assert report["count"] == 5 and sampler_calls == [(5, 2)]
    assert saved["samples"].shape == (5, 2) and saved["labels"].tolist() == [0, 1, 2, 3, 4]
