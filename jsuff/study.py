"""Studies: many models × many clips, resumable and sharded.

A study points jsuff at converted models and a labelled set of clips and computes, in order:

1. every model's label on every original clip and on the empty signal (the baselines);
2. every model's explanation (minimal sufficient signal) for every clip, batched across clips;
3. every model's label on every other model's sufficient signals (the transfer labels);
4. the statistics (:mod:`jsuff.transfer`, :mod:`jsuff.info`) as tidy tables.

Each unit of work is written as soon as it is done, atomically (temporary file + rename), under the
output directory::

    study.json                    the resolved config and its fingerprint
    data/clips.npz                clips at the study rate, their paths and labels
    data/failures.csv             files that could not be read, with the reason
    models/<name>/original.npz    logits on the originals and on the empty signal
    models/<name>/explain/batch_00000.npz   explanations, one file per batch of clips
    transfer/<name>.npz           labels[g, i] of every model g on <name>'s sufficient signals
    tables/*.csv                  statistics
    summary.json                  headline numbers

``resume=True`` reuses every file already there, so a killed run continues without repeating or
losing work; the per-clip PRNG keys depend only on (seed, model, clip), never on batching, so a
resumed run gives the same results as an uninterrupted one.

Labels across models: every model of a study must have the same set of label names (the task's
classes); their order may differ and is mapped onto the first model's order. True labels are
matched to those names; a clip whose label is not among them has no true label (``-1``).

Example:
    >>> from jsuff.study import load_config
    >>> cfg = load_config("study.toml")            # doctest: +SKIP
    >>> run_study(cfg, "runs/genre")               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsuff._files import atomic_write, write_text
from jsuff.audio import AudioError, load_audio, resample
from jsuff.domains import get_domain
from jsuff.explain import Explanation, explain_many
from jsuff.extract import ExtractConfig
from jsuff.models.base import InputPolicy, Model, ModelError, fit_length, load_model
from jsuff.evaluate import predict
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


def _from_mapping(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise StudyError(f"{where}: {e}") from None


def config_from_dict(raw: Mapping[str, Any], base_dir: str | Path = ".") -> StudyConfig:
    """Build a :class:`StudyConfig` from the TOML structure; relative paths resolve at ``base_dir``.

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
    """
    base = Path(base_dir)
    raw = dict(raw)
    if "task" not in raw:
        raise StudyError("study config needs a 'task' name")
    models_raw = raw.pop("models", None)
    if not models_raw:
        raise StudyError("study config needs a non-empty 'models' list")
    specs = []
    for m in models_raw:
        if isinstance(m, str):
            p = m
            name = Path(m).name
        elif isinstance(m, Mapping) and "path" in m:
            p = m["path"]
            name = m.get("name", Path(p).name)
        else:
            raise StudyError(f"each model entry must be a path or a table with 'path', got {m!r}")
        specs.append(ModelSpec(str(name), str((base / p) if not Path(p).is_absolute() else p)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise StudyError(f"model names must be unique, got {names}")
    data_raw = dict(raw.pop("data", {}))
    if data_raw.get("path") is not None and not Path(data_raw["path"]).is_absolute():
        data_raw["path"] = str(base / data_raw["path"])
    if "files" in data_raw:
        data_raw["files"] = [str(f if Path(f).is_absolute() else base / f) for f in data_raw["files"]]
    data = _from_mapping(DataConfig, data_raw, "[data]")
    if data.path is None and not data.files:
        raise StudyError("[data] needs 'path' (a class-folder tree or a manifest) or 'files'")
    search = _from_mapping(SearchConfig, raw.pop("search", {}), "[search]")
    extract = _from_mapping(ExtractConfig, raw.pop("extract", {}), "[extract]")
    domain_raw = raw.pop("domain", "rfft")
    if isinstance(domain_raw, Mapping):
        domain_raw = dict(domain_raw)
        domain_name = domain_raw.pop("name", "rfft")
        domain_options = tuple(sorted(domain_raw.items()))
    else:
        domain_name, domain_options = str(domain_raw), ()
    get_domain(domain_name, **dict(domain_options))  # fail early on a bad domain
    if raw.get("out") is not None and not Path(raw["out"]).is_absolute():
        raw["out"] = str(base / raw["out"])
    rest = _from_mapping(
        StudyConfig,
        {**raw, "models": (), "data": data},
        "study config",
    )
    return dataclasses.replace(
        rest, models=tuple(specs), search=search, extract=extract, domain=domain_name, domain_options=domain_options
    )


def load_config(path: str | Path) -> StudyConfig:
    """Read a study TOML file (relative paths resolve next to the file)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path} is not valid TOML: {e}") from None
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
    text = path.read_text()
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" or "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
    if not rows or "path" not in rows[0]:
        raise StudyError(f"manifest {path} needs a header with a 'path' column (and 'label', optional 'split')")
    out = []
    for r in rows:
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
    that could not be read (those never stop the study).
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
        raise StudyError("none of the data files could be read: " + "; ".join(f"{p}: {r}" for p, r in failed[:5]))
    n = int(round(data.duration * data.sample_rate)) if data.duration else min(len(w) for w in waves)
    policy = InputPolicy(length=n, pad=data.pad, crop=data.crop)
    return np.stack([fit_length(w, policy) for w in waves]).astype(np.float32), kept, failed


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


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar with ETA on a terminal; silent when ``quiet`` or not interactive (``None``)."""

    def __init__(self, total: int, desc: str, quiet: bool | None):
        from tqdm.auto import tqdm

        disable = (not sys.stderr.isatty()) if quiet is None else quiet
        self._bar = tqdm(total=total, desc=desc, disable=disable, unit="clip", leave=False)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _log(quiet: bool | None, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


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

    Raises:
        StudyError: a model that fails to load, an unusable data set, or an existing output
            directory from another config (before any work starts).
    """
    out_dir = Path(out or cfg.out or "")
    if not str(out_dir):
        raise StudyError("no output directory: pass --out or set 'out' in the config")
    t0 = time.perf_counter()

    # Everything that can fail on input is checked before any work is done.
    models = []
    for spec in cfg.models:
        try:
            models.append(load_model(spec.path))
        except ModelError as e:
            raise StudyError(f"model {spec.name!r} ({spec.path}) failed to load: {e}") from None
    names = [s.name for s in cfg.models]
    label_names, maps = _label_maps(models, names)
    domain = get_domain(cfg.domain, **dict(cfg.domain_options))
    fp = fingerprint(cfg)
    meta_path = out_dir / "study.json"
    if meta_path.exists():
        prev = json.loads(meta_path.read_text())
        if not resume:
            raise StudyError(f"{out_dir} already holds a study; pass --resume to continue it or choose another --out")
        if prev.get("fingerprint") != fp:
            raise StudyError(f"{out_dir} holds a study with a different config; cannot resume it with this one")
    elif resume and out_dir.exists() and any(out_dir.iterdir()):
        raise StudyError(f"{out_dir} is not empty and holds no study.json; refusing to resume into it")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_text(meta_path, json.dumps({"fingerprint": fp, "config": config_to_json(cfg)}, indent=2) + "\n")
    mesh = make_mesh(cfg.devices)

    # 1. data
    clips_path = out_dir / "data" / "clips.npz"
    if clips_path.exists():
        z = load_npz(clips_path)
        clips, paths, item_labels = z["waveforms"], [str(p) for p in z["paths"]], [str(s) for s in z["labels"]]
    else:
        items = discover(cfg.data)
        clips, kept, failed = load_clips(items, cfg.data)
        paths = [it.path for it in kept]
        item_labels = [it.label or "" for it in kept]
        fail_csv = "path,reason\n" + "".join(
            f'"{p}","{r.replace(chr(34), chr(39))}"\n' for p, r in failed
        )
        save_text(out_dir / "data" / "failures.csv", fail_csv)
        save_npz(clips_path, waveforms=clips, paths=np.asarray(paths), labels=np.asarray(item_labels))
    n = clips.shape[0]
    true = np.asarray([label_names.index(lbl) if lbl in label_names else -1 for lbl in item_labels], np.int32)
    sr = cfg.data.sample_rate
    _log(quiet, f"study {cfg.task!r}: {len(models)} models x {n} clips -> {out_dir}")

    # 2. baselines: originals and the empty signal
    original = np.zeros((len(models), n), np.int32)
    empty = np.zeros(len(models), np.int32)
    for mi, (model, name) in enumerate(zip(models, names, strict=True)):
        path = out_dir / "models" / name / "original.npz"
        if not path.exists():
            xs = np.stack([_to_model_rate(c, sr, model) for c in clips])
            logits = predict_logits(model, xs, batch=cfg.predict_batch, mesh=mesh)
            empty_wave = np.asarray(domain.synthesize(domain.analyze(jnp.asarray(xs[0])), jnp.zeros(domain.grid_shape(xs.shape[1]), bool)))
            empty_logits = predict_logits(model, empty_wave[None].astype(np.float32), batch=1)
            save_npz(path, logits=logits, empty_logits=empty_logits[0])
        z = load_npz(path)
        original[mi] = maps[mi][z["logits"].argmax(-1)]
        empty[mi] = maps[mi][int(z["empty_logits"].argmax())]

    # 3. explanations, batched across clips, one file per batch
    bsz = max(1, cfg.clips_per_batch)
    n_batches = -(-n // bsz)
    todo = [
        (mi, b)
        for mi in range(len(models))
        for b in range(n_batches)
        if not (out_dir / "models" / names[mi] / "explain" / f"batch_{b:05d}.npz").exists()
    ]
    bar = Progress(len(todo) * bsz, "explaining", quiet)
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
            mesh=mesh,
        )
        save_npz(out_dir / "models" / names[mi] / "explain" / f"batch_{b:05d}.npz", **_pack(exps, idx))
        bar.update(len(idx))
    bar.close()
    explain_seconds = time.perf_counter() - t_explain

    per_model = [_unpack_model(out_dir / "models" / nm / "explain", n) for nm in names]

    # 4. transfer labels: every model on every model's sufficient signals
    labels = np.zeros((len(models), len(models), n), np.int32)
    for fi, f in enumerate(models):
        path = out_dir / "transfer" / f"{names[fi]}.npz"
        if not path.exists():
            suff = per_model[fi]["sufficient"]
            row = np.zeros((len(models), n), np.int32)
            for gi, g in enumerate(models):
                xs = np.stack([_to_model_rate(s, f.sample_rate, g) for s in suff])
                row[gi] = maps[gi][predict_logits(g, xs, batch=cfg.predict_batch, mesh=mesh).argmax(-1)]
            save_npz(path, labels=row)
        labels[fi] = load_npz(path)["labels"]

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
        "explain_seconds_this_run": round(explain_seconds, 2),
        "total_seconds_this_run": round(time.perf_counter() - t0, 2),
        "devices": 1 if mesh is None else int(mesh.devices.size),
    }
    save_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return arrays


def _count_failures(out_dir: Path) -> int:
    p = out_dir / "data" / "failures.csv"
    return max(0, len(p.read_text().splitlines()) - 1) if p.exists() else 0


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


def _unpack_model(folder: Path, n: int) -> dict[str, np.ndarray]:
    parts = [load_npz(p) for p in sorted(folder.glob("batch_*.npz"))]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(merged["index"])
    merged = {k: v[order] for k, v in merged.items()}
    if merged["index"].tolist() != list(range(n)):
        raise StudyError(f"{folder} does not hold explanations for clips 0..{n - 1}; the study directory is damaged")
    return merged


def load_arrays(out_dir: str | Path) -> StudyArrays:
    """Read the arrays of a finished study directory."""
    p = Path(out_dir) / "arrays.npz"
    if not p.exists():
        raise StudyError(f"{out_dir} holds no finished study (no arrays.npz); run or resume it first")
    z = load_npz(p)
    kw = {f.name: z[f.name] for f in dataclasses.fields(StudyArrays)}
    for k in ("model_names", "label_names", "paths"):
        kw[k] = tuple(str(s) for s in kw[k])
    return StudyArrays(**kw)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def compute_tables(arrays: StudyArrays, cfg: StudyConfig | None = None) -> dict[str, Any]:
    """The study's statistics as DataFrames, computed by the pure statistics functions."""
    import pandas as pd

    from jsuff.info import classification_metrics, pairwise_information
    from jsuff.transfer import flat_earthers, transfer_analysis

    n_boot = cfg.n_boot if cfg else 1000
    seed = cfg.seed if cfg else 0
    threshold = cfg.flat_earther_threshold if cfg else 3.5
    names = list(arrays.model_names)
    c = len(arrays.label_names)
    has_true = bool(np.any(arrays.true >= 0))
    true = arrays.true if has_true else None
    clip_ok = arrays.true >= 0 if has_true else np.ones_like(arrays.true, bool)
    valid = arrays.valid & clip_ok[None, :] if has_true else arrays.valid
    tables: dict[str, Any] = {}
    if valid.any() and len(names) >= 2:  # transfer needs a second model to listen
        result = transfer_analysis(
            arrays.labels, arrays.original, valid=valid, true=true, num_classes=c,
            model_names=names, n_boot=n_boot, seed=seed,
        )
        tables["pairs"] = result.pairs_frame()
        tables["models"] = result.models_frame()
        tables["task"] = result.task_frame()
        if len(names) >= 3:  # outlier statistics need at least three models to compare
            tables["flat_earthers"] = flat_earthers(result, empty=arrays.empty, threshold=threshold)
        tables["information"] = pairwise_information(
            arrays.labels, arrays.original, true=true, valid=valid, num_classes=c, model_names=names,
            n_boot=n_boot, seed=seed,
        )
    if has_true:
        tables["metrics"] = classification_metrics(
            arrays.original[:, clip_ok], arrays.true[clip_ok], num_classes=c, model_names=names,
            n_boot=n_boot, seed=seed,
        )
    tables["baselines"] = pd.DataFrame(
        {
            "model": names,
            "empty_label": [arrays.label_names[i] for i in arrays.empty],
            "sufficient_found": arrays.valid.mean(axis=1),
            "trivial_fraction": arrays.trivial.mean(axis=1),
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


def write_tables(arrays: StudyArrays, folder: Path, cfg: StudyConfig | None = None) -> dict[str, Any]:
    tables = compute_tables(arrays, cfg)
    for name, frame in tables.items():
        save_csv(folder / f"{name}.csv", frame)
    return tables


def read_tables(out_dir: str | Path) -> dict[str, Any]:
    import pandas as pd

    folder = Path(out_dir) / "tables"
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}


def iter_explanations(out_dir: str | Path, model: str) -> Iterable[dict[str, np.ndarray]]:
    """Yield each stored explanation batch of ``model`` (for figures and listening)."""
    for p in sorted((Path(out_dir) / "models" / model / "explain").glob("batch_*.npz")):
        yield load_npz(p)
