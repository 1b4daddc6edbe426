"""A study's output folder: its files, how they are written and read back, and its arrays.

Every file is written atomically (:mod:`jsuff._files`); ``.npz`` files are read without pickles,
and a file that cannot be read back raises :class:`DamagedFileError`, naming it and the fix. The
layout (see :mod:`jsuff.app.study`): ``study.json`` (:func:`study_record`), ``models/<slug>/``
(:func:`model_slugs`) with ``original.npz`` and ``explain/batch_NNNNN.npz`` (one unit of work each,
:func:`pack_explanations` / :func:`unpack_model`), ``transfer/<slug>.npz`` and ``arrays.npz``
(:class:`StudyArrays`, :func:`load_arrays`).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_npz(folder / "a.npz", x=np.arange(3))
    >>> load_npz(folder / "a.npz")["x"].tolist(), save_npz_if_changed(folder / "a.npz", x=np.arange(3))
    ([0, 1, 2], False)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jsuff._files import atomic_write, write_text
from jsuff.app.config import StudyError
from jsuff.explain import Explanation

__all__ = [
    "PACK_KEYS",
    "DamagedFileError",
    "StudyArrays",
    "check_shape",
    "damaged",
    "iter_explanations",
    "load_arrays",
    "load_npz",
    "model_slugs",
    "pack_explanations",
    "read_study_json",
    "save_csv",
    "save_npz",
    "save_npz_if_changed",
    "study_record",
    "unpack_model",
]


def save_npz(path: Path, **arrays: Any) -> None:
    """``arrays`` as an ``.npz`` file, atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def save_npz_if_changed(path: Path, **arrays: Any) -> bool:
    """Write ``arrays`` unless ``path`` already holds exactly them (same names, dtypes, values), so a
    resumed run that recomputes a derived file leaves it untouched. Returns whether it wrote."""
    if path.exists():
        try:
            old = load_npz(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # unreadable: rewrite it
            old = None
        if old is not None and old.keys() == arrays.keys() and all(
            _identical(old[k], np.asarray(v)) for k, v in arrays.items()
        ):
            return False
    save_npz(path, **arrays)
    return True


def save_csv(path: Path, frame: Any) -> None:
    """A DataFrame as CSV (no index), atomically."""
    write_text(path, frame.to_csv(index=False))


class DamagedFileError(StudyError):
    """A file of a study directory that cannot be read back; the message names it and the fix."""


def damaged(path: Path, why: str) -> DamagedFileError:
    """The error for a study file that cannot be used: names it, why, and how to recompute it."""
    return DamagedFileError(
        f"{path} is damaged ({why}). Delete it and rerun with --resume: that unit is computed again "
        "and everything else already done is kept."
    )


def load_npz(path: Path, keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (pickles refused).

    Raises:
        DamagedFileError: the file is unreadable, truncated or lacks one of ``keys``; the message
            names the file and how to recompute it.
    """
    try:
        # our own handle: np.load leaks its file when the zip is damaged
        with open(path, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with z:
                out = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise damaged(Path(path), f"{type(e).__name__}: {e}") from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise damaged(Path(path), f"it has no {', '.join(missing)}")
    return out


def check_shape(path: Path, name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``arr`` (array ``name`` of the file ``path``) if it has ``shape``, else :class:`DamagedFileError`."""
    if arr.shape != shape:
        raise damaged(path, f"{name} has shape {list(arr.shape)}, this study needs {list(shape)}")
    return arr


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def model_slugs(names: Sequence[str]) -> dict[str, str]:
    """A safe, unique folder/file name for each model name of a study.

    A model's results are stored under ``models/<slug>/`` and ``transfer/<slug>.npz`` (and the
    report's ``audio/<slug>/``): a name never becomes a raw path component. Names that are plain
    (letters, digits, ``._-``, not starting with a dot, at most 64 characters, unique ignoring
    case) are their own slug; any other name (``../x``, ``a/b``, HTML, quotes) becomes its safe
    characters plus 10 hex digits of its SHA-256, so it cannot escape the folder or collide.

    Example:
        >>> model_slugs(["cnn", "../../x", "a/b"])
        {'cnn': 'cnn', '../../x': 'x-9cdf6a5010', 'a/b': 'a_b-c14cddc033'}
    """
    lower = [n.lower() for n in names]
    out = {}
    for n in names:
        if _SAFE_NAME.fullmatch(n) and lower.count(n.lower()) == 1:
            out[n] = n
        else:
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", n).strip("._-")[:40] or "model"
            out[n] = f"{stem}-{hashlib.sha256(n.encode()).hexdigest()[:10]}"
    slugs = [v.lower() for v in out.values()]
    if len(set(slugs)) != len(slugs):
        raise StudyError(f"model names {list(names)} give clashing folder names; rename one of them")
    return out


@dataclasses.dataclass(frozen=True)
class StudyArrays:
    """Everything the statistics need, as arrays (loaded back from a study directory)."""

    model_names: tuple[str, ...]
    label_names: tuple[str, ...]
    paths: tuple[str, ...]
    true: np.ndarray  # [N] int, -1 where unknown
    original: np.ndarray  # [M, N] int
    empty: np.ndarray  # [M] int
    labels: np.ndarray  # [M, M, N] int: labels[f, g, i] = c_g(x_S^f(x_i))
    valid: np.ndarray  # [M, N] bool: f has a verified sufficient signal for clip i
    size_fraction: np.ndarray  # [M, N]
    energy_fraction: np.ndarray  # [M, N]
    queries: np.ndarray  # [M, N]
    trivial: np.ndarray  # [M, N] bool: the empty signal already has f's label


def pack_explanations(exps: Sequence[Explanation], idx: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one unit file (``explain/batch_NNNNN.npz``): the explanations of clips ``idx``."""
    return {
        "index": np.asarray(idx, np.int64),
        "target": np.asarray([e.target for e in exps], np.int32),
        "target_confidence": np.asarray([e.target_confidence for e in exps], np.float32),
        "mask": np.stack([np.asarray(e.mask) for e in exps]),
        "responsibility": np.stack([np.asarray(e.responsibility, np.float32) for e in exps]),
        "sufficient": np.stack([np.asarray(e.sufficient_waveform, np.float32) for e in exps]),
        # a clip counts only when the extraction found a set and it was verified sufficient
        "verified": np.asarray([bool(e.verified) and bool(e.found) for e in exps]),
        "minimal": np.asarray([bool(_certificate(e)) for e in exps]),
        "queries": np.asarray([int(e.queries) for e in exps], np.int64),
        "size_fraction": np.asarray([float(e.size_fraction) for e in exps], np.float32),
        "energy_fraction": np.asarray([float(e.energy_fraction) for e in exps], np.float32),
        "empty_is_target": np.asarray([bool(e.empty_is_target) for e in exps]),
    }


def _certificate(e: Explanation) -> bool:
    m = e.minimal
    return bool(getattr(m, "holds", m))


PACK_KEYS = ("index", "target", "target_confidence", "mask", "responsibility", "sufficient", "verified",
              "minimal", "queries", "size_fraction", "energy_fraction", "empty_is_target")


def unpack_model(folder: Path, n: int) -> dict[str, np.ndarray]:
    """All unit files of one model's ``explain/`` folder as arrays over clips ``0..n-1``, checked."""
    parts = []
    for p in sorted(folder.glob("batch_*.npz")):
        z = load_npz(p, PACK_KEYS)
        rows = {k: v.shape[:1] for k, v in z.items()}
        if len(set(rows.values())) != 1:
            raise damaged(p, f"its arrays disagree on the number of clips: {rows}")
        parts.append(z)
    if not parts:
        raise StudyError(f"{folder} holds no explanation batches; rerun with --resume to compute them")
    try:
        merged = {k: np.concatenate([p[k] for p in parts]) for k in PACK_KEYS}
    except ValueError as e:
        raise StudyError(
            f"the explanation batches in {folder} do not fit together ({e}); delete that folder and rerun "
            "with --resume to compute its explanations again"
        ) from None
    order = np.argsort(merged["index"])
    merged = {k: v[order] for k, v in merged.items()}
    if merged["index"].tolist() != list(range(n)):
        raise StudyError(
            f"{folder} does not hold explanations for clips 0..{n - 1} exactly once; the study directory is "
            "damaged: delete that folder and rerun with --resume to compute its explanations again"
        )
    return merged


def load_arrays(out_dir: str | Path) -> StudyArrays:
    """Read the arrays of a finished study directory."""
    p = Path(out_dir) / "arrays.npz"
    if not p.exists():
        raise StudyError(f"{out_dir} holds no finished study (no arrays.npz); run or resume it first")
    z = load_npz(p, [f.name for f in dataclasses.fields(StudyArrays)])
    kw = {f.name: z[f.name] for f in dataclasses.fields(StudyArrays)}
    for k in ("model_names", "label_names", "paths"):
        kw[k] = tuple(str(s) for s in kw[k])
    return StudyArrays(**kw)


def study_record(out_dir: str | Path) -> dict[str, Any]:
    """``study.json`` of a study directory, with a ``models`` list of ``{name, slug, path,
    sample_rate}`` (``sample_rate`` is ``None`` for studies written before it was recorded)."""
    meta = read_study_json(Path(out_dir) / "study.json")
    if not isinstance(meta.get("models"), list):
        cfg_models = meta["config"].get("models", [])
        slugs = model_slugs([m["name"] for m in cfg_models])
        meta["models"] = [{**m, "slug": slugs[m["name"]], "sample_rate": None} for m in cfg_models]
    # the slugs are recomputed, never taken from the file: a name cannot become a path
    slugs = model_slugs([m["name"] for m in meta["models"]])
    meta["models"] = [{**m, "slug": slugs[m["name"]]} for m in meta["models"]]
    return meta


def read_study_json(meta_path: Path) -> dict[str, Any]:
    """``study.json`` as written (a damaged or foreign file is a :class:`StudyError` naming it)."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StudyError(
            f"{meta_path} cannot be read ({type(e).__name__}: {e}); it records which config the study "
            "belongs to, so the folder cannot be resumed. Run the study into a new --out."
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise StudyError(f"{meta_path} is not a jsuff study record; run the study into a new --out")
    return meta


def iter_explanations(out_dir: str | Path, model: str) -> Iterable[dict[str, np.ndarray]]:
    """Yield each stored explanation batch of the model named ``model`` (for figures and listening)."""
    slugs = {m["name"]: m["slug"] for m in study_record(out_dir)["models"]}
    if model not in slugs:
        raise StudyError(f"{out_dir} has no model named {model!r}; it has {sorted(slugs)}")
    for p in sorted((Path(out_dir) / "models" / slugs[model] / "explain").glob("batch_*.npz")):
        yield load_npz(p, PACK_KEYS)
