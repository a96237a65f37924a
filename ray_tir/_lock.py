"""One job per folder: a lock the kernel releases when its process dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ._folder import _LOCK, OutputFolderError  # noqa: TID251

__all__ = ["folder_lock"]


_held: dict[tuple[str, int], tuple[int, int]] = {}  # (folder, thread) -> (fd, depth)
_held_lock = threading.Lock()


@contextlib.contextmanager
def folder_lock(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold `output` for one job: create it, check it takes a write, refuse a second job.

    `flock` is released by the kernel when the holder's process ends, however it ends: a
    killed job never leaves the folder blocked. Re-entrant in one thread (the command holds
    it around `write_output`, which takes it too); another thread or process is refused.

    Raises:
        OutputFolderError: the folder cannot be created or written (read-only, full disk),
            or another job holds it.
    """
    folder = Path(os.path.abspath(output))
    key = (str(folder), threading.get_ident())
    with _held_lock:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield folder
        finally:
            with _held_lock:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return
    fd = _acquire(folder)
    with _held_lock:
        _held[key] = (fd, 1)
    try:
        yield folder
    finally:
        with _held_lock:
            del _held[key]
        _release(folder, fd)


def _acquire(folder: Path) -> int:
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(
            f"{folder} is a file, not a folder: name a folder for the output (it is created)"
        )
    path = folder / _LOCK
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputFolderError(
                f"cannot write in {folder}: {e.strerror or e}; nothing was sent"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputFolderError(
                f"another job is writing to {folder}{f' ({holder})' if holder else ''}: one "
                "job per folder at a time. Wait for it to end, or choose another folder; "
                "nothing was sent"
            ) from None
        # The file may have been removed by its last holder between our open and our lock:
        # then this lock guards nothing, and we start again on the file now there.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        # Also the check that the folder takes a write (a full disk fails here, not after
        # the job has paid for its rows).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        os.fsync(fd)
    except OSError as e:
        _release(folder, fd)
        raise OutputFolderError(
            f"cannot write in {folder}: {e.strerror or e}; nothing was sent"
        ) from None
    return fd


def _release(folder: Path, fd: int) -> None:
    # Unlinked while still locked, so that no other job can hold the same file meanwhile;
    # a job that opened it before the unlink sees it gone (above) and starts again.
    with contextlib.suppress(OSError):
        if os.stat(folder / _LOCK).st_ino == os.fstat(fd).st_ino:
            os.unlink(folder / _LOCK)
    os.close(fd)
