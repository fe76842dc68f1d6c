"""The workdir lock (:mod:`jobs.workdir`): one job at a time in a workdir.

* A helper process holds the lock (``workdir_lock`` then sleep): every job of ``main.py``'s ``JOBS`` table, called
  on that workdir, stops at once with :class:`WorkdirBusyError` naming the holder (pid, host, mode, start time),
  and the files of the run in the workdir keep their bytes and modification times; ``main.py`` itself prints one
  line and exits with status 1.
* A holder killed with SIGKILL leaves the workdir free: the kernel drops the flock with the process.
* In one process the lock is re-entrant in the thread that holds it (nested jobs), refused in another thread,
  and not taken by the ranks other than 0 of a ``torchrun`` job.
* A workdir the lock created is removed if the job wrote nothing else there; a lock file removed by its holder
  after another process opened it is not trusted by that process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from configs import load_config
from jobs.experiment import ConfigError
from jobs.run import train
from jobs.workdir import LOCK_FILE, WorkdirBusyError, workdir_lock

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / "configs" / "vp" / "toy_mlp_continuous.py"
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = {
    "training.n_iters": 4, "training.batch_size": 32, "training.snapshot_freq": 2, "training.log_freq": 2,
    "training.eval_freq": 2, "training.snapshot_freq_for_preemption": 2, "training.snapshot_sampling": False,
    "model.nf": 16, "model.num_scales": 20, "data.num_test": 64, "eval.batch_size": 32, "eval.num_samples": 32,
    "eval.begin_ckpt": 1, "eval.end_ckpt": 2,
}
HOLDER = (
    "import sys, time\n"
    "from jobs.workdir import workdir_lock\n"
    "with workdir_lock(sys.argv[1], 'train'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)


def tiny_config():
    config = load_config(TOY_CONFIG)
    for name, value in TINY.items():
        section, field = name.split(".")
        setattr(config[section], field, value)
    return config


@pytest.fixture
def holder(tmp_path):
    """A process that holds ``tmp_path / 'run'``'s lock as a ``train`` job; killed at the end of the test."""
    workdir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, env=CHILD_ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.strip() == "held", process.stderr.read()[-2000:]
        yield workdir, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def files_of(workdir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``workdir`` but the lock: its bytes and modification time."""
    return {
        str(path.relative_to(workdir)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(workdir.rglob("*")) if path.is_file() and path.name != LOCK_FILE
    }


def test_a_held_workdir_refuses_every_job_and_is_left_untouched(tmp_path):
    from main import JOBS

    workdir = tmp_path / "run"
    config = tiny_config()
    train(config, workdir)  # a finished run: checkpoints, log, TensorBoard events
    before = files_of(workdir)
    assert any(name.startswith("checkpoints") for name in before)
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, env=CHILD_ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held", process.stderr.read()[-2000:]
        for mode, job in JOBS.items():
            started = time.perf_counter()
            with pytest.raises(WorkdirBusyError) as refused:
                job(config, workdir, None)
            assert time.perf_counter() - started < 1.0, mode  # at once: before building anything
            message = str(refused.value)
            assert "\n" not in message and str(workdir) in message, message
            assert f"pid {process.pid} on host {socket.gethostname()}, mode train, started " in message, message
            assert isinstance(refused.value, ConfigError)  # main.py prints it as one line
        assert files_of(workdir) == before
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def test_main_prints_one_line_naming_the_holder(holder):
    workdir, process = holder
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), f"--config={TOY_CONFIG}", f"--workdir={workdir}",
                           "--mode=train"], cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith(f"main.py: error: workdir {workdir} is in use by another job (pid {process.pid} ")
    assert sorted(path.name for path in workdir.iterdir()) == [LOCK_FILE]  # no log, no folder


def test_a_killed_holder_leaves_the_workdir_free(holder):
    workdir, process = holder
    with pytest.raises(WorkdirBusyError, match=f"pid {process.pid} "):
        with workdir_lock(workdir, "eval"):
            pass
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert f'"pid": {process.pid}' in (workdir / LOCK_FILE).read_text()  # the dead holder's description remains
    with workdir_lock(workdir, "eval"):
        text = (workdir / LOCK_FILE).read_text()
        assert f'"pid": {os.getpid()}' in text and '"mode": "eval"' in text
    assert (workdir / LOCK_FILE).read_text() == ""  # released: the description is cleared


def test_the_lock_is_reentrant_in_its_thread_only(tmp_path):
    outcome = []

    def other_thread():
        try:
            with workdir_lock(tmp_path, "sample"):
                outcome.append("entered")
        except WorkdirBusyError as error:
            outcome.append(str(error))

    with workdir_lock(tmp_path, "train"):
        with workdir_lock(tmp_path / ".", "eval"):  # a nested job on the same folder, spelled differently
            assert '"mode": "train"' in (tmp_path / LOCK_FILE).read_text()
        assert '"mode": "train"' in (tmp_path / LOCK_FILE).read_text()  # the nested job did not release it
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(outcome) == 1 and f"pid {os.getpid()} " in outcome[0] and "mode train" in outcome[0]
    with workdir_lock(tmp_path, "sample"):  # released by the outer job
        pass


def test_only_rank_zero_of_a_torchrun_job_locks(holder, monkeypatch):
    workdir, _ = holder
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with workdir_lock(workdir, "train"):  # rank 1 shares rank 0's lock: it takes none
        pass
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(WorkdirBusyError):
        with workdir_lock(workdir, "train"):
            pass


def test_an_unusable_workdir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot create the workdir") as error:
        with workdir_lock(blocker / "run", "train"):
            pass
    assert "\n" not in str(error.value)


def test_a_workdir_created_for_a_job_that_wrote_nothing_is_removed(tmp_path):
    workdir = tmp_path / "runs" / "new"
    with workdir_lock(workdir, "train"):
        assert (workdir / LOCK_FILE).is_file()
    assert not (tmp_path / "runs").exists()
    with workdir_lock(workdir, "train"):
        (workdir / "log.txt").write_text("work")
    assert sorted(path.name for path in workdir.iterdir()) == [LOCK_FILE, "log.txt"]


def test_a_lock_file_removed_after_it_was_opened_is_opened_again(tmp_path, monkeypatch):
    """The first open returns a file that its holder then removes (as :func:`workdir_lock` does when it cleans up);
    the lock taken on it would protect nothing, so the lock file at the path is opened and locked instead."""
    orphan = tmp_path / "removed.lock"
    real_open = os.open
    opened = []

    def open_a_removed_file_first(path, flags, mode=0o777, **kwargs):
        if opened:
            return real_open(path, flags, mode, **kwargs)
        opened.append(path)
        descriptor = real_open(orphan, flags, mode, **kwargs)
        orphan.unlink()
        return descriptor

    workdir = tmp_path / "run"
    workdir.mkdir()
    monkeypatch.setattr(os, "open", open_a_removed_file_first)
    with workdir_lock(workdir, "train"):
        monkeypatch.undo()
        assert opened == [workdir / LOCK_FILE]
        assert f'"pid": {os.getpid()}' in (workdir / LOCK_FILE).read_text()
