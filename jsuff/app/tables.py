"""A study's statistics as tidy tables (``tables/*.csv``), from its arrays.

:func:`compute_tables` calls the pure statistics of :mod:`jsuff.transfer` and :mod:`jsuff.info` on
a :class:`~jsuff.app.store.StudyArrays` and returns DataFrames (``pairs``, ``models``, ``task``,
``flat_earthers``, ``information``, ``metrics``, ``baselines``, ``explanations``);
:func:`write_tables` writes them and :func:`read_tables` reads them back.

Example:
    >>> import numpy as np
    >>> arrays = StudyArrays(("f", "g"), ("a", "b"), ("x.wav",), true=np.array([0]),
    ...     original=np.array([[0], [0]]), empty=np.array([1, 1]), labels=np.zeros((2, 2, 1), int),
    ...     valid=np.ones((2, 1), bool), size_fraction=np.full((2, 1), 0.1),
    ...     energy_fraction=np.full((2, 1), 0.5), queries=np.full((2, 1), 100),
    ...     trivial=np.zeros((2, 1), bool))
    >>> tables = compute_tables(arrays)
    >>> sorted(tables)
    ['baselines', 'explanations', 'information', 'metrics', 'models', 'pairs', 'task']
    >>> tables["baselines"]["mean_size_fraction"].tolist()
    [0.1, 0.1]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jsuff.app.config import StudyConfig
from jsuff.app.store import StudyArrays, save_csv

__all__ = ["compute_tables", "read_tables", "write_tables"]


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
    """The CSV tables of a study directory as DataFrames, by name."""
    import pandas as pd

    folder = Path(out_dir) / "tables"
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}
