"""A study's configuration: the TOML schema, its strict checks and the config's fingerprint.

A study config (``jsuff study STUDY.toml``) is read into a frozen :class:`StudyConfig`. Every key's
type and range is checked before any work, strictly (``iters = 1.5``, ``iters = true``,
``clips_per_batch = "2"``, an unknown key are errors), and all problems are reported together as
``[table] key = value: what is expected`` in one :class:`StudyError`. Relative paths resolve next to
the TOML file and are stored absolute. :func:`fingerprint` is what a resumed study must match.

Example:
    >>> cfg = config_from_dict({"task": "t", "models": ["/m/a", "/m/b"], "data": {"path": "/clips"}})
    >>> [m.name for m in cfg.models], cfg.search.iters, cfg.data.duration
    (['a', 'b'], 20, 1.0)
    >>> config_from_dict({"task": "t", "models": ["/m/a"], "data": {"path": "/c"}, "seed": -1})
    Traceback (most recent call last):
    ...
    jsuff.app.config.StudyError: study config: seed (top level) = -1: expected greater than or equal to 0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from jsuff.domains import DOMAINS, FILLS, get_domain
from jsuff.evaluate import COMPUTE_DTYPES
from jsuff.extract import MODES, ExtractConfig
from jsuff.labels import LabelView, LabelViewError
from jsuff.models.base import CROP_MODES, PAD_MODES
from jsuff.search import SearchConfig

__all__ = [
    "DataConfig",
    "ModelSpec",
    "StudyConfig",
    "StudyError",
    "config_from_dict",
    "config_to_dict",
    "config_to_json",
    "fingerprint",
    "labels_error",
    "load_config",
    "validate_config",
]


class StudyError(ValueError):
    """A study that cannot run as configured; the message names the problem."""


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
    labels: LabelView | None = None  # the [labels] table; None: all models share one label set


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
        "round_iters": _GE1,
        "stop_cells": _GE1,
        "stop_overlap": Field(gt=0, le=1),
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


class _LabelsTable(BaseModel):
    """The types of ``[labels]``; :class:`jsuff.labels.LabelView` checks the rest (names, repeats)."""

    model_config = _STRICT
    classes: Annotated[list[str], Field(min_length=2)]
    map: dict[str, dict[str, list[str]]] = {}


def _table_or_name(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


def _model_or_path(v: Any) -> Any:
    return {"path": v} if isinstance(v, str) else v


_DOMAIN_SCHEMAS = {name: _schema(cls, "domain") for name, cls in DOMAINS.items()}
_TABLE_SCHEMAS = {
    "data": _schema(DataConfig, "data"),
    "search": _schema(SearchConfig, "search"),
    "extract": _schema(ExtractConfig, "extract"),
    "labels": _LabelsTable,
}
# the top-level keys come from StudyConfig; the tables and the model list have their own shapes
_STUDY_SCHEMA = create_model(
    "study config",
    __base__=_schema(StudyConfig, "study", skip=("models", "data", "search", "extract", "domain", "domain_options", "labels")),
    models=(Annotated[list[Annotated[_ModelEntry, BeforeValidator(_model_or_path)]], Field(min_length=1)], ...),
    data=(_TABLE_SCHEMAS["data"], ...),
    search=(_TABLE_SCHEMAS["search"], ...),
    extract=(_TABLE_SCHEMAS["extract"], ...),
    domain=(Annotated[dict[str, Any], BeforeValidator(_table_or_name)], {"name": "rfft"}),
    labels=(_LabelsTable | None, None),
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
    if len(loc) > 2 and loc[:2] == ["labels", "map"]:  # [labels.map.NAME] class.0
        table = ".".join(x if re.fullmatch(r"[A-Za-z0-9_-]+", x) else json.dumps(x) for x in loc[:3])
        return f"[{table}]" + (f" {'.'.join(loc[3:])}" if len(loc) > 3 else "")
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
    top = {k: getattr(v, k) for k in _STUDY_SCHEMA.model_fields if k not in ("models", "data", "search", "extract", "domain", "labels")}
    if top["out"] is not None:
        top["out"] = _resolve(base, top["out"])
    return StudyConfig(
        models=tuple(specs),
        data=_build(DataConfig, data_raw, "data"),
        search=_build(SearchConfig, v.search.model_dump(), "search"),
        extract=_build(ExtractConfig, v.extract.model_dump(), "extract"),
        domain=domain_name,
        domain_options=domain_options,
        labels=_label_view(v.labels, names),
        **top,
    )


def _label_view(table: _LabelsTable | None, names: Sequence[str]) -> LabelView | None:
    """The study's :class:`LabelView` from its type-checked ``[labels]`` table (what can be checked
    without the models: names, repeats, tables for models the study does not have)."""
    if table is None:
        return None
    try:
        view = LabelView.from_toml(table.model_dump())
        view.check_models(names)  # a study's name for a model: its 'name', or its folder's name
    except LabelViewError as e:
        raise StudyError(labels_error(e)) from None
    return view


def labels_error(e: LabelViewError) -> str:
    """A label-view error as a study-config problem (``study config: [labels] ...``)."""
    msg = str(e)
    return "study config: " + (msg if msg.startswith("[labels") else f"[labels] {msg}")


def config_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """The TOML structure of ``cfg`` (what :func:`config_from_dict` reads back to an equal config)."""
    d = dataclasses.asdict(cfg)
    d.pop("domain_options")
    d["domain"] = {"name": cfg.domain, **dict(cfg.domain_options)}
    d["models"] = [{"name": m.name, "path": m.path} for m in cfg.models]
    d["data"]["files"] = list(cfg.data.files)
    d["labels"] = cfg.labels.to_toml() if cfg.labels is not None else None
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
    # the view as its TOML; absent without one, so studies without [labels] keep their fingerprint
    if cfg.labels is None:
        d.pop("labels")
    else:
        d["labels"] = cfg.labels.to_toml()
    return json.loads(json.dumps(d, default=str))


def fingerprint(cfg: StudyConfig) -> str:
    """What must match for ``resume`` to reuse results: everything but the output directory."""
    return hashlib.sha256(json.dumps(config_to_json(cfg), sort_keys=True).encode()).hexdigest()[:16]
