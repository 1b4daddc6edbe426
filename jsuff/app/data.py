"""A study's clips: finding them, reading them, and recognising them again on resume.

:func:`discover` lists the clips a :class:`~jsuff.app.config.DataConfig` names (a class-folder
tree, a CSV/TSV manifest or a file list); :func:`load_clips` reads them at the study rate and cuts
them to the configured duration, leaving out (and naming) files that cannot be used;
:func:`data_record` and :func:`data_changes` say whether the files are still the ones a study read.
:func:`to_model_rate` is a study clip as one model hears it.

Example:
    >>> unknown_classes(["rock", "jazz", "", "polka", "polka"], ["rock", "jazz"])
    {'polka': 2}
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jsuff.app.config import DataConfig, StudyError
from jsuff.audio import AudioError, load_audio, resample
from jsuff.models.base import InputPolicy, Model, fit_length

__all__ = [
    "AUDIO_EXTENSIONS",
    "Item",
    "data_changes",
    "data_record",
    "discover",
    "load_clips",
    "no_usable_clips",
    "silent_at_model_rates",
    "to_model_rate",
    "unknown_classes",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclasses.dataclass(frozen=True)
class Item:
    """One discovered clip: its path, its true label (``None``: unknown) and its manifest split."""

    path: str
    label: str | None = None
    split: str | None = None


def discover(data: DataConfig) -> list[Item]:
    """List the clips a :class:`DataConfig` names (sorted; not yet read)."""
    if data.files:
        items = [Item(str(f)) for f in data.files]
    else:
        root = Path(data.path)  # type: ignore[arg-type]
        if not root.exists():
            raise StudyError(f"data path not found: {root}")
        if root.is_file():
            items = _read_manifest(root)
        else:
            classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            items = [
                Item(str(f), c.name)
                for c in classes
                for f in sorted(c.rglob("*"))
                if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS
            ]
            if not classes:
                items = [Item(str(f)) for f in sorted(root.iterdir()) if f.suffix.lower() in AUDIO_EXTENSIONS]
    if data.split is not None:
        items = [it for it in items if it.split == data.split]
    if data.limit is not None:
        items = _limit_balanced(items, data.limit)
    if not items:
        raise StudyError(f"no audio clips found in {data.path or 'the file list'}")
    return items


def _read_manifest(path: Path) -> list[Item]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise StudyError(f"cannot read the manifest {path}: {e}") from None
    if not text.strip():
        raise StudyError(f"manifest {path} is empty; it needs a header with a 'path' column")
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" or "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
    if not rows or "path" not in rows[0]:
        raise StudyError(f"manifest {path} needs a header with a 'path' column (and 'label', optional 'split')")
    out = []
    for r in rows:
        if not r.get("path"):
            continue  # a blank line or a row without a path names no clip
        p = Path(r["path"])
        out.append(Item(str(p if p.is_absolute() else path.parent / p), r.get("label") or None, r.get("split") or None))
    return out


def _limit_balanced(items: list[Item], limit: int) -> list[Item]:
    by_label: dict[str | None, list[Item]] = {}
    for it in items:
        by_label.setdefault(it.label, []).append(it)
    out: list[Item] = []
    queues = [list(v) for _, v in sorted(by_label.items(), key=lambda kv: str(kv[0]))]
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return sorted(out, key=lambda it: (str(it.label), it.path))


def load_clips(items: Sequence[Item], data: DataConfig) -> tuple[np.ndarray, list[Item], list[tuple[str, str]]]:
    """Read every clip at the study rate and cut it to the configured duration.

    Returns the stacked waveforms, the items that were read, and ``(path, reason)`` for each file
    that could not be used (those never stop the study): files that cannot be decoded, and clips
    with nothing to explain once cut to ``duration`` (all samples zero: digital silence, leading
    silence longer than the duration, stereo channels that cancel in the mono mix).
    """
    waves, kept, failed = [], [], []
    for it in items:
        try:
            x, _ = load_audio(it.path, data.sample_rate)
        except AudioError as e:
            failed.append((it.path, str(e)))
            continue
        waves.append(x)
        kept.append(it)
    if not waves:
        raise StudyError(no_usable_clips(failed))
    n = int(round(data.duration * data.sample_rate)) if data.duration else min(len(w) for w in waves)
    if n < 1:
        raise StudyError(f"[data] duration = {data.duration} s at {data.sample_rate} Hz is less than one sample")
    policy = InputPolicy(length=n, pad=data.pad, crop=data.crop)
    fitted = [fit_length(w, policy) for w in waves]
    silent = {i for i, w in enumerate(fitted) if not np.any(w)}
    for i in sorted(silent):
        failed.append((kept[i].path, f"all samples are zero in the first {n / data.sample_rate:g} s as cut "
                                     f"(crop={data.crop}): silence, nothing to explain"))
    if len(silent) == len(fitted):
        raise StudyError(no_usable_clips(failed))
    keep = [i for i in range(len(fitted)) if i not in silent]
    return np.stack([fitted[i] for i in keep]).astype(np.float32), [kept[i] for i in keep], failed


def no_usable_clips(failed: Sequence[tuple[str, str]]) -> str:
    """The error message for a data set of which no file can be used (the first few, and a count)."""
    shown = "; ".join(f"{p}: {r}" for p, r in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    return f"none of the {len(failed)} data files can be used: {shown}{more}"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return int(st.st_size), int(st.st_mtime_ns)


def data_record(items: Sequence[Item]) -> dict[str, np.ndarray]:
    """What identifies the data a study read: each discovered file's path, label, size, mtime and
    SHA-256 (stored in ``data/clips.npz`` beside the clips, compared on resume)."""
    stats = [_stat(it.path) for it in items]
    digests = []
    for it, (size, _) in zip(items, stats, strict=True):
        try:
            digests.append(_sha256(it.path) if size >= 0 else "")
        except OSError:
            digests.append("")
    return {
        "source_paths": np.asarray([it.path for it in items], dtype=str),
        "source_labels": np.asarray([it.label or "" for it in items], dtype=str),
        "source_size": np.asarray([s for s, _ in stats], np.int64),
        "source_mtime_ns": np.asarray([t for _, t in stats], np.int64),
        "source_sha256": np.asarray(digests, dtype=str),
    }


def data_changes(record: Mapping[str, np.ndarray], items: Sequence[Item]) -> list[str]:
    """How the files ``items`` differ from a :func:`data_record` (empty: the same data).

    A file whose size and mtime are unchanged counts as unchanged; otherwise its contents are
    hashed, so a file rewritten with the same bytes is still the same clip.
    """
    old = {str(p): (str(lbl), int(sz), int(t), str(h)) for p, lbl, sz, t, h in zip(
        record["source_paths"], record["source_labels"], record["source_size"],
        record["source_mtime_ns"], record["source_sha256"], strict=True)}
    new = {it.path: it.label or "" for it in items}
    changes = []
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    relabelled, modified = [], []
    for p in sorted(set(new) & set(old)):
        lbl, size, mtime, digest = old[p]
        if new[p] != lbl:
            relabelled.append(f"{p} ({lbl!r} -> {new[p]!r})")
            continue
        if _stat(p) == (size, mtime):
            continue
        try:
            same = _stat(p)[0] == size and _sha256(p) == digest
        except OSError:
            same = False
        if not same:
            modified.append(p)
    for what, paths in (("added", added), ("removed", removed), ("relabelled", relabelled), ("modified", modified)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            changes.append(f"{len(paths)} file(s) {what}: {shown}")
    return changes


def unknown_classes(item_labels: Sequence[str], label_names: Sequence[str]) -> dict[str, int]:
    """Clips per class name that no model has (clip labels that are not label names; ``""`` is
    an unlabelled clip, not a class)."""
    out: dict[str, int] = {}
    for lbl in item_labels:
        if lbl and lbl not in label_names:
            out[lbl] = out.get(lbl, 0) + 1
    return dict(sorted(out.items()))


def to_model_rate(x: np.ndarray, sr: int, model: Model) -> np.ndarray:
    """A clip at the study rate ``sr`` as ``model`` hears it: resampled to its rate, fitted to its length."""
    y = resample(x, sr, model.sample_rate) if sr != model.sample_rate else x
    return fit_length(y, model.input).astype(np.float32)


def silent_at_model_rates(clips: np.ndarray, sr: int, models: Sequence[Model], names: Sequence[str]) -> dict[int, str]:
    """Clips that become all zeros at some model's rate and input length: nothing to explain."""
    out: dict[int, str] = {}
    for model, name in zip(models, names, strict=True):
        for i, c in enumerate(clips):
            if i not in out and not np.any(to_model_rate(c, sr, model)):
                out[i] = f"all samples are zero as model {name!r} hears it ({model.sample_rate} Hz): nothing to explain"
    return out
