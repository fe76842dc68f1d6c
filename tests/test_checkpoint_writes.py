"""Writing files (``base_lib.files.atomic_write``, and checkpoints through it): the permissions the umask gives, and
a one-line :class:`WriteError` naming the path and the cause when the file system refuses (no space left, a
read-only folder, a file where the workdir should be), with the previous file left intact.

A real full disk and a real read-only file system are small tmpfs mounts made by the test; where mounting is not
permitted (not root, no ``CAP_SYS_ADMIN``) those variants are skipped and the same failures are simulated.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from base_lib import files
from base_lib.files import WriteError, atomic_write
from jobs.run import train
from train_lib.checkpoints import load_checkpoint_file, save_checkpoint

from test_checkpoint_kills import small_config
from test_checkpoints import make_state, train_steps


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def one_line_error(call, *args) -> WriteError:
    with pytest.raises(WriteError) as caught:
        call(*args)
    assert "\n" not in str(caught.value), "the message must be one line"
    return caught.value


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted on ``folder`` for the block; the test is skipped where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux":
        pytest.skip("mounts a tmpfs (Linux)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


# ------------------------------------------------------------------ permissions
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_permissions(tmp_path, mask, expected):
    with umask(mask):
        written = atomic_write(tmp_path / "report.txt", lambda f: f.write(b"x"))
        checkpoint = save_checkpoint(tmp_path / "checkpoints" / "checkpoint_1.pth", make_state())
        (tmp_path / "old.txt").write_bytes(b"old")
        os.chmod(tmp_path / "old.txt", 0o600 if expected != 0o600 else 0o644)
        replaced = atomic_write(tmp_path / "old.txt", lambda f: f.write(b"new"))  # a new file, new permissions
    assert mode_of(written) == mode_of(checkpoint) == mode_of(replaced) == expected
    assert replaced.read_bytes() == b"new"


# ------------------------------------------------------------------ refused writes, simulated
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_refused_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code, where):
    state = make_state()
    path = save_checkpoint(tmp_path / "checkpoint.pth", state)
    before = path.read_bytes()
    train_steps(state, 1)
    if where == "write":  # torch.save reports a failed write as a RuntimeError whose context is the OSError
        def failing_save(obj, file, *args, **kwargs):
            try:
                raise OSError(code, os.strerror(code))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

        monkeypatch.setattr(torch, "save", failing_save)
    else:
        def failing_replace(source, destination):
            raise OSError(code, os.strerror(code), str(destination))

        monkeypatch.setattr(files.os, "replace", failing_replace)
    error = one_line_error(save_checkpoint, path, state)
    assert str(error) == f"cannot write {path}: {os.strerror(code)}" and error.errno == code
    assert isinstance(error, OSError)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # the temporary file is gone


def test_other_errors_of_the_writer_pass_unchanged(tmp_path):
    def broken(file):
        raise TypeError("cannot serialize this")

    with pytest.raises(TypeError, match="cannot serialize"):
        atomic_write(tmp_path / "x.bin", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("depth", [0, 2])
def test_a_workdir_that_is_a_file(tmp_path, depth):
    workdir = tmp_path / "run"
    workdir.write_text("I am a file")
    path = workdir.joinpath(*["sub"] * depth, "checkpoints", "checkpoint_1.pth")
    error = one_line_error(save_checkpoint, path, make_state())
    assert str(error) == f"cannot write {path}: {workdir} is a file, not a folder"
    assert workdir.read_text() == "I am a file"


# ------------------------------------------------------------------ real file systems
def test_disk_full(tmp_path):
    with tmpfs(tmp_path / "disk", "512k") as disk:
        small = save_checkpoint(disk / "checkpoints" / "checkpoint_1.pth", make_state(width=16))
        before = small.read_bytes()
        big = make_state(width=512)  # about 6 MB
        error = one_line_error(save_checkpoint, small, big)
        assert str(error) == f"cannot write {small}: No space left on device" and error.errno == errno.ENOSPC
        assert small.read_bytes() == before and load_checkpoint_file(small)["step"] == 0
        assert [p.name for p in small.parent.iterdir()] == ["checkpoint_1.pth"]
        error = one_line_error(atomic_write, disk / "samples" / "big.npz", lambda f: f.write(bytes(2**20)))
        assert str(error).endswith(": No space left on device")


def test_read_only_file_system(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        path = save_checkpoint(disk / "checkpoints-meta" / "checkpoint.pth", make_state())
        before = path.read_bytes()
        remount_read_only(disk)
        state = make_state()
        train_steps(state, 1)
        error = one_line_error(save_checkpoint, path, state)
        assert str(error) == f"cannot write {path}: Read-only file system" and error.errno == errno.EROFS
        assert path.read_bytes() == before
        error = one_line_error(save_checkpoint, disk / "checkpoints" / "checkpoint_1.pth", state)
        assert str(error) == f"cannot write {disk / 'checkpoints' / 'checkpoint_1.pth'}: Read-only file system"


def test_training_on_a_full_disk_stops_with_the_path_and_keeps_the_previous_checkpoints(tmp_path):
    """The toy run fills a small disk with its checkpoints: :class:`WriteError` names the file that did not fit, and
    every checkpoint written before it still loads."""
    config = small_config()
    config.model.nf = 64  # about 0.8 MB a checkpoint: those of step 4 fit, the first of step 8 does not
    with tmpfs(tmp_path / "disk", "2m") as disk:
        run = disk / "run"
        with pytest.raises(WriteError) as caught:
            train(config, run)
        assert str(caught.value) == f"cannot write {run / 'checkpoints' / 'checkpoint_2.pth'}: No space left on device"
        written = sorted(p.relative_to(run).as_posix() for p in run.glob("checkpoints*/*"))
        assert written == ["checkpoints-meta/checkpoint.pth", "checkpoints/checkpoint_1.pth"]
        assert [load_checkpoint_file(run / name)["step"] for name in written] == [4, 4]
