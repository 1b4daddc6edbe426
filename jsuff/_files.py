"""Atomic file writes shared by the study, the report and the zoo.

A file is written to a temporary sibling, flushed and fsynced, then moved over the target, so a
reader (or a resumed run after a crash) sees either the old complete file or the new one, never
a partial one. The temporary file is removed if the write fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json", "write_text"]


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then replace ``path`` with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """``obj`` as indented, key-sorted JSON (one trailing newline) to ``path``, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
