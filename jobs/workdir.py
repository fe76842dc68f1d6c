"""One job at a time in a workdir: :func:`workdir_lock`, held by every job behind ``main.py`` for its whole run.

Two jobs in one workdir would overwrite each other's checkpoints, sample rounds and reports. So each job takes an
exclusive ``fcntl.flock`` on ``workdir/.lock`` before it reads or writes anything there, and a second job stops at
once with :class:`WorkdirBusyError` naming the holder: its pid, host, mode and start time, which the holder writes
into the lock file. The kernel drops an flock when its process ends, however it ends (SIGKILL and crashes
included), so a dead job never leaves its workdir locked; its description stays in the file until the next holder
overwrites it. A workdir the lock had to create is removed again when the job leaves nothing else in it (a config
error found before any work leaves no trace).

* Nested jobs: a job that runs another job on the same workdir in the same thread (``train_and_evaluate`` runs
  ``train`` then ``evaluate``; ``train_classifier`` runs ``train``) keeps its one lock; the inner call takes
  nothing. Another thread of the same process is refused like another process.
* ``torchrun``: the ranks of one job share its workdir, so only rank 0 takes the lock; the other ranks take none.
  Every job takes it before :func:`jobs.experiment.build_experiment` starts the process group, so when rank 0 is
  refused the other ranks wait in the rendezvous for it, having written nothing, and ``torchrun`` stops them when
  rank 0 exits.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

from .experiment import ConfigError, distributed_context

LOCK_FILE = ".lock"  # inside the workdir

_held = threading.local()  # .workdirs: the real paths of the workdirs this thread holds


class WorkdirBusyError(ConfigError):
    """Another job holds the workdir: this one stopped before reading or writing anything there."""


def _held_workdirs() -> set[str]:
    if not hasattr(_held, "workdirs"):
        _held.workdirs = set()
    return _held.workdirs


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, mode: str) -> Iterator[None]:
    """Hold ``workdir``'s lock (module docstring) for the ``with`` block, as the job ``mode`` (``'train'``, ...).

    Creates the workdir if needed, and removes it again if the job leaves nothing in it but the lock (a config
    error). :class:`WorkdirBusyError` if another job holds it; :class:`ConfigError` if the lock file cannot be
    created or locked (e.g. no permission). Rank 0 only under ``torchrun``; re-entrant.
    """
    folder = Path(os.path.abspath(workdir))
    key = os.path.realpath(folder)
    held = _held_workdirs()
    if not distributed_context().is_main or key in held:
        yield
        return
    descriptor, created = _acquire(folder, mode)
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        _release(descriptor, folder, created)


def _acquire(workdir: Path, mode: str) -> tuple[int, list[Path]]:
    """The open lock file of ``workdir``, exclusively locked and describing this process, and the folders created
    for it (deepest first).

    A holder that removes the lock file (:func:`_release`) does so while still holding it, so a process that opened
    that file before its removal may lock it afterwards: the locked file is checked to still be the one at the path,
    and the path is opened again if not.
    """
    path = workdir / LOCK_FILE
    created: list[Path] = []
    for _ in range(100):
        created += _make_folders(workdir)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: a holder's description stays
        except FileNotFoundError:
            continue  # the previous holder removed the workdir it had created: create it again
        except OSError as error:
            raise ConfigError(f"cannot create the workdir lock {path}: {error.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(descriptor)
            os.close(descriptor)
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by another job ({holder}); wait for it to end or choose another --workdir"
            ) from None
        except OSError as error:
            os.close(descriptor)
            raise ConfigError(f"cannot lock the workdir {workdir} ({path}): {error.strerror}") from None
        if _is_file_at(descriptor, path):
            break
        os.close(descriptor)
    else:
        raise ConfigError(f"cannot lock the workdir {workdir}: its lock file {path} keeps being replaced")
    record = {
        "pid": os.getpid(), "host": socket.gethostname(), "mode": mode,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return descriptor, created


def _make_folders(workdir: Path) -> list[Path]:
    """Create ``workdir`` and its missing parents; those created, deepest first."""
    missing = []
    folder = workdir
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} exists and is not a folder")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the workdir {workdir}: {error.strerror}") from None
    return missing


def _is_file_at(descriptor: int, path: Path) -> bool:
    try:
        here, there = os.fstat(descriptor), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _release(descriptor: int, workdir: Path, created: list[Path]) -> None:
    """Clear the description; remove the lock file and the folders ``created`` for it if the job wrote nothing
    else there; unlock (closing the file drops the flock). The removal happens while the lock is held."""
    try:
        os.ftruncate(descriptor, 0)
        if created and [entry.name for entry in workdir.iterdir()] == [LOCK_FILE]:
            (workdir / LOCK_FILE).unlink()
            for folder in created:
                folder.rmdir()
    except OSError:
        pass  # another job started writing there meanwhile: the folders stay
    finally:
        os.close(descriptor)


def _describe_holder(descriptor: int) -> str:
    """``pid P on host H, mode M, started T`` from the lock file, or why it cannot be said."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode("utf-8"))
        return f"pid {record['pid']} on host {record['host']}, mode {record['mode']}, started {record['started']}"
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "its pid, host and mode are not written yet"
