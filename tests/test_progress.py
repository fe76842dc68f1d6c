"""Progress lines (:mod:`jobs.progress`) and when the training loop reads its losses.

* :class:`ProgressLog` on a fake clock: the first line after ``first_after`` seconds, then one per ``every``
  seconds, a :meth:`ProgressLog.speed` reading restarting the interval; the rate over the interval and the ETA.
* The training job, its steps taking one second each on a fake clock, output not a terminal: progress lines after
  5 s and every 20 s, the loss lines of ``log_freq`` with the same speed and ETA, none of it on a terminal.
* The losses are read (one device wait) only at steps that log, evaluate or save; a NaN found there still names
  the first step whose loss was not finite and leaves the last good meta checkpoint.
* An evaluation's test log-likelihood logs progress by batch.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import pytest
import torch

import jobs.evaluation
import jobs.run
from configs import load_config
from jobs.evaluation import evaluate
from jobs.progress import ProgressLog, format_duration
from jobs.run import TrainingDivergedError, train

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def progress_log(total: int | None, **options) -> tuple[ProgressLog, FakeClock, list[str]]:
    clock, handler = FakeClock(), ListHandler()
    logger = logging.getLogger(f"test_progress.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return ProgressLog(logger, total, clock=clock, **options), clock, handler.lines


# ------------------------------------------------------------------ ProgressLog on a fake clock
def test_first_line_after_first_after_then_every_interval():
    progress, clock, lines = progress_log(100, first_after=5.0, every=20.0)
    clock.now += 4.9
    assert not progress.tick(4)
    clock.now += 0.1
    assert progress.tick(10)  # 10 steps in 5 s
    assert lines == ["step 10/100  2.00 steps/s  ETA 45s"]
    clock.now += 19.9
    assert not progress.tick(30)
    clock.now += 0.1
    assert progress.tick(50)  # 40 steps in the 20 s since the last line
    assert lines[-1] == "step 50/100  2.00 steps/s  ETA 25s"


def test_speed_reading_restarts_the_interval():
    """A loop's own periodic line (the loss every log_freq steps) carries the speed; the next progress line is
    ``every`` seconds after it, and measures from it."""
    progress, clock, lines = progress_log(1000, first_after=5.0, every=20.0)
    clock.now += 10.0
    assert progress.speed(40) == "4.00 steps/s  ETA 4m00s"
    clock.now += 15.0
    assert not progress.tick(100)  # 15 s after the reading: not due, though 25 s since the start
    clock.now += 5.0
    assert progress.tick(120)
    assert lines == ["step 120/1000  4.00 steps/s  ETA 3m40s"]


def test_unknown_total_labels_and_disabled():
    progress, clock, lines = progress_log(None, label="likelihood batch", unit="batches", first_after=1.0)
    clock.now += 4.0
    assert progress.tick(2)
    assert lines == ["likelihood batch 2  0.50 batches/s"]
    quiet, clock, lines = progress_log(10, enabled=False)
    clock.now += 100.0
    assert not quiet.tick(5) and lines == []
    assert quiet.speed(5) == "0.05 steps/s  ETA 1m40s"  # the speed is still read


def test_no_progress_since_the_last_line_gives_an_unknown_eta():
    progress, clock, lines = progress_log(10, first_after=1.0)
    clock.now += 2.0
    assert progress.speed(0) == "0 steps/s  ETA unknown"
    clock.now += 1000.0
    assert progress.speed(3) == "0.003 steps/s  ETA 38m53s"  # slow rates keep two significant digits


def test_no_line_without_units_done_since_the_last_one():
    """Work of the loop at the same count (samples drawn after a step's loss line) gives no rate: no line; the
    next unit's line measures from the reading."""
    progress, clock, lines = progress_log(100, first_after=1.0, every=20.0)
    clock.now += 10.0
    assert progress.speed(50) == "5.00 steps/s  ETA 10s"
    clock.now += 30.0
    assert not progress.tick(50) and lines == []
    assert progress.tick(51)
    assert lines == ["step 51/100  0.033 steps/s  ETA 24m30s"]


def test_restart_measures_from_now():
    """After one-off work (a compilation in the first step) the next line comes ``first_after`` seconds later, with
    the rate since then."""
    progress, clock, lines = progress_log(100, first_after=5.0, every=20.0)
    clock.now += 90.0
    progress.restart(1)
    clock.now += 4.0
    assert not progress.tick(9)
    clock.now += 1.0
    assert progress.tick(11)
    assert lines == ["step 11/100  2.00 steps/s  ETA 44s"]


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59.4, "59s"), (59.6, "1m00s"), (612, "10m12s"),
                                           (3599, "59m59s"), (3600, "1h00m"), (7500, "2h05m"),
                                           (float("inf"), "unknown")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("name, value", [("every", 0.0), ("first_after", -1.0), ("every", float("nan"))])
def test_intervals_must_be_positive(name, value):
    with pytest.raises(ValueError, match=name):
        progress_log(10, **{name: value})


# ------------------------------------------------------------------ the training job
def toy_config(**fields):
    """The VP toy config, small (MLP of width 16, batch 32), with ``fields`` of config.training set."""
    config = load_config(ROOT / "configs" / "vp" / "toy_mlp_continuous.py")
    config.training.batch_size = 32
    config.training.snapshot_sampling = False
    config.model.nf = 16
    config.eval.batch_size = 32
    for name, value in fields.items():
        setattr(config.training, name, value)
    return config


@pytest.fixture
def slow_steps(monkeypatch):
    """Every training step takes one second of a fake clock, which the job's progress log reads."""
    clock = FakeClock()
    build = jobs.run.build_experiment

    def build_with_slow_steps(*args, **kwargs):
        exp = build(*args, **kwargs)
        step_fn = exp.train_step_fn

        def one_second_step(*step_args):
            clock.now += 1.0
            return step_fn(*step_args)

        exp.train_step_fn = one_second_step
        return exp

    monkeypatch.setattr(jobs.run, "build_experiment", build_with_slow_steps)
    monkeypatch.setattr(jobs.run, "ProgressLog", functools.partial(ProgressLog, clock=clock))
    return clock


EVERYTHING_ELSE_AT_60 = {"eval_freq": 60, "snapshot_freq": 60, "snapshot_freq_for_preemption": 60}


def logged_messages(workdir: Path) -> list[str]:
    return [line.split(" INFO ", 1)[1] for line in (workdir / "log.txt").read_text().splitlines() if " INFO " in line]


def test_training_logs_progress_from_the_first_seconds(slow_steps, monkeypatch, tmp_path):
    """Steps of 1 s, log_freq 30: progress lines at 5 s and 25 s, the loss line at step 30 (which restarts the
    interval), a progress line 20 s later at step 50, the loss line at step 60."""
    monkeypatch.setattr(jobs.run, "output_is_terminal", lambda: False)
    train(toy_config(n_iters=60, log_freq=30, **EVERYTHING_ELSE_AT_60), tmp_path)
    speed = [line for line in logged_messages(tmp_path) if "steps/s" in line]
    assert [re.sub(r"training_loss \S+", "training_loss X", line) for line in speed] == [
        "step 5/60  1.00 steps/s  ETA 55s",
        "step 25/60  1.00 steps/s  ETA 35s",
        "step 30/60  training_loss X  1.00 steps/s  ETA 30s",
        "step 50/60  1.00 steps/s  ETA 10s",
        "step 60/60  training_loss X  1.00 steps/s  ETA 0s",
    ]


def test_a_compiled_run_measures_its_speed_after_the_compiling_first_step(slow_steps, monkeypatch, tmp_path):
    """A first step of 60 s (the compilation of a compiled network), then steps of 1 s: the first line comes 5 s after
    the first step, at the steady speed, instead of an ETA of an hour."""
    monkeypatch.setattr(jobs.run, "output_is_terminal", lambda: False)
    monkeypatch.setattr(jobs.run, "is_compiled", lambda model: True)
    build = jobs.run.build_experiment

    def build_with_a_slow_first_step(*args, **kwargs):
        exp = build(*args, **kwargs)
        step_fn, calls = exp.train_step_fn, []

        def step(*step_args):
            calls.append(None)
            slow_steps.now += 59.0 if len(calls) == 1 else 0.0
            return step_fn(*step_args)

        exp.train_step_fn = step
        return exp

    monkeypatch.setattr(jobs.run, "build_experiment", build_with_a_slow_first_step)
    train(toy_config(n_iters=60, log_freq=30, **EVERYTHING_ELSE_AT_60), tmp_path)
    speed = [line for line in logged_messages(tmp_path) if "steps/s" in line]
    assert speed[0] == "step 6/60  1.00 steps/s  ETA 54s"


def test_no_progress_lines_on_a_terminal(slow_steps, monkeypatch, tmp_path):
    """On a terminal the tqdm bar shows the progress; the log keeps only the loss lines."""
    monkeypatch.setattr(jobs.run, "output_is_terminal", lambda: True)
    train(toy_config(n_iters=60, log_freq=30, **EVERYTHING_ELSE_AT_60), tmp_path)
    speed = [line for line in logged_messages(tmp_path) if "steps/s" in line]
    assert len(speed) == 2 and all("training_loss" in line for line in speed)


def test_losses_are_read_only_where_something_is_due(monkeypatch, tmp_path):
    """n_iters 60, log 20, eval 30, snapshots 60: the losses are read after steps 20, 30, 40 and 60 only, each
    time all of the steps since the last reading."""
    reads = []
    read = jobs.run._read_losses

    def recording_read(losses, exp, step, schedule):
        reads.append((step, len(losses)))
        return read(losses, exp, step, schedule)

    monkeypatch.setattr(jobs.run, "_read_losses", recording_read)
    config = toy_config(n_iters=60, log_freq=20, eval_freq=30, snapshot_freq=60, snapshot_freq_for_preemption=60)
    train(config, tmp_path)
    assert reads == [(20, 20), (30, 10), (40, 10), (60, 20)]


@pytest.fixture
def nan_at_step_17(monkeypatch):
    """Step 17 turns the weights and its loss into NaN."""
    build = jobs.run.build_experiment

    def build_with_nan(*args, **kwargs):
        exp = build(*args, **kwargs)
        step_fn = exp.train_step_fn

        def step(state, batch, generator):
            loss = step_fn(state, batch, generator)
            if state["step"] != 17:
                return loss
            with torch.no_grad():
                for parameter in exp.model.parameters():
                    parameter.fill_(float("nan"))
            return torch.full_like(loss, float("nan"))

        exp.train_step_fn = step
        return exp

    monkeypatch.setattr(jobs.run, "build_experiment", build_with_nan)


def test_nan_found_at_a_later_reading_names_its_step_and_nothing_bad_is_saved(nan_at_step_17, tmp_path):
    """Losses read every 10 steps: the run stops at the reading after step 20, names step 17, and the meta
    checkpoint left behind is that of step 10, with finite weights."""
    config = toy_config(n_iters=50, log_freq=10, eval_freq=50, snapshot_freq=50, snapshot_freq_for_preemption=10)
    with pytest.raises(TrainingDivergedError, match=r"the training loss is nan at step 17 of 50"):
        train(config, tmp_path)
    state = torch.load(tmp_path / "checkpoints-meta" / "checkpoint.pth", weights_only=True)
    assert state["step"] == 10
    assert all(torch.isfinite(value).all() for value in state["model"].values())
    assert "step 20/50  training_loss" not in (tmp_path / "log.txt").read_text()


def test_likelihood_batches_log_progress(monkeypatch, tmp_path):
    """The test log-likelihood of an evaluation logs progress by batch (here after every batch: intervals of 1 ns)."""
    monkeypatch.setattr(jobs.evaluation, "ProgressLog", functools.partial(ProgressLog, first_after=1e-9, every=1e-9))
    config = toy_config(n_iters=2, log_freq=2, eval_freq=2, snapshot_freq=2, snapshot_freq_for_preemption=2)
    config.data.num_test = 96  # 3 batches of eval.batch_size 32
    config.eval.enable_loss, config.eval.enable_sampling, config.eval.enable_bpd = False, False, True
    train(config, tmp_path)
    evaluate(config, tmp_path)
    lines = [line for line in logged_messages(tmp_path) if line.startswith("likelihood batch")]
    assert [line.split("  ")[0] for line in lines] == ["likelihood batch 1", "likelihood batch 2", "likelihood batch 3"]
    assert all(re.fullmatch(r"likelihood batch \d  \d+\.\d\d batches/s", line) for line in lines)
