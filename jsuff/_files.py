"""Atomic file writes and folder locks shared by the study, the report and the zoo.

A file is written to a temporary sibling, flushed and fsynced, then moved over the target, so a
reader (or a resumed run after a crash) sees either the old complete file or the new one, never
a partial one. The temporary file is removed if the write fails, and a failure (disk full,
read-only folder, no permission) is raised as :class:`WriteError`, an ``OSError`` whose message
names the file that could not be written. New files get the permissions ``open()`` would give
them (``0o666`` less the process's umask), not ``mkstemp``'s private ``0o600``.

:func:`folder_lock` keeps two processes from writing into one folder at once and says who holds
it (process id, host, start time, command).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["FolderLockedError", "LOCK_NAME", "WriteError", "atomic_write", "folder_lock", "write_json", "write_text"]

#: The lock file :func:`folder_lock` keeps in a folder (it stays there, unlocked, after a run).
LOCK_NAME = ".jsuff.lock"


class WriteError(OSError):
    """A file could not be written (disk full, read-only, permission); the message names it."""


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock; the message says which one."""


def _describe(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _open_temporary(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, opened for writing; mode ``0o666`` so the umask applies."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then replace ``path`` with it.

    Raises:
        WriteError: the folder or the file could not be written; nothing is left half-written.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temporary(path)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, f"cannot write {path}: {_describe(e)}") from e
        raise


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """``obj`` as indented, key-sorted JSON (one trailing newline) to ``path``, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _holder(lock: Path) -> str:
    try:
        h = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown process (its lock file is unreadable)"
    n = h.get("processes")
    run = f", process 0 of a {n}-process run" if isinstance(n, int) and n > 1 else ""
    return (
        f"process {h.get('pid', '?')} on host {h.get('host', '?')} since {h.get('started', '?')}"
        f" ({h.get('command', '?')}{run})"
    )


@contextlib.contextmanager
def folder_lock(folder: Path, purpose: str = "jsuff", note: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the duration of the block.

    The lock is an ``flock`` on ``folder/.jsuff.lock``, so the kernel releases it when the holder
    exits, however it ends (a killed run leaves no stale lock behind: the file that stays records
    the last holder but locks nothing). The file holds the holder's process id, host, start time
    and command, which the error names, and the entries of ``note`` (a study's processes read
    their run's identity there).

    Raises:
        FolderLockedError: another process holds the lock.
        WriteError: the folder or its lock file cannot be created.
    """
    folder = Path(folder)
    lock = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # no flock (not POSIX): run unlocked rather than not at all
        yield lock
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(e.errno, f"cannot create the folder {folder}: {_describe(e)}") from e
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise WriteError(e.errno, f"cannot create the lock file {lock}: {_describe(e)}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(
                f"{folder} is in use by {_holder(lock)}; wait for it to finish or write elsewhere. "
                f"(If that process is gone, the lock is released by itself; {lock} only records it.)"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": f"{purpose}: {' '.join(sys.argv)}"[:300],
            **(note or {}),
        }
        with contextlib.suppress(OSError):  # a full disk: the lock holds, only the record is missing
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield lock
    finally:
        os.close(fd)  # closing the descriptor releases the flock
