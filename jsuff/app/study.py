"""Studies: many models × many clips, resumable and sharded.

A study points jsuff at converted models and a labelled set of clips and computes, in order:

1. every model's label on every original clip and on the empty signal (the baselines);
2. every model's explanation (minimal sufficient signal) for every clip, batched across clips;
3. every model's label on every other model's sufficient signals (the transfer labels);
4. the statistics (:mod:`jsuff.transfer`, :mod:`jsuff.info`) as tidy tables.

Each unit of work is written as soon as it is done, atomically (temporary file + rename), under the
output directory::

    study.json                    the resolved config, its fingerprint, each model's slug and rate
    data/clips.npz                clips at the study rate, their paths and labels, the files that
                                  were left out, and each discovered file's size, mtime and SHA-256
    data/failures.csv             files that could not be used, with the reason
    models/<slug>/original.npz    logits on the originals and on the empty signal
    models/<slug>/explain/batch_00000.npz   explanations, one file per batch of clips
    transfer/<slug>.npz           labels[g, i] of every model g on <slug>'s sufficient signals
    tables/*.csv                  statistics
    summary.json                  headline numbers
    .jsuff.lock                   the lock of a running study (who holds it)

``<slug>`` is the model's name when that is a plain file name, else a safe name with a hash
(:func:`model_slugs`): a model name never becomes a raw path component.

``resume=True`` reuses every file already there, so a killed run continues without repeating or
losing work; the per-clip PRNG keys depend only on (seed, model, clip), never on batching, so a
resumed run gives the same results as an uninterrupted one. Paths in the config are absolute
(relative ones resolve next to the TOML file), so resuming does not depend on the current
directory. The clips are read once; a resume compares the data folder or manifest with the record
in ``data/clips.npz`` and refuses, listing what was added, removed, relabelled or modified, when
they differ (the stored results belong to the old clips and are never mixed with new ones): restore
the data or run into a new output directory. A fresh run goes only into a new or empty directory.

Data that cannot be used never stops a study: a file that cannot be decoded, or a clip that is all
zeros once cut to ``duration`` or at some model's rate (nothing to explain), is left out, named on
the console and in ``data/failures.csv``. A disk that fills up, a read-only folder or a damaged unit
file stops the study with an error naming the file; everything finished before is kept.

Labels across models: every model of a study must have the same set of label names (the task's
classes); their order may differ and is mapped onto the first model's order. True labels are
matched to those names; a clip whose label is not among them (a class no model has) has no true
label (``-1``): the study completes, says how many clips of which classes, and the tables use
the clips of known classes.

Example:
    >>> from jsuff.app.study import load_config
    >>> cfg = load_config("study.toml")            # doctest: +SKIP
    >>> run_study(cfg, "runs/genre")               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import time
import tomllib
import typing
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from jsuff._files import LOCK_NAME, FolderLockedError, WriteError, atomic_write, folder_lock, write_text
from jsuff.app.versions import software_versions
from jsuff.audio import AudioError, load_audio, resample
from jsuff.domains import DOMAINS, FILLS, get_domain
from jsuff.explain import Explanation, explain_many
from jsuff.extract import MODES, ExtractConfig
from jsuff.models.base import CROP_MODES, PAD_MODES, InputPolicy, Model, ModelError, fit_length, load_model
from jsuff.progress import duration as _duration, emit
from jsuff.evaluate import COMPUTE_DTYPES, predict
from jsuff.search import SearchConfig

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class StudyError(ValueError):
    """A study that cannot run as configured; the message names the problem."""


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the clips come from and how they are cut.

    Attributes:
        path: a folder with one subfolder per class (GTZAN layout), or a CSV/TSV manifest with
            columns ``path``, ``label`` and optionally ``split`` (paths relative to the manifest).
        files: alternatively, an explicit list of files (no true labels).
        duration: seconds per clip; ``None`` keeps the shortest clip's length for all.
        sample_rate: the study's working rate; each model resamples from it to its own.
        crop: ``"start"`` or ``"center"`` for longer clips; pad: ``"zero"`` or ``"repeat"``.
        split: keep only manifest rows of this split.
        limit: at most this many clips (after sorting, evenly over classes when labelled).
    """

    path: str | None = None
    files: tuple[str, ...] = ()
    duration: float | None = 1.0
    sample_rate: int = 16000
    crop: str = "start"
    pad: str = "zero"
    split: str | None = None
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A whole study. ``jsuff study CONFIG.toml`` reads this from TOML (see :func:`load_config`)."""

    task: str
    models: tuple[ModelSpec, ...]
    data: DataConfig
    domain: str = "rfft"
    domain_options: tuple[tuple[str, Any], ...] = ()
    search: SearchConfig = SearchConfig()
    extract: ExtractConfig = ExtractConfig()
    seed: int = 0
    clips_per_batch: int = 8
    predict_batch: int = 32
    n_boot: int = 1000
    flat_earther_threshold: float = 3.5
    devices: int | None = None  # None: all visible devices
    out: str | None = None


# Ranges and choices of every config key, by table. The types come from the dataclasses themselves
# (SearchConfig, ExtractConfig, the domains ...), so a new field is type-checked without an entry
# here; the dataclasses keep their own checks as a backstop.
_GE1 = Field(ge=1)
_RULES: dict[str, dict[str, Any]] = {
    "study": {
        "task": Field(min_length=1),
        "seed": Field(ge=0, lt=2**32),  # jax.random.key keeps 32 bits: 2**32 would repeat seed 0
        "clips_per_batch": _GE1,
        "predict_batch": _GE1,
        "n_boot": _GE1,
        "flat_earther_threshold": Field(gt=0),
        "devices": _GE1,
        "out": Field(min_length=1),
    },
    "data": {
        "path": Field(min_length=1),
        "duration": Field(gt=0),
        "sample_rate": _GE1,
        "crop": Literal[CROP_MODES],
        "pad": Literal[PAD_MODES],
        "limit": _GE1,
    },
    "search": {
        "iters": _GE1,
        "tree_depth": Field(ge=0),
        "min_box_size": Field(ge=4),  # a box splits into 4 non-empty children
        "confidence_filter": Field(ge=0, le=1),
        "max_batch": _GE1,
        "compute_dtype": Literal[COMPUTE_DTYPES],
    },
    "extract": {
        "mode": Literal[MODES],
        "chunk_size": _GE1,
        "prefixes_per_call": _GE1,
        "tau": Field(ge=0, le=1),
    },
    "domain": {
        "fill": Literal[FILLS],
        "noise_level": Field(ge=0),
        "n_fft": Field(ge=2),
        "hop": _GE1,
        "segment": _GE1,
    },
}
# strict: no "2" for 2, no 1.5 or true for an integer; no NaN/Inf; unknown keys are errors
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def _constrained(t: Any, rule: Any) -> Any:
    """``t`` with ``rule`` (a pydantic ``Field`` or a replacing type such as a ``Literal``) applied;
    ``X | None`` keeps its ``None``; tuples are lists (what TOML gives)."""
    args = typing.get_args(t)
    if type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        return _constrained(inner, rule) | None
    if typing.get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis:
        t = list[args[0]]  # type: ignore[valid-type]
    if rule is None:
        return t
    return Annotated[t, rule] if isinstance(rule, FieldInfo) else rule


def _schema(cls: type, table: str, skip: Sequence[str] = ()) -> type[BaseModel]:
    """A strict pydantic model of the dataclass ``cls``'s fields, with ``_RULES[table]``."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ...
        default = list(default) if isinstance(default, tuple) else default
        fields[f.name] = (_constrained(hints[f.name], _RULES[table].get(f.name)), default)
    return create_model(f"[{table}]", __config__=_STRICT, **fields)


class _ModelEntry(BaseModel):
    model_config = _STRICT
    path: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)] | None = None


def _table_or_name(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


def _model_or_path(v: Any) -> Any:
    return {"path": v} if isinstance(v, str) else v


_DOMAIN_SCHEMAS = {name: _schema(cls, "domain") for name, cls in DOMAINS.items()}
_TABLE_SCHEMAS = {
    "data": _schema(DataConfig, "data"),
    "search": _schema(SearchConfig, "search"),
    "extract": _schema(ExtractConfig, "extract"),
}
# the top-level keys come from StudyConfig; the tables and the model list have their own shapes
_STUDY_SCHEMA = create_model(
    "study config",
    __base__=_schema(StudyConfig, "study", skip=("models", "data", "search", "extract", "domain", "domain_options")),
    models=(Annotated[list[Annotated[_ModelEntry, BeforeValidator(_model_or_path)]], Field(min_length=1)], ...),
    data=(_TABLE_SCHEMAS["data"], ...),
    search=(_TABLE_SCHEMAS["search"], ...),
    extract=(_TABLE_SCHEMAS["extract"], ...),
    domain=(Annotated[dict[str, Any], BeforeValidator(_table_or_name)], {"name": "rfft"}),
)


def _toml_value(v: Any) -> str:
    """``v`` as TOML writes it (``true``, ``"2"``, ``inf``), to quote it back in an error."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf")
    if isinstance(v, (str, int)):
        return json.dumps(v)
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _where(loc: Sequence[Any]) -> str:
    """``[table] key`` for a pydantic error location (``key`` alone at the top level)."""
    loc = [str(x) for x in loc if not (isinstance(x, str) and x.startswith("function-"))]
    if loc and loc[0] in (*_TABLE_SCHEMAS, "domain") and len(loc) > 1:
        return f"[{loc[0]}] {'.'.join(loc[1:])}"
    if loc and loc[0] == "models" and len(loc) > 1:
        return f"models[{loc[1]}]" + "".join(f".{x}" for x in loc[2:])
    return ".".join(loc) + " (top level)" if loc else "study config"


def _allowed(loc: Sequence[Any]) -> list[str]:
    table = str(loc[0]) if len(loc) > 1 else ""
    schema = _TABLE_SCHEMAS.get(table) or (_ModelEntry if table == "models" else _STUDY_SCHEMA)
    return list(schema.model_fields)


def _problems(e: ValidationError, prefix: Sequence[Any] = (), allowed: Sequence[str] | None = None) -> list[str]:
    """One line per problem: ``[table] key = value: what is expected``."""
    out = []
    for err in e.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        where = _where(loc)
        if err["type"] == "extra_forbidden":
            out.append(f"{where}: unknown key; allowed: {', '.join(sorted(allowed or _allowed(loc)))}")
        elif err["type"] == "missing":
            out.append(f"{where}: missing, and it has no default")
        else:
            msg = re.sub(r"a valid dictionary or instance of \S+", "a table", err["msg"].replace("Input should be", "expected"))
            if loc[0] == "models" and err["type"] == "list_type":
                msg += ' (a list of model folders: models = ["path/one", "path/two"])'
            elif loc[0] == "models" and err["type"] == "model_type":
                msg = "expected a model folder (a string) or a table with 'path' and an optional 'name'"
            if isinstance(err.get("input"), bool) and err["type"] in ("int_type", "float_type"):
                msg += " (true/false is not a number)"
            out.append(f"{where} = {_toml_value(err.get('input'))}: {msg}")
    return out


def _fail(problems: Sequence[str]) -> None:
    if problems:
        head = "study config: " if len(problems) == 1 else f"study config: {len(problems)} problems:\n  "
        raise StudyError(head + "\n  ".join(problems))


def _build(cls: type, values: Mapping[str, Any], table: str) -> Any:
    """The dataclass from validated values; its own checks (cross-field ones) name the table."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise StudyError(f"study config: [{table}] {e}") from None


def _validated_domain(table: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, Any], ...]]:
    options = dict(table)
    name = options.pop("name", "rfft")
    if name not in _DOMAIN_SCHEMAS:
        raise StudyError(
            f"study config: [domain] name = {_toml_value(name)}: expected one of {', '.join(map(repr, DOMAINS))}"
        )
    try:
        _DOMAIN_SCHEMAS[name].model_validate(options)
    except ValidationError as e:
        _fail(_problems(e, ("domain",), ["name", *_DOMAIN_SCHEMAS[name].model_fields]))
    try:
        get_domain(name, **options)  # the domain's own cross-field checks (hop <= n_fft, window name)
    except (TypeError, ValueError) as e:
        raise StudyError(f"study config: [domain] {e}") from None
    return name, tuple(sorted(options.items()))


def _resolve(base: Path, p: str) -> str:
    """``p`` as an absolute, normalised path (relative paths are taken from ``base``)."""
    q = Path(p).expanduser()
    return os.path.normpath(q if q.is_absolute() else base / q)


def config_from_dict(raw: Mapping[str, Any], base_dir: str | Path = ".") -> StudyConfig:
    """Build a :class:`StudyConfig` from the TOML structure, checking every key first.

    Every key's type and range is checked (strictly: ``iters = 1.5``, ``iters = true`` and
    ``clips_per_batch = "2"`` are errors, as are unknown keys) before anything else happens, and
    all problems are reported together, each as ``[table] key = value: what is expected``. Relative
    paths resolve at ``base_dir`` (the TOML file's folder for :func:`load_config`) and are stored
    absolute, so the config, and a resume of its study, do not depend on the current directory.

    The TOML looks like::

        task = "genre"
        seed = 0
        models = ["models/cnn", "models/ast"]          # or [[models]] name = "...", path = "..."
        [data]
        path = "clips/"
        duration = 1.0
        [search]
        iters = 20
        [extract]
        mode = "sufficient"

    Raises:
        StudyError: the list of problems.
    """
    base = Path(base_dir).expanduser().resolve()
    raw = {"data": {}, "search": {}, "extract": {}, **raw}
    try:
        v = _STUDY_SCHEMA.model_validate(raw)
    except ValidationError as e:
        _fail(_problems(e))
    specs = []
    for m in v.models:
        path = _resolve(base, m.path)
        specs.append(ModelSpec(m.name if m.name is not None else (Path(path).name or path), path))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise StudyError(f"study config: models: names must be unique, {dup} repeat (give each a 'name')")
    data_raw = v.data.model_dump()
    if data_raw["path"] is not None and data_raw["files"]:
        raise StudyError("study config: [data] has both 'path' and 'files'; give one of them")
    if data_raw["path"] is None and not data_raw["files"]:
        raise StudyError("study config: [data] needs 'path' (a class-folder tree or a manifest) or 'files'")
    if data_raw["path"] is not None:
        data_raw["path"] = _resolve(base, data_raw["path"])
    data_raw["files"] = [_resolve(base, f) for f in data_raw["files"]]
    domain_name, domain_options = _validated_domain(v.domain)
    top = {k: getattr(v, k) for k in _STUDY_SCHEMA.model_fields if k not in ("models", "data", "search", "extract", "domain")}
    if top["out"] is not None:
        top["out"] = _resolve(base, top["out"])
    return StudyConfig(
        models=tuple(specs),
        data=_build(DataConfig, data_raw, "data"),
        search=_build(SearchConfig, v.search.model_dump(), "search"),
        extract=_build(ExtractConfig, v.extract.model_dump(), "extract"),
        domain=domain_name,
        domain_options=domain_options,
        **top,
    )


def config_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """The TOML structure of ``cfg`` (what :func:`config_from_dict` reads back to an equal config)."""
    d = dataclasses.asdict(cfg)
    d.pop("domain_options")
    d["domain"] = {"name": cfg.domain, **dict(cfg.domain_options)}
    d["models"] = [{"name": m.name, "path": m.path} for m in cfg.models]
    d["data"]["files"] = list(cfg.data.files)
    return {k: v for k, v in d.items() if v is not None}


def validate_config(cfg: StudyConfig) -> StudyConfig:
    """Check a config built in Python (not read from TOML) exactly as :func:`config_from_dict` does,
    and return it with absolute paths (relative ones are taken from the current directory).

    Raises:
        StudyError: the list of problems, as ``[table] key = value: what is expected``.
    """
    return config_from_dict(config_to_dict(cfg), ".")


def load_config(path: str | Path) -> StudyConfig:
    """Read a study TOML file (relative paths resolve next to the file)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StudyError(f"cannot read the study config {path}: {e}") from None
    return config_from_dict(raw, path.parent)


def config_to_json(cfg: StudyConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d.pop("out", None)
    return json.loads(json.dumps(d, default=str))


def fingerprint(cfg: StudyConfig) -> str:
    """What must match for ``resume`` to reuse results: everything but the output directory."""
    return hashlib.sha256(json.dumps(config_to_json(cfg), sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
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
        raise StudyError(_none_usable(failed))
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
        raise StudyError(_none_usable(failed))
    keep = [i for i in range(len(fitted)) if i not in silent]
    return np.stack([fitted[i] for i in keep]).astype(np.float32), [kept[i] for i in keep], failed


def _none_usable(failed: Sequence[tuple[str, str]]) -> str:
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


# ----------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------


def make_mesh(devices: int | None = None) -> jax.sharding.Mesh | None:
    """A 1-D mesh over the first ``devices`` visible devices (``None``: all); no mesh for one."""
    devs = jax.devices()
    if devices is not None:
        if devices < 1 or devices > len(devs):
            raise StudyError(f"devices must be between 1 and {len(devs)}, got {devices}")
        devs = devs[:devices]
    if len(devs) == 1:
        return None
    return jax.sharding.Mesh(np.asarray(devs), ("batch",))


def predict_logits(
    model: Model, waveforms: np.ndarray, *, batch: int = 32, mesh: jax.sharding.Mesh | None = None
) -> np.ndarray:
    """Logits of ``model`` on ``waveforms[N, T]`` in fixed-size batches (one compile per shape).

    With a mesh, each batch is split over its devices along the batch axis.
    """
    if waveforms.shape[0] == 0:
        return np.zeros((0, model.num_classes), np.float32)
    return np.asarray(predict(model.apply, model.params, waveforms, batch=batch, mesh=mesh), np.float32)


# ----------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------


def save_npz(path: Path, **arrays: Any) -> None:
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


save_text = write_text  # the study's name for it (report.py imports it from here)


def save_csv(path: Path, frame: Any) -> None:
    save_text(path, frame.to_csv(index=False))


class DamagedFileError(StudyError):
    """A file of a study directory that cannot be read back; the message names it and the fix."""


def _damaged(path: Path, why: str) -> DamagedFileError:
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
        raise _damaged(Path(path), f"{type(e).__name__}: {e}") from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise _damaged(Path(path), f"it has no {', '.join(missing)}")
    return out


def _check_shape(path: Path, name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if arr.shape != shape:
        raise _damaged(path, f"{name} has shape {list(arr.shape)}, this study needs {list(shape)}")
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


# ----------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------

_LOGGER = logging.getLogger("jsuff.study")


def _emit(msg: str) -> None:
    """One console line: through the ``jsuff.study`` logger when the application has set up
    logging for INFO, else on stderr (so a plain ``jsuff study | tee log`` shows it too)."""
    emit(_LOGGER, msg)


class Progress:
    """Progress of a long step as ``done/total`` with an ETA.

    On a terminal: a tqdm bar. Off a terminal (a pipe, ``tee``, nohup, a batch scheduler): a line
    such as ``explaining: 8/40 clips (20%), 1m05s elapsed, ETA 4m20s`` when the step starts, after
    the first unit, then at most every ``interval`` seconds, and when the step is done (see
    :func:`_emit` for where lines go). ``quiet=True`` silences both; ``None`` or ``False``: whichever
    suits stderr.

    Example:
        >>> bar = Progress(4, "explaining", quiet=True)
        >>> bar.update(4); bar.close(); bar.done
        4
    """

    def __init__(self, total: int, desc: str, quiet: bool | None, *, unit: str = "clips",
                 interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.done = int(total), desc, unit, 0
        self._interval, self._clock = interval, clock
        self._t0 = clock()
        self._shown: int | None = None  # `done` at the last line
        self._last = self._t0
        self._bar = None
        self._lines = False
        if quiet or self.total <= 0:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit.rstrip("s"), leave=False)
        else:
            self._lines = True
            self._line()

    def update(self, n: int) -> None:
        first = self.done == 0
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and (first or self.done >= self.total or self._clock() - self._last >= self._interval):
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines and self._shown != self.done:
            self._line()

    def _line(self) -> None:
        now = self._clock()
        elapsed = now - self._t0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        if self.done:
            text += f", {_duration(elapsed)} elapsed"
            if self.done < self.total:
                text += f", ETA {_duration(elapsed / self.done * (self.total - self.done))}"
        _emit(text)
        self._shown, self._last = self.done, now


def _log(quiet: bool | None, msg: str) -> None:
    if not quiet:
        _emit(msg)


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


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


def _label_maps(models: Sequence[Model], names: Sequence[str]) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """The study's label order (the first model's) and, per model, its index -> study index map."""
    ref = models[0].labels
    maps = []
    for m, name in zip(models, names, strict=True):
        if sorted(m.labels) != sorted(ref) or len(set(m.labels)) != len(m.labels):
            raise StudyError(
                f"model {name!r} has labels {list(m.labels)}, but the study's first model has "
                f"{list(ref)}: all models of a study must share one set of label names"
            )
        maps.append(np.asarray([ref.index(lbl) for lbl in m.labels], np.int32))
    return tuple(ref), maps


def _to_model_rate(x: np.ndarray, sr: int, model: Model) -> np.ndarray:
    y = resample(x, sr, model.sample_rate) if sr != model.sample_rate else x
    return fit_length(y, model.input).astype(np.float32)


def _clip_keys(seed: int, model_index: int, clip_index: np.ndarray) -> jax.Array:
    base = jax.random.fold_in(jax.random.key(seed), model_index)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(clip_index, jnp.uint32))


def run_study(
    cfg: StudyConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    quiet: bool | None = None,
) -> StudyArrays:
    """Run (or continue) a study; returns its arrays. The tables are under ``out/tables``.

    The output directory must be new or empty (a fresh run), or hold a study of this config
    (``resume=True``); a folder with other files and no ``study.json`` is refused, so results are
    never mixed with someone else's files. The directory is locked while the study runs (a second
    run on it fails at once, naming the process that holds it).

    Raises:
        StudyError: a bad config, a model that fails to load, an unusable data set, an output
            directory from another config or with foreign files, data that changed under a
            resumed study, or a locked directory (all before any work starts); a file that cannot
            be written (disk full, read-only) or a damaged unit file, naming it (what was done
            before is kept, and ``--resume`` continues).
    """
    if out is None and cfg.out is None:
        raise StudyError("no output directory: pass --out or set 'out' in the config")
    out_dir = Path(out if out is not None else cfg.out)  # type: ignore[arg-type]
    t0 = time.perf_counter()

    # Everything that can fail on input is checked before any work is done.
    cfg = validate_config(cfg)
    models = []
    for spec in cfg.models:
        try:
            models.append(load_model(spec.path))
        except ModelError as e:
            raise StudyError(f"model {spec.name!r} ({spec.path}) failed to load: {e}") from None
    names = [s.name for s in cfg.models]
    slugs = model_slugs(names)
    label_names, maps = _label_maps(models, names)
    domain = get_domain(cfg.domain, **dict(cfg.domain_options))
    if out_dir.exists() and not out_dir.is_dir():
        raise StudyError(f"--out {out_dir} is a file, not a directory")
    if out_dir.is_dir():
        _check_out_dir(out_dir, cfg, resume)  # a refused folder gets not even a lock file
    try:
        with folder_lock(out_dir, "jsuff study"):
            _check_out_dir(out_dir, cfg, resume)  # again: it may have changed before the lock
            return _run_steps(cfg, out_dir, models, names, slugs, label_names, maps, domain, quiet, t0)
    except FolderLockedError as e:
        raise StudyError(str(e)) from None
    except WriteError as e:
        raise StudyError(
            f"{e.strerror}. Everything finished before is kept in {out_dir}: make room (or make it "
            "writable) and rerun with --resume to continue."
        ) from None


def _read_study_json(meta_path: Path) -> dict[str, Any]:
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


def _check_out_dir(out_dir: Path, cfg: StudyConfig, resume: bool) -> None:
    meta_path = out_dir / "study.json"
    if meta_path.exists():
        prev = _read_study_json(meta_path)
        if not resume:
            raise StudyError(f"{out_dir} already holds a study; pass --resume to continue it or choose another --out")
        if prev.get("fingerprint") != fingerprint(cfg):
            raise StudyError(f"{out_dir} holds a study with a different config; cannot resume it with this one")
        return
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise StudyError(
            f"{out_dir} is not empty ({shown}) and holds no study.json: refusing to "
            f"{'resume' if resume else 'start a study'} there, which could mix its files with the "
            "study's results or overwrite them. Choose a new or empty --out."
        )


def _silent_at_model_rates(clips: np.ndarray, sr: int, models: Sequence[Model], names: Sequence[str]) -> dict[int, str]:
    """Clips that become all zeros at some model's rate and input length: nothing to explain."""
    out: dict[int, str] = {}
    for model, name in zip(models, names, strict=True):
        for i, c in enumerate(clips):
            if i not in out and not np.any(_to_model_rate(c, sr, model)):
                out[i] = f"all samples are zero as model {name!r} hears it ({model.sample_rate} Hz): nothing to explain"
    return out


def _load_data(out_dir: Path, cfg: StudyConfig, models: Sequence[Model], names: Sequence[str], quiet: bool | None):
    """Step 1: the clips (read once, then reused from ``data/clips.npz`` while the data is the same)."""
    clips_path = out_dir / "data" / "clips.npz"
    items = discover(cfg.data)
    if clips_path.exists():
        z = load_npz(clips_path, ("waveforms", "paths", "labels"))
        if "source_paths" in z:
            changes = data_changes(z, items)
            if changes:
                raise StudyError(
                    f"the data changed since this study read it into {clips_path}: {'; '.join(changes)}. "
                    "Its results belong to the old clips, so resume refuses to mix them with new ones: "
                    "restore the data, or run the study into a new --out."
                )
    else:
        record = data_record(items)  # before reading: a file changed meanwhile shows up on resume
        clips, kept, failed = load_clips(items, cfg.data)
        silent = _silent_at_model_rates(clips, cfg.data.sample_rate, models, names)
        failed += [(kept[i].path, why) for i, why in sorted(silent.items())]
        keep = np.asarray([i for i in range(len(kept)) if i not in silent], np.int64)
        if keep.size == 0:
            raise StudyError(_none_usable(failed))
        clips, kept = clips[keep], [kept[i] for i in keep]
        save_npz(
            clips_path, waveforms=clips, paths=np.asarray([it.path for it in kept], dtype=str),
            labels=np.asarray([it.label or "" for it in kept], dtype=str),
            failed_paths=np.asarray([p for p, _ in failed], dtype=str),
            failed_reasons=np.asarray([r for _, r in failed], dtype=str), **record,
        )
        z = load_npz(clips_path)
    failed = [(str(p), str(r)) for p, r in zip(z.get("failed_paths", []), z.get("failed_reasons", []), strict=True)]
    if "failed_paths" in z:  # (studies from before it was recorded there keep their failures.csv)
        _write_failures(out_dir, failed)
    if failed:
        _log(quiet, f"{len(failed)} data file(s) left out (listed in {out_dir / 'data' / 'failures.csv'}):")
        for p, r in failed[:20]:
            _log(quiet, f"  {p}: {r}")
        if len(failed) > 20:
            _log(quiet, f"  ... and {len(failed) - 20} more")
    return z["waveforms"], [str(p) for p in z["paths"]], [str(s) for s in z["labels"]]


def _write_failures(out_dir: Path, failed: Sequence[tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows(failed)
    path = out_dir / "data" / "failures.csv"
    if not path.exists() or path.read_text() != buf.getvalue():
        save_text(path, buf.getvalue())


def _check_grid(models: Sequence[Model], names: Sequence[str], domain: Any, cfg: StudyConfig, n: int) -> None:
    """Each model's grid must have at least ``min_box_size`` cells (else the search cannot start)."""
    for model, name in zip(models, names, strict=True):
        length = _to_model_rate(np.ones(n, np.float32), cfg.data.sample_rate, model).shape[0]
        cells = int(np.prod(domain.grid_shape(length)))
        if cells < cfg.search.min_box_size:
            raise StudyError(
                f"model {name!r} hears {length} samples, a {domain.name} grid of {cells} cells: fewer than "
                f"[search] min_box_size = {cfg.search.min_box_size}; lengthen [data] duration or lower min_box_size"
            )


def _run_steps(cfg, out_dir, models, names, slugs, label_names, maps, domain, quiet, t0) -> StudyArrays:
    """Steps 1-5 of :func:`run_study`, in a checked, locked output directory."""
    record = {
        "fingerprint": fingerprint(cfg),
        "config": config_to_json(cfg),
        # what the report needs without the model folders (which may have moved since)
        "models": [
            {"name": nm, "slug": slugs[nm], "path": spec.path, "sample_rate": int(m.sample_rate)}
            for nm, spec, m in zip(names, cfg.models, models, strict=True)
        ],
    }
    save_text(out_dir / "study.json", json.dumps(record, indent=2) + "\n")
    mesh = make_mesh(cfg.devices)

    # 1. data
    clips, paths, item_labels = _load_data(out_dir, cfg, models, names, quiet)
    n = clips.shape[0]
    _check_grid(models, names, domain, cfg, clips.shape[1])
    true = np.asarray([label_names.index(lbl) if lbl in label_names else -1 for lbl in item_labels], np.int32)
    unknown = unknown_classes(item_labels, label_names)
    if unknown:
        _log(quiet, f"{sum(unknown.values())} clip(s) have a class no model has ("
             + ", ".join(f"{c!r}: {k}" for c, k in unknown.items())
             + "): they get no true label and are left out of the tables, which use clips of known classes")
    sr = cfg.data.sample_rate
    _log(quiet, f"study {cfg.task!r}: {len(models)} models x {n} clips -> {out_dir}")

    # 2. baselines: originals and the empty signal
    original = np.zeros((len(models), n), np.int32)
    empty = np.zeros(len(models), np.int32)
    for mi, (model, name) in enumerate(zip(models, names, strict=True)):
        path = out_dir / "models" / slugs[name] / "original.npz"
        if not path.exists():
            xs = np.stack([_to_model_rate(c, sr, model) for c in clips])
            logits = predict_logits(model, xs, batch=cfg.predict_batch, mesh=mesh)
            empty_wave = np.asarray(domain.synthesize(domain.analyze(jnp.asarray(xs[0])), jnp.zeros(domain.grid_shape(xs.shape[1]), bool)))
            empty_logits = predict_logits(model, empty_wave[None].astype(np.float32), batch=1)
            save_npz(path, logits=logits, empty_logits=empty_logits[0])
        z = load_npz(path, ("logits", "empty_logits"))
        c = model.num_classes
        original[mi] = maps[mi][_check_shape(path, "logits", z["logits"], (n, c)).argmax(-1)]
        empty[mi] = maps[mi][int(_check_shape(path, "empty_logits", z["empty_logits"], (c,)).argmax())]

    # 3. explanations, batched across clips, one file per batch
    bsz = cfg.clips_per_batch
    n_batches = -(-n // bsz)
    todo = [
        (mi, b)
        for mi in range(len(models))
        for b in range(n_batches)
        if not (out_dir / "models" / slugs[names[mi]] / "explain" / f"batch_{b:05d}.npz").exists()
    ]
    bar = Progress(sum(min(n, (b + 1) * bsz) - b * bsz for _, b in todo), "explaining", quiet)
    t_explain = time.perf_counter()
    for mi, b in todo:
        model = models[mi]
        idx = np.arange(b * bsz, min(n, (b + 1) * bsz))
        xs = np.stack([_to_model_rate(clips[i], sr, model) for i in idx])
        exps = explain_many(
            model.apply,
            model.params,
            jnp.asarray(xs),
            domain=domain,
            config=cfg.search,
            extract=cfg.extract,
            keys=_clip_keys(cfg.seed, mi, idx),
            quiet=True,  # the study reports its own progress
            mesh=mesh,
        )
        save_npz(out_dir / "models" / slugs[names[mi]] / "explain" / f"batch_{b:05d}.npz", **_pack(exps, idx))
        bar.update(len(idx))
    bar.close()
    explain_seconds = time.perf_counter() - t_explain

    per_model = [_unpack_model(out_dir / "models" / slugs[nm] / "explain", n) for nm in names]

    # 4. transfer labels: every model on every model's sufficient signals
    labels = np.zeros((len(models), len(models), n), np.int32)
    for fi, f in enumerate(models):
        path = out_dir / "transfer" / f"{slugs[names[fi]]}.npz"
        if not path.exists():
            suff = per_model[fi]["sufficient"]
            row = np.zeros((len(models), n), np.int32)
            for gi, g in enumerate(models):
                xs = np.stack([_to_model_rate(s, f.sample_rate, g) for s in suff])
                row[gi] = maps[gi][predict_logits(g, xs, batch=cfg.predict_batch, mesh=mesh).argmax(-1)]
            save_npz(path, labels=row)
        labels[fi] = _check_shape(path, "labels", load_npz(path, ("labels",))["labels"], (len(models), n))

    arrays = StudyArrays(
        model_names=tuple(names),
        label_names=label_names,
        paths=tuple(paths),
        true=true,
        original=original,
        empty=empty,
        labels=labels,
        valid=np.stack([pm["verified"] for pm in per_model]),
        size_fraction=np.stack([pm["size_fraction"] for pm in per_model]),
        energy_fraction=np.stack([pm["energy_fraction"] for pm in per_model]),
        queries=np.stack([pm["queries"] for pm in per_model]),
        trivial=np.stack([pm["empty_is_target"] for pm in per_model]),
    )
    save_npz_if_changed(
        out_dir / "arrays.npz", **{k: np.asarray(v) for k, v in dataclasses.asdict(arrays).items()}
    )

    # 5. statistics
    write_tables(arrays, out_dir / "tables", cfg)
    summary = {
        "task": cfg.task,
        "models": list(names),
        "clips": int(n),
        "failed_files": _count_failures(out_dir),
        "unknown_class_clips": unknown,
        "explain_seconds_this_run": round(explain_seconds, 2),
        "total_seconds_this_run": round(time.perf_counter() - t0, 2),
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "versions": software_versions(),
    }
    save_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return arrays


def _count_failures(out_dir: Path) -> int:
    p = out_dir / "data" / "failures.csv"
    if not p.exists():
        return 0
    with open(p, newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


def _pack(exps: Sequence[Explanation], idx: np.ndarray) -> dict[str, np.ndarray]:
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


_PACK_KEYS = ("index", "target", "target_confidence", "mask", "responsibility", "sufficient", "verified",
              "minimal", "queries", "size_fraction", "energy_fraction", "empty_is_target")


def _unpack_model(folder: Path, n: int) -> dict[str, np.ndarray]:
    parts = []
    for p in sorted(folder.glob("batch_*.npz")):
        z = load_npz(p, _PACK_KEYS)
        rows = {k: v.shape[:1] for k, v in z.items()}
        if len(set(rows.values())) != 1:
            raise _damaged(p, f"its arrays disagree on the number of clips: {rows}")
        parts.append(z)
    if not parts:
        raise StudyError(f"{folder} holds no explanation batches; rerun with --resume to compute them")
    try:
        merged = {k: np.concatenate([p[k] for p in parts]) for k in _PACK_KEYS}
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
    meta = _read_study_json(Path(out_dir) / "study.json")
    if not isinstance(meta.get("models"), list):
        cfg_models = meta["config"].get("models", [])
        slugs = model_slugs([m["name"] for m in cfg_models])
        meta["models"] = [{**m, "slug": slugs[m["name"]], "sample_rate": None} for m in cfg_models]
    # the slugs are recomputed, never taken from the file: a name cannot become a path
    slugs = model_slugs([m["name"] for m in meta["models"]])
    meta["models"] = [{**m, "slug": slugs[m["name"]]} for m in meta["models"]]
    return meta


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def compute_tables(
    arrays: StudyArrays,
    cfg: StudyConfig | None = None,
    *,
    include_trivial: bool = False,
    interval: str = "clopper_pearson",
) -> dict[str, Any]:
    """The study's statistics as DataFrames, computed by the pure statistics functions.

    A source clip counts when f's explanation was verified (``valid``), its true label is known
    (when the study has true labels) and, unless ``include_trivial``, it is not *trivial* (the
    empty signal already gets f's label: its sufficient signal is silence). Every table says per
    model how many valid clips were trivial and which label silence gets (docs/statistics.md).

    Args:
        arrays: the study's arrays.
        cfg: its config (bootstrap resamples, seed, flat-earther threshold).
        include_trivial: count trivial clips as transfer sources (for comparison).
        interval: the transfer intervals (:data:`jsuff.transfer.INTERVALS`).
    """
    import pandas as pd

    from jsuff.info import classification_metrics, pairwise_information
    from jsuff.transfer import flat_earthers, transfer_analysis

    n_boot = cfg.n_boot if cfg else 1000
    seed = cfg.seed if cfg else 0
    threshold = cfg.flat_earther_threshold if cfg else 3.5
    names = list(arrays.model_names)
    labels = list(arrays.label_names)
    c = len(labels)
    has_true = bool(np.any(arrays.true >= 0))
    # -1 = a class no model has: such clips are out of `valid` below, the 0 only holds their place
    true = np.where(arrays.true >= 0, arrays.true, 0) if has_true else None
    clip_ok = arrays.true >= 0 if has_true else np.ones_like(arrays.true, bool)
    valid = arrays.valid & clip_ok[None, :] if has_true else arrays.valid
    trivial = arrays.trivial & valid
    counted = valid if include_trivial else valid & ~trivial
    per_model = {
        "trivial": trivial.sum(axis=1),
        "silence_label": [labels[k] for k in arrays.empty],
        "trivial_counted": include_trivial,
    }
    common = dict(trivial=arrays.trivial, include_trivial=include_trivial, empty=arrays.empty,
                  num_classes=c, model_names=names, n_boot=n_boot, seed=seed)
    tables: dict[str, Any] = {}
    if counted.any() and len(names) >= 2:  # transfer needs a source and a second model to listen
        result = transfer_analysis(arrays.labels, arrays.original, valid=valid, true=true,
                                   interval=interval, **common)
        tables["pairs"] = result.pairs_frame(labels)
        tables["models"] = result.models_frame(labels)
        tables["task"] = result.task_frame(labels)
        if len(names) >= 3:  # outlier statistics need at least three models to compare
            tables["flat_earthers"] = flat_earthers(result, threshold=threshold)
        tables["information"] = pairwise_information(
            arrays.labels, arrays.original, true=true, valid=valid, label_names=labels, **common
        )
    if has_true:
        tables["metrics"] = classification_metrics(
            arrays.original[:, clip_ok], arrays.true[clip_ok], num_classes=c, model_names=names,
            n_boot=n_boot, seed=seed,
        ).assign(**per_model)
    tables["baselines"] = pd.DataFrame(
        {
            "model": names,
            "empty_label": [arrays.label_names[i] for i in arrays.empty],
            "sufficient_found": arrays.valid.mean(axis=1),
            "trivial_fraction": arrays.trivial.mean(axis=1),
            "trivial": per_model["trivial"],
            "trivial_counted": include_trivial,
            "mean_size_fraction": _masked_mean(arrays.size_fraction, arrays.valid),
            "mean_energy_fraction": _masked_mean(arrays.energy_fraction, arrays.valid),
            "mean_queries": arrays.queries.mean(axis=1),
            "n_clips": np.full(len(names), arrays.valid.shape[1]),
        }
    )
    rows = []
    for fi, f in enumerate(names):
        for i, p in enumerate(arrays.paths):
            rows.append(
                {
                    "model": f,
                    "clip": i,
                    "path": p,
                    "true": arrays.label_names[arrays.true[i]] if arrays.true[i] >= 0 else "",
                    "original": arrays.label_names[arrays.original[fi, i]],
                    "verified": bool(arrays.valid[fi, i]),
                    "trivial": bool(arrays.trivial[fi, i]),
                    "size_fraction": float(arrays.size_fraction[fi, i]),
                    "energy_fraction": float(arrays.energy_fraction[fi, i]),
                    "queries": int(arrays.queries[fi, i]),
                    **{f"label_by_{g}": arrays.label_names[arrays.labels[fi, gi, i]] for gi, g in enumerate(names)},
                }
            )
    tables["explanations"] = pd.DataFrame(rows)
    return tables


def _masked_mean(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    cnt = m.sum(axis=1)
    return np.where(cnt > 0, (x * m).sum(axis=1) / np.maximum(cnt, 1), np.nan)


def write_tables(arrays: StudyArrays, folder: Path, cfg: StudyConfig | None = None, **options: Any) -> dict[str, Any]:
    """Compute the tables (``options``: see :func:`compute_tables`) and write them as CSV files."""
    tables = compute_tables(arrays, cfg, **options)
    for name, frame in tables.items():
        save_csv(folder / f"{name}.csv", frame)
    return tables


def read_tables(out_dir: str | Path) -> dict[str, Any]:
    import pandas as pd

    folder = Path(out_dir) / "tables"
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}


def iter_explanations(out_dir: str | Path, model: str) -> Iterable[dict[str, np.ndarray]]:
    """Yield each stored explanation batch of the model named ``model`` (for figures and listening)."""
    slugs = {m["name"]: m["slug"] for m in study_record(out_dir)["models"]}
    if model not in slugs:
        raise StudyError(f"{out_dir} has no model named {model!r}; it has {sorted(slugs)}")
    for p in sorted((Path(out_dir) / "models" / slugs[model] / "explain").glob("batch_*.npz")):
        yield load_npz(p, _PACK_KEYS)
