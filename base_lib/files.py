"""Atomic file writes, used for every file the toolkit writes that must never be seen half-written: checkpoints,
sample rounds, reports, statistics ``.npz`` files, the cached digits classifier.

A written file gets the permissions the user's umask gives a new file (``0o666 & ~umask``), like any file a
program creates with ``open``. A write that fails for a reason of the file system (no space left, a read-only
folder, a file where a folder should be) raises :class:`WriteError`, whose one-line message names the path and the
cause; the file that was there before is left as it was.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

#: the mode a new file is created with; the kernel applies the process's umask to it
NEW_FILE_MODE = 0o666


class WriteError(OSError):
    """A file cannot be written (no space left, read-only file system, a file where a folder should be); the
    message is one line naming the path and the cause, and ``errno`` is that of the underlying error."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, then rename it over ``path``: a process killed at any
    moment leaves the old file or the complete new one, never a partial one. Creates the parent folder.

    Raises :class:`WriteError` if the file system refuses any part of it (the temporary file is removed).
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _create_temporary(path)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        translate = isinstance(error, Exception) and not isinstance(error, WriteError)  # not KeyboardInterrupt
        cause = _os_error_behind(error) if translate else None
        if cause is None:
            raise
        raise _write_error(path, cause) from error
    _fsync_folder(path.parent)
    return path


def _write_error(path: Path, cause: OSError) -> WriteError:
    """The :class:`WriteError` for ``path`` that failed with ``cause``; names a file that stands where a folder of
    ``path`` should be."""
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{blocking} is a file, not a folder" if blocking is not None else (cause.strerror or str(cause))
    error = WriteError(f"cannot write {path}: {reason}")
    error.errno = cause.errno
    return error


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty, uniquely named file beside ``path``, created with :data:`NEW_FILE_MODE` so that the umask (and a
    default ACL of the folder) decides its permissions, as for any new file; its descriptor and name."""
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), NEW_FILE_MODE), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def _os_error_behind(error: BaseException) -> OSError | None:
    """``error`` if it is an :class:`OSError`, else the first one in its chain of causes: serializers such as
    ``torch.save`` turn the ``OSError`` of a failed write (no space left) into a ``RuntimeError``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def cache_dir() -> Path:
    """The toolkit's cache folder: ``$XDG_CACHE_HOME/score-sde-toolkit`` (default ``~/.cache/score-sde-toolkit``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "score-sde-toolkit"
