"""Studies: many models × many clips, resumable and sharded. This module runs one; its parts live in
:mod:`jsuff.app.config` (the TOML schema), :mod:`jsuff.app.data` (finding and reading clips),
:mod:`jsuff.app.devices` (mesh and batched predictions), :mod:`jsuff.app.store` (the output
folder's files and arrays), :mod:`jsuff.app.progress` (console lines) and :mod:`jsuff.app.tables`
(the statistics).

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
(:func:`jsuff.app.store.model_slugs`): a model name never becomes a raw path component.

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

Labels across models: a study's ``[labels]`` table (a :class:`jsuff.labels.LabelView`) declares the
task's classes and, per model, which of its outputs stand for each class; every model is then seen
through its view (:func:`jsuff.labels.view_model`: its scores are the max over each class's tags),
so models with different label sets take part in one study, and every step (baselines, search,
transfer labels) works on the task's classes. Without ``[labels]``, every model must have the same
set of label names; their order may differ and is mapped onto the first model's order. True labels
are matched to the classes; a clip whose label is not among them (a class no model has, or not a
class of the view) has no true label (``-1``): the study completes, says how many clips of which
classes, and the tables use the clips of known classes.

Example:
    >>> from jsuff.app.study import load_config, run_study
    >>> cfg = load_config("study.toml")   # needs a TOML, model folders and clips  # doctest: +SKIP
    >>> run_study(cfg, "runs/genre")      # minutes of work; tests/test_study.py runs small ones  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsuff._files import LOCK_NAME, FolderLockedError, WriteError, folder_lock, write_text
from jsuff.app.config import (
    DataConfig,
    ModelSpec,
    StudyConfig,
    StudyError,
    config_from_dict,
    config_to_json,
    fingerprint,
    labels_error,
    load_config,
    validate_config,
)
from jsuff.app.data import (
    data_changes,
    data_record,
    discover,
    load_clips,
    no_usable_clips,
    silent_at_model_rates,
    to_model_rate,
    unknown_classes,
)
from jsuff.app.devices import make_mesh, predict_logits
from jsuff.app.distributed import SINGLE, Processes, check_shared_folder, new_run_id
from jsuff.app.progress import Progress, log
from jsuff.app.store import (
    StudyArrays,
    check_shape,
    damaged,
    load_arrays,
    load_npz,
    model_slugs,
    pack_explanations,
    read_study_json,
    save_npz,
    save_npz_if_changed,
    unpack_model,
)
from jsuff.app.tables import write_tables
from jsuff.app.versions import software_versions
from jsuff.domains import get_domain
from jsuff.explain import explain_many
from jsuff.labels import LabelViewError, ModelView, resolve_views, view_model
from jsuff.models.base import Model, ModelError, load_model

# run_study, and the names a study written in Python needs beside it
__all__ = [
    "DataConfig",
    "ModelSpec",
    "StudyArrays",
    "StudyConfig",
    "StudyError",
    "config_from_dict",
    "load_arrays",
    "load_config",
    "run_study",
]


def _views(cfg: StudyConfig, models: Sequence[Model], names: Sequence[str]) -> dict[str, ModelView]:
    """Each model's view of the task's classes (:func:`jsuff.labels.resolve_views`): the study's
    ``[labels]``, or without one the first model's labels, which every model must share."""
    try:
        return resolve_views(cfg.labels, {nm: m.labels for nm, m in zip(names, models, strict=True)})
    except LabelViewError as e:
        raise StudyError(labels_error(e) if cfg.labels is not None else str(e)) from None


def _class_scores(path: Path, z: Any, view: ModelView, label_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``original.npz``'s logits as class scores in ``label_names`` order. Files of jsuff before
    label views hold no ``classes`` and the raw logits in the model's own order: its view maps them
    (the identity for a model whose labels are in the study's order)."""
    if "classes" not in z:
        return {k: np.asarray(view.scores(jnp.asarray(z[k]))) for k in ("logits", "empty_logits")}
    if [str(c) for c in z["classes"]] != list(label_names):
        raise damaged(path, f"it holds scores for the classes {[str(c) for c in z['classes']]}, this study's "
                            f"are {list(label_names)}")
    return {k: z[k] for k in ("logits", "empty_logits")}


def _clip_keys(seed: int, model_index: int, clip_index: np.ndarray) -> jax.Array:
    base = jax.random.fold_in(jax.random.key(seed), model_index)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(clip_index, jnp.uint32))


def run_study(
    cfg: StudyConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    quiet: bool | None = None,
    processes: Processes = SINGLE,
) -> StudyArrays:
    """Run (or continue) a study; returns its arrays. The tables are under ``out/tables``.

    The output directory must be new or empty (a fresh run), or hold a study of this config
    (``resume=True``); a folder with other files and no ``study.json`` is refused, so results are
    never mixed with someone else's files. The directory is locked while the study runs (a second
    run on it fails at once, naming the process that holds it).

    Several processes run one study together when each calls this with the same config and output
    folder and its own ``processes`` (:func:`jsuff.app.distributed.connect`): the units of every step
    are shared out between them, process 0 holds the lock, reads the data and computes the tables,
    and every process returns the same arrays, equal to a single process's.

    Raises:
        StudyError: a bad config, a model that fails to load, an unusable data set, an output
            directory from another config or with foreign files, data that changed under a
            resumed study, or a locked directory (all before any work starts); a file that cannot
            be written (disk full, read-only) or a damaged unit file, naming it (what was done
            before is kept, and ``--resume`` continues). With several processes, every process
            raises when one of them fails.
    """
    if out is None and cfg.out is None:
        raise StudyError("no output directory: pass --out or set 'out' in the config")
    out_dir = Path(out if out is not None else cfg.out)  # type: ignore[arg-type]
    t0 = time.perf_counter()

    # Everything that can fail on input is checked before any work is done.
    with processes.step("checks"):
        cfg = validate_config(cfg)
        models = []
        for spec in cfg.models:
            try:
                models.append(load_model(spec.path))
            except ModelError as e:
                raise StudyError(f"model {spec.name!r} ({spec.path}) failed to load: {e}") from None
        names = [s.name for s in cfg.models]
        slugs = model_slugs(names)
        views = _views(cfg, models, names)
        models = [view_model(m, views[nm]) for m, nm in zip(models, names, strict=True)]  # class scores [B, K]
        label_names = views[names[0]].classes
        domain = get_domain(cfg.domain, **dict(cfg.domain_options))
        if out_dir.exists() and not out_dir.is_dir():
            raise StudyError(f"--out {out_dir} is a file, not a directory")
        if processes.leader and out_dir.is_dir():
            _check_out_dir(out_dir, cfg, resume)  # a refused folder gets not even a lock file
    try:
        with contextlib.ExitStack() as held:
            run = new_run_id() if processes.leader else ""
            with processes.step("lock"):
                if processes.leader:  # process 0 holds the lock for the run; it names the run
                    note = {"run": run, "processes": processes.count} if processes.count > 1 else None
                    held.enter_context(folder_lock(out_dir, "jsuff study", note=note))
                    _check_out_dir(out_dir, cfg, resume)  # again: it may have changed before the lock
            if processes.count > 1:
                run, config = processes.broadcast(f"{run} {fingerprint(cfg)}").split()
                with processes.step("shared folder"):
                    if not processes.leader:
                        check_shared_folder(out_dir, run, processes)
                        if config != fingerprint(cfg):
                            raise StudyError(f"process {processes.index} was given another study config than process 0 "
                                             "(its fingerprint differs): start every process with the same config")
            return _run_steps(cfg, out_dir, models, names, slugs, label_names, views, domain, quiet, t0, processes)
    except FolderLockedError as e:
        raise StudyError(str(e)) from None
    except WriteError as e:
        raise StudyError(
            f"{e.strerror}. Everything finished before is kept in {out_dir}: make room (or make it "
            "writable) and rerun with --resume to continue."
        ) from None


def _check_out_dir(out_dir: Path, cfg: StudyConfig, resume: bool) -> None:
    meta_path = out_dir / "study.json"
    if meta_path.exists():
        prev = read_study_json(meta_path)
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
        silent = silent_at_model_rates(clips, cfg.data.sample_rate, models, names)
        failed += [(kept[i].path, why) for i, why in sorted(silent.items())]
        keep = np.asarray([i for i in range(len(kept)) if i not in silent], np.int64)
        if keep.size == 0:
            raise StudyError(no_usable_clips(failed))
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
        log(quiet, f"{len(failed)} data file(s) left out (listed in {out_dir / 'data' / 'failures.csv'}):")
        for p, r in failed[:20]:
            log(quiet, f"  {p}: {r}")
        if len(failed) > 20:
            log(quiet, f"  ... and {len(failed) - 20} more")
    return z["waveforms"], [str(p) for p in z["paths"]], [str(s) for s in z["labels"]]


def _write_failures(out_dir: Path, failed: Sequence[tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows(failed)
    path = out_dir / "data" / "failures.csv"
    if not path.exists() or path.read_text() != buf.getvalue():
        write_text(path, buf.getvalue())


def _check_grid(models: Sequence[Model], names: Sequence[str], domain: Any, cfg: StudyConfig, n: int) -> None:
    """Each model's grid must have at least ``min_box_size`` cells (else the search cannot start)."""
    for model, name in zip(models, names, strict=True):
        length = to_model_rate(np.ones(n, np.float32), cfg.data.sample_rate, model).shape[0]
        cells = int(np.prod(domain.grid_shape(length)))
        if cells < cfg.search.min_box_size:
            raise StudyError(
                f"model {name!r} hears {length} samples, a {domain.name} grid of {cells} cells: fewer than "
                f"[search] min_box_size = {cfg.search.min_box_size}; lengthen [data] duration or lower min_box_size"
            )


def _run_steps(cfg, out_dir, models, names, slugs, label_names, views, domain, quiet, t0, processes) -> StudyArrays:
    """Steps 1-5 of :func:`run_study`, in a checked, locked output directory. Each process does its
    share of the units of steps 2-4; the leader reads the data (1) and computes the tables (5).
    ``models`` are seen through their ``views``: their outputs are the task's class scores, in
    ``label_names`` order."""
    mesh = make_mesh(cfg.devices)
    lead_quiet = quiet if processes.leader else True  # the other processes report their progress only

    # 1. data
    with processes.step("data"):
        if processes.leader:
            record = {
                "fingerprint": fingerprint(cfg),
                "config": config_to_json(cfg),
                # what the report needs without the model folders (which may have moved since)
                "models": [
                    {"name": nm, "slug": slugs[nm], "path": spec.path, "sample_rate": int(m.sample_rate)}
                    for nm, spec, m in zip(names, cfg.models, models, strict=True)
                ],
            }
            if cfg.labels is not None:  # per model and class, the tags that stand for it (for the report)
                record["label_view"] = [{"model": nm, "classes": dict(zip(label_names, views[nm].tags, strict=True))}
                                        for nm in names]
            write_text(out_dir / "study.json", json.dumps(record, indent=2) + "\n")
            clips, paths, item_labels = _load_data(out_dir, cfg, models, names, quiet)
    with processes.step("clips"):
        if not processes.leader:  # the clips as process 0 stored them (the data need not be on this host)
            z = load_npz(out_dir / "data" / "clips.npz", ("waveforms", "paths", "labels"))
            clips, paths, item_labels = z["waveforms"], [str(p) for p in z["paths"]], [str(s) for s in z["labels"]]
        _check_grid(models, names, domain, cfg, clips.shape[1])
    n = clips.shape[0]
    true = np.asarray([label_names.index(lbl) if lbl in label_names else -1 for lbl in item_labels], np.int32)
    unknown = unknown_classes(item_labels, label_names)
    if unknown:
        what = "a label that is not a class of the label view" if cfg.labels is not None else "a class no model has"
        log(lead_quiet, f"{sum(unknown.values())} clip(s) have {what} ("
            + ", ".join(f"{c!r}: {k}" for c, k in unknown.items())
            + "): they get no true label and are left out of the tables, which use clips of known classes")
    sr = cfg.data.sample_rate
    log(lead_quiet, f"study {cfg.task!r}: {len(models)} models x {n} clips -> {out_dir}"
        + (f" ({processes.count} processes)" if processes.count > 1 else ""))

    # 2. baselines: originals and the empty signal, one unit per model
    with processes.step("baselines"):
        for mi in processes.share(range(len(models))):
            model = models[mi]
            path = out_dir / "models" / slugs[names[mi]] / "original.npz"
            if not path.exists():
                xs = np.stack([to_model_rate(c, sr, model) for c in clips])
                logits = predict_logits(model, xs, batch=cfg.predict_batch, mesh=mesh)
                empty_wave = np.asarray(domain.synthesize(domain.analyze(jnp.asarray(xs[0])), jnp.zeros(domain.grid_shape(xs.shape[1]), bool)))
                empty_logits = predict_logits(model, empty_wave[None].astype(np.float32), batch=1)
                save_npz(path, logits=logits, empty_logits=empty_logits[0], classes=np.asarray(label_names, dtype=str))

    # 3. explanations, batched across clips, one file (one unit) per model and batch
    bsz = cfg.clips_per_batch
    n_batches = -(-n // bsz)
    units = [(mi, b) for mi in range(len(models)) for b in range(n_batches)]
    todo = [
        (mi, b)
        for mi, b in processes.share(units)
        if not (out_dir / "models" / slugs[names[mi]] / "explain" / f"batch_{b:05d}.npz").exists()
    ]
    where = f" (process {processes.index}/{processes.count})" if processes.count > 1 else ""
    t_explain = time.perf_counter()
    with processes.step("explanations"):
        bar = Progress(sum(min(n, (b + 1) * bsz) - b * bsz for _, b in todo), "explaining" + where, quiet)
        for mi, b in todo:
            model = models[mi]
            idx = np.arange(b * bsz, min(n, (b + 1) * bsz))
            xs = np.stack([to_model_rate(clips[i], sr, model) for i in idx])
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
            save_npz(out_dir / "models" / slugs[names[mi]] / "explain" / f"batch_{b:05d}.npz", **pack_explanations(exps, idx))
            bar.update(len(idx))
        bar.close()
    explain_seconds = time.perf_counter() - t_explain

    explained: dict[int, dict[str, np.ndarray]] = {}

    def explanations(fi: int) -> dict[str, np.ndarray]:  # a model's explanation units, read once
        if fi not in explained:
            explained[fi] = unpack_model(out_dir / "models" / slugs[names[fi]] / "explain", n)
        return explained[fi]

    # 4. transfer labels: every model on every model's sufficient signals, one unit per source
    with processes.step("transfer labels"):
        for fi in processes.share(range(len(models))):
            f = models[fi]
            path = out_dir / "transfer" / f"{slugs[names[fi]]}.npz"
            if not path.exists():
                suff = explanations(fi)["sufficient"]
                row = np.zeros((len(models), n), np.int32)
                for gi, g in enumerate(models):
                    xs = np.stack([to_model_rate(s, f.sample_rate, g) for s in suff])
                    row[gi] = predict_logits(g, xs, batch=cfg.predict_batch, mesh=mesh).argmax(-1)
                save_npz(path, labels=row)

    # 5. the arrays and the statistics (process 0)
    with processes.step("tables"):
        if processes.leader:
            original = np.zeros((len(models), n), np.int32)
            empty = np.zeros(len(models), np.int32)
            labels = np.zeros((len(models), len(models), n), np.int32)
            for mi, model in enumerate(models):
                path = out_dir / "models" / slugs[names[mi]] / "original.npz"
                scores = _class_scores(path, load_npz(path, ("logits", "empty_logits")), views[names[mi]], label_names)
                c = model.num_classes
                original[mi] = check_shape(path, "logits", scores["logits"], (n, c)).argmax(-1)
                empty[mi] = int(check_shape(path, "empty_logits", scores["empty_logits"], (c,)).argmax())
                path = out_dir / "transfer" / f"{slugs[names[mi]]}.npz"
                labels[mi] = check_shape(path, "labels", load_npz(path, ("labels",))["labels"], (len(models), n))
            per_model = [explanations(fi) for fi in range(len(models))]
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
                "processes": processes.count,
                "versions": software_versions(),
            }
            write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return arrays if processes.leader else load_arrays(out_dir)


def _count_failures(out_dir: Path) -> int:
    p = out_dir / "data" / "failures.csv"
    if not p.exists():
        return 0
    with open(p, newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)
