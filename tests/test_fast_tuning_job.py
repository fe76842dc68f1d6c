"""``config.sampling.fast_tuning`` in the ``sample`` and ``eval`` jobs (:mod:`jobs.fast_tuning`).

The tiny toy run of ``tests/test_rounds.py`` (4 training steps) stands in for a trained network: what is checked
holds for any network.

* The rounds are drawn with the options :func:`samplers.tune_fast_sample` chooses for the checkpoint's EMA weights
  from the job's pilot samples (the same choice as a direct call with the same seed), and the round records and
  the report name them.
* The choice is cached in ``workdir/fast_tuning``: a second job tunes nothing and keeps the rounds; a record that
  cannot be read, or was made for other settings, is tuned again and replaced, never reused.
* Conflicting or bad fields are refused before any work, naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import jobs.fast_tuning as fast_tuning
from jobs.evaluation import evaluate, sample
from jobs.experiment import ConfigError, build_experiment
from jobs.run import step_seed
from jobs.streams import Stream
import samplers.from_config
from samplers import tune_fast_sample
from samplers.fast_tuning import FastSolverChoice, default_most_pilot_points, default_pilot_points
from train_lib import restore_checkpoint

from call_spies import count_built_calls
from test_rounds import tiny_config, toy_run, workdir  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NFE = 6
POINTS = 16
TUNED = dict(sampling__method="fast", sampling__nfe=NFE, sampling__fast_tuning=True, sampling__fast_tuning_points=POINTS)


@pytest.fixture
def tunings(monkeypatch):
    """The tuning functions the jobs call, counted."""
    return count_built_calls(monkeypatch, [fast_tuning], "get_fast_tuning_fn")


def records(workdir: Path) -> list[Path]:
    return sorted((workdir / "fast_tuning").glob("*.json"))


def round_record(workdir: Path, r: int) -> dict:
    with np.load(workdir / "samples" / "step_4" / f"samples_{r}.npz") as file:
        return json.loads(str(file["record"]))


def test_rounds_use_the_choice_of_a_direct_tuning(workdir, tunings):
    report = sample(tiny_config(**TUNED), workdir)
    assert len(tunings) == 1 and len(records(workdir)) == 1
    stored = json.loads(records(workdir)[0].read_text())
    choice = FastSolverChoice.from_json(json.dumps(stored["choice"]))
    assert report["fast_tuning"]["options"] == choice.options.label() and report["fast_tuning"]["lead"] == choice.lead
    assert report["nfe_per_round"] == [NFE, NFE]
    for r in (0, 1):
        assert round_record(workdir, r)["fast_options"] == choice.options.kwargs()

    # the same choice from samplers.tune_fast_sample on the checkpoint's EMA weights and the job's pilot seed
    config = tiny_config(**TUNED)
    exp = build_experiment(config, workdir, "sample")
    restore_checkpoint(workdir / "checkpoints" / "checkpoint_1.pth", exp.state, map_location=exp.device)
    exp.ema.copy_to(exp.model.parameters())
    generator = torch.Generator().manual_seed(step_seed(config, Stream.FAST_TUNING, 4))
    with torch.no_grad():
        # the toy config's noise_removal spends one of the NFE evaluations after the ODE
        direct = tune_fast_sample(exp.sde, exp.score_model.score_fn(), (POINTS, *exp.data_shape), NFE - 1,
                                  eps=exp.sampling_eps, generator=generator, device=exp.device)
    assert direct == choice and choice.nfe == NFE - 1


def test_a_second_job_reads_the_cached_choice(workdir, tunings):
    first = sample(tiny_config(**TUNED), workdir)
    files = {r: round_record(workdir, r) for r in (0, 1)}
    second = sample(tiny_config(**TUNED), workdir)
    assert len(tunings) == 1  # not tuned again
    assert second["fast_tuning"] == first["fast_tuning"]
    assert {r: round_record(workdir, r) for r in (0, 1)} == files
    assert "exists, skipped" in (workdir / "log.txt").read_text()


def test_an_unreadable_record_is_tuned_again(workdir, tunings):
    sample(tiny_config(**TUNED), workdir)
    (path,) = records(workdir)
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # a torn file
    sample(tiny_config(**TUNED), workdir)
    assert len(tunings) == 2 and path.read_text() == good  # the same pilot: the same record again
    stored = json.loads(good)
    stored["source"]["step"] = 99  # a record made for another checkpoint, under this name
    path.write_text(json.dumps(stored))
    sample(tiny_config(**TUNED), workdir)
    assert len(tunings) == 3 and path.read_text() == good


def test_other_settings_are_tuned_separately(workdir, tunings):
    sample(tiny_config(**TUNED), workdir)
    sample(tiny_config(**{**TUNED, "sampling__nfe": NFE + 2}), workdir)
    assert len(tunings) == 2 and len(records(workdir)) == 2
    assert round_record(workdir, 0)["sampling"]["nfe"] == NFE + 2


def test_evaluation_rounds_use_the_choice(workdir, tunings):
    report = evaluate(tiny_config(**TUNED), workdir)[1]
    assert len(tunings) == 1 and report["samples"]["fast_tuning"]["pilot_points"] == POINTS
    with np.load(workdir / "eval" / "ckpt_1" / "samples_0.npz") as file:
        assert json.loads(str(file["record"]))["fast_options"]["order"] in (1, 2, 3)


def test_unset_pilot_size_follows_the_data_dimension(workdir, tunings, monkeypatch):
    """Unset, every candidate is solved on the rule's first points and the finalists on at least 1024; the job and
    the tuning take both sizes from the rule (spied, with small sizes)."""
    assert [default_pilot_points(shape) for shape in [(2,), (3,), (1, 8, 8), (3, 32, 32)]] == [2048, 1366, 64, 64]
    assert [default_most_pilot_points(shape) for shape in [(1,), (2,), (3,), (1, 8, 8)]] == [4096, 2048, 1366, 1024]
    asked, calls = [], []

    def small_pilot(shape):
        asked.append(tuple(shape))
        return 8

    def spied_tuning(sde, score_fn, shape, nfe, **kwargs):
        calls.append((tuple(shape), kwargs["first_points"]))
        return tune_fast_sample(sde, score_fn, shape, nfe, **kwargs)

    monkeypatch.setattr(samplers.from_config, "default_pilot_points", small_pilot)
    monkeypatch.setattr(samplers.from_config, "default_most_pilot_points", lambda shape: 4 * small_pilot(shape))
    monkeypatch.setattr(samplers.from_config, "tune_fast_sample", spied_tuning)
    report = evaluate(tiny_config(**{**TUNED, "sampling__fast_tuning_points": None}), workdir)[1]
    assert calls == [((32, 2), 8)] and set(asked) == {(2,)}
    assert report["samples"]["fast_tuning"]["pilot_points"] == 32


def test_pilot_sizes_from_the_config():
    """``(first, most)``: a set ``fast_tuning_points`` is solved at once; unset, every candidate on the rule's size
    and the finalists on at least 1024."""
    sizes = samplers.from_config.fast_tuning_points
    assert sizes(tiny_config(**TUNED), (2,)) == (POINTS, POINTS)
    unset = tiny_config(**{**TUNED, "sampling__fast_tuning_points": None})
    assert sizes(unset, (2,)) == (2048, 2048) and sizes(unset, (1, 8, 8)) == (64, 1024)


@pytest.mark.parametrize("extra, match", [
    (dict(sampling__order=2), r"config.sampling.fast_tuning=True chooses fast_sample's order and schedule, but config.sampling.order=2 is set"),
    (dict(sampling__schedule="logSNR"), r"config.sampling.schedule='logSNR' is set"),
    (dict(sampling__fast_tuning_points=1), r"config.sampling.fast_tuning_points must be an integer >= 2"),
    (dict(sampling__fast_tuning_evidence=-1.0), r"config.sampling.fast_tuning_evidence must be a finite number >= 0"),
])
def test_bad_fields_are_refused_before_any_work(workdir, tunings, extra, match):
    with pytest.raises(ConfigError, match=match):
        sample(tiny_config(**{**TUNED, **extra}), workdir)
    assert not tunings and not (workdir / "samples").exists() and not (workdir / "fast_tuning").exists()
