"""Entropy and mutual information of discrete labels, in bits (pure, jittable).

Estimators work on a contingency table of counts, built with ``jax.ops.segment_sum`` over the
labels, so every function jits once ``num_classes`` is static:

* plug-in: the entropy of the empirical distribution, ``H = -Σ p log2 p`` (0 log 0 = 0);
* Miller–Madow: plug-in plus the first-order bias correction ``(m - 1) / (2 n ln 2)`` bits, where
  m is the number of occupied bins and n the number of samples. For mutual information it is
  ``H_MM(X) + H_MM(Y) - H_MM(X, Y)``, i.e. plug-in MI minus ``(m_xy - m_x - m_y + 1) / (2 n ln 2)``;
  it is nearly unbiased (≈ 0) for independent labels and so can come out slightly negative.
  Plug-in MI is clipped at 0 (it is ≥ 0 except for rounding).

Normalised mutual information divides plug-in MI by one of (names as in scikit-learn, plus
``"joint"``): ``"arithmetic"`` (H(X) + H(Y)) / 2, ``"geometric"`` √(H(X) H(Y)), ``"min"``,
``"max"``, ``"joint"`` H(X, Y). As in scikit-learn, two constant labelings give 1 and otherwise
MI = 0 gives 0, so the result is defined whenever n > 0.

Every function takes 1-D integer labels (JAX or NumPy) and an optional boolean ``valid`` mask of
the same length (False entries are ignored). Called eagerly, labels outside ``[0, num_classes)``
and empty inputs raise :class:`~jsuff.transfer.LabelArrayError`; under ``jit`` (where nothing can
be raised) ``num_classes`` must be given and such inputs give NaN.

:func:`pairwise_information` and :func:`classification_metrics` build the tidy per-pair and
per-model tables of a transfer study, with intervals whose method each table names in its
``interval`` column:

* accuracy: the exact Clopper–Pearson interval (:mod:`jsuff.intervals`), at any n;
* the information statistics (entropies, MI, Miller–Madow MI, NMI): the *basic* bootstrap over
  clips (the percentile interval reflected about the estimate, ``[2 θ - q_hi, 2 θ - q_lo]``,
  clipped to the statistic's range), which corrects the plug-in bias to first order: the
  percentile interval of plug-in MI never covers MI = 0 once n is moderate, because each resample
  adds bias of its own;
* macro precision and recall: the percentile bootstrap over clips.

A bootstrap cannot reach its nominal coverage at small n: in our simulations
(docs/statistics.md) no bootstrap interval for MI reached 90% below n = 500 clips for 2-5 classes,
and coverage falls to 0-30% at n = 12-30. So the bootstrap intervals of a row are reported only
when its n is at least ``bootstrap_min_n`` (default :func:`bootstrap_min_n`: ``max(500, 20 C^2)``
for C classes); below it they are NaN and the row's ``interval_note`` says why, rather than
printing a tight interval.

Example:
    >>> import numpy as np
    >>> x = np.array([0, 0, 1, 1]); y = np.array([0, 0, 1, 1])
    >>> float(mutual_information(x, y)), float(entropy(x))
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jsuff.transfer import (
    LabelArrayError,
    as_label_array,
    as_mask,
    bootstrap_indices,
    check_inputs,
    check_label_range,
    check_model_names,
    infer_num_classes,
    percentile_interval,
)
from jsuff.intervals import clopper_pearson

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ESTIMATORS",
    "NMI_VARIANTS",
    "classification_metrics",
    "conditional_entropy",
    "contingency_table",
    "entropy",
    "entropy_from_counts",
    "joint_entropy",
    "mutual_information",
    "mutual_information_from_table",
    "normalized_mutual_information",
    "normalized_mutual_information_from_table",
    "pairwise_information",
]

ESTIMATORS = ("plugin", "miller_madow")
NMI_VARIANTS = ("arithmetic", "geometric", "min", "max", "joint")

_LN2 = math.log(2.0)
_Classes = int | tuple[int, int] | None


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")


def _check_variant(variant: str) -> None:
    if variant not in NMI_VARIANTS:
        raise ValueError(f"unknown NMI variant {variant!r}; expected one of {NMI_VARIANTS}")


# ----------------------------------------------------------------------------------------------
# Estimators on count tables (any leading batch axes)
# ----------------------------------------------------------------------------------------------


def entropy_from_counts(counts: ArrayLike, *, estimator: str = "plugin") -> jax.Array:
    """Entropy in bits of the histogram(s) on the last axis of ``counts``; NaN where n = 0.

    Example:
        >>> float(entropy_from_counts(jnp.array([2.0, 2.0, 0.0])))
        1.0
    """
    _check_estimator(estimator)
    c = jnp.asarray(counts, jnp.float32)
    n = c.sum(-1)
    nz = c > 0
    p = c / jnp.where(n > 0, n, 1.0)[..., None]
    # every term p log2 p is <= 0, so |sum| is exact and a one-class entropy is 0.0, not -0.0
    h = jnp.abs(jnp.where(nz, p * jnp.log2(jnp.where(nz, p, 1.0)), 0.0).sum(-1))
    if estimator == "miller_madow":
        occupied = nz.sum(-1).astype(jnp.float32)
        h = h + (occupied - 1.0) / (2.0 * _LN2 * jnp.where(n > 0, n, 1.0))
    return jnp.where(n > 0, h, jnp.nan)


def mutual_information_from_table(table: ArrayLike, *, estimator: str = "plugin") -> jax.Array:
    """Mutual information in bits of the contingency table(s) on the last two axes.

    Example:
        >>> float(mutual_information_from_table(jnp.array([[5.0, 0.0], [0.0, 5.0]])))
        1.0
    """
    _check_estimator(estimator)
    t = jnp.asarray(table, jnp.float32)
    n = t.sum((-2, -1))
    safe_n = jnp.where(n > 0, n, 1.0)
    rows, cols = t.sum(-1), t.sum(-2)
    nz = t > 0
    # Σ p_xy log2(p_xy / (p_x p_y)) with p_xy / (p_x p_y) = t · n / (row · col): one log per cell
    # and no subtraction of entropies, so independence gives exactly 0 and the sign stays right.
    ratio = t * safe_n[..., None, None] / (rows[..., :, None] * cols[..., None, :])
    mi = (jnp.where(nz, t * jnp.log2(jnp.where(nz, ratio, 1.0)), 0.0)).sum((-2, -1)) / safe_n
    mi = jnp.maximum(mi, 0.0)
    if estimator == "miller_madow":
        m_xy = nz.sum((-2, -1)).astype(jnp.float32)
        m_x = (rows > 0).sum(-1).astype(jnp.float32)
        m_y = (cols > 0).sum(-1).astype(jnp.float32)
        mi = mi - (m_xy - m_x - m_y + 1.0) / (2.0 * _LN2 * safe_n)
    return jnp.where(n > 0, mi, jnp.nan)


def normalized_mutual_information_from_table(
    table: ArrayLike, *, variant: str = "arithmetic"
) -> jax.Array:
    """Normalised (plug-in) mutual information of the table(s) on the last two axes.

    Example:
        >>> float(normalized_mutual_information_from_table(jnp.array([[5.0, 0.0], [0.0, 5.0]])))
        1.0
    """
    _check_variant(variant)
    t = jnp.asarray(table, jnp.float32)
    mi = mutual_information_from_table(t)
    hx, hy = entropy_from_counts(t.sum(-1)), entropy_from_counts(t.sum(-2))
    if variant == "arithmetic":
        norm = (hx + hy) / 2.0
    elif variant == "geometric":
        norm = jnp.sqrt(hx * hy)
    elif variant == "min":
        norm = jnp.minimum(hx, hy)
    elif variant == "max":
        norm = jnp.maximum(hx, hy)
    else:
        norm = entropy_from_counts(t.reshape(*t.shape[:-2], -1))
    nmi = jnp.where(mi > 0, mi / jnp.where(norm > 0, norm, 1.0), 0.0)
    # scikit-learn's conventions: two constant labelings are identical partitions (1), and
    # MI = 0 gives 0 even when the normaliser is 0 too.
    nmi = jnp.where((hx == 0) & (hy == 0), 1.0, jnp.clip(nmi, 0.0, 1.0))
    return jnp.where(jnp.isnan(mi), jnp.nan, nmi)


# ----------------------------------------------------------------------------------------------
# From labels
# ----------------------------------------------------------------------------------------------


def _is_traced(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _prepare(
    xs: Sequence[ArrayLike], num_classes: Sequence[int | None], valid: ArrayLike | None
) -> tuple[list[ArrayLike], ArrayLike | None, list[int]]:
    """Check labels, mask and class counts; concrete (eager) bad input raises here.

    Traced input is checked inside :func:`_label_table`, which makes the result NaN. Nothing is
    converted here: eager JAX ops would compile once per clip count.
    """
    names = ["x", "y"][: len(xs)]
    # Lists and NumPy arrays become NumPy (no device work); JAX arrays and tracers stay as they are.
    xs = [a if isinstance(a, jax.Array) else np.asarray(a) for a in xs]
    if valid is not None and not isinstance(valid, jax.Array):
        valid = np.asarray(valid)
    n = None
    for name, a in zip(names, xs):
        dtype, shape = a.dtype, a.shape
        if len(shape) != 1 or not jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_:
            raise LabelArrayError(
                f"{name} must be a 1-D integer label array, got {dtype}{list(shape)}"
            )
        if n is not None and shape[0] != n:
            raise LabelArrayError(f"x and y must have the same length, got {n} and {shape[0]}")
        n = shape[0]
    if valid is not None and (valid.shape != (n,) or valid.dtype != jnp.bool_):
        raise LabelArrayError(
            f"valid must be a boolean mask of shape [{n}], got {valid.dtype}{list(valid.shape)}"
        )
    traced = _is_traced(*xs, valid)
    classes = []
    for a, c in zip(xs, num_classes):
        if c is None:
            if traced:
                raise LabelArrayError(
                    "num_classes must be given (a static int) when labels are traced under jit"
                )
            c = infer_num_classes([(np.asarray(a), None if valid is None else np.asarray(valid))])
        classes.append(int(c))
    if not traced:
        wn = np.ones(n, bool) if valid is None else np.asarray(valid)
        if not wn.any():
            raise LabelArrayError("no valid sample: every entry is masked out or there is none")
        for name, a, c in zip(names, xs, classes):
            check_label_range(name, np.asarray(a), c, wn)
    return list(xs), valid, classes


def _pair_classes(num_classes: _Classes) -> tuple[int | None, int | None]:
    if isinstance(num_classes, tuple):
        return num_classes
    return num_classes, num_classes


def bootstrap_min_n(num_classes: int) -> int:
    """The fewest clips at which the information tables report bootstrap intervals:
    ``max(500, 20 C^2)``, where every setting of our coverage simulation (2, 5 and 10 classes,
    independent to nearly deterministic labels; docs/statistics.md) reached about 90%.

    Example:
        >>> bootstrap_min_n(3), bootstrap_min_n(10)
        (500, 2000)
    """
    return max(500, 20 * int(num_classes) ** 2)


def _entropy_rows(t: jax.Array, estimator: str) -> jax.Array:
    return entropy_from_counts(t.sum(1), estimator=estimator)


def _joint(t: jax.Array, estimator: str) -> jax.Array:
    return entropy_from_counts(t.reshape(-1), estimator=estimator)


def _conditional(t: jax.Array, estimator: str) -> jax.Array:
    # H(X, Y) >= H(Y) for both estimators; the clip removes float32 round-off below 0
    return jnp.maximum(_joint(t, estimator) - entropy_from_counts(t.sum(0), estimator=estimator), 0.0)


# What each public function computes from the contingency table, keyed "statistic/option".
_BY_ESTIMATOR = {"entropy": _entropy_rows, "joint": _joint, "conditional": _conditional,
                 "mi": mutual_information_from_table}
_STATS = {
    "table": lambda t: t,
    **{f"{k}/{e}": partial(fn, estimator=e) for k, fn in _BY_ESTIMATOR.items() for e in ESTIMATORS},
    **{f"nmi/{v}": partial(normalized_mutual_information_from_table, variant=v)
       for v in NMI_VARIANTS},
}


# Two kernels rather than one so that eager calls on many clip counts n recompile only the
# small table kernel; the statistic kernel depends on the table shape alone.
@partial(jax.jit, static_argnames=("cx", "cy"))
def _label_table(x, y, valid, cx: int, cy: int) -> tuple[jax.Array, jax.Array]:
    x = jnp.asarray(x, jnp.int32)
    y = jnp.zeros_like(x) if y is None else jnp.asarray(y, jnp.int32)
    valid = jnp.ones(x.shape, bool) if valid is None else valid
    bad = ~jnp.any(valid) | jnp.any(valid & ((x < 0) | (x >= cx) | (y < 0) | (y >= cy)))
    code = jnp.clip(x, 0, cx - 1) * cy + jnp.clip(y, 0, cy - 1)
    t = jax.ops.segment_sum(valid.astype(jnp.float32), code, num_segments=cx * cy)
    return t.reshape(cx, cy), bad


@partial(jax.jit, static_argnames=("stat",))
def _table_stat(table: jax.Array, bad: jax.Array, stat: str) -> jax.Array:
    return jnp.where(bad, jnp.nan, _STATS[stat](table))


def _run(stat: str, xs: Sequence[ArrayLike], num_classes: _Classes, valid) -> jax.Array:
    """``stat`` of the labels ``xs`` (one or two arrays); NaN for bad input under jit."""
    classes = (num_classes,) if len(xs) == 1 else _pair_classes(num_classes)
    xs, valid, classes = _prepare(xs, classes, valid)
    if len(xs) == 1:  # H(X) is read from the table of x against a constant
        xs, classes = [*xs, None], [*classes, 1]
    return _table_stat(*_label_table(*xs, valid, *classes), stat)


def contingency_table(
    x: ArrayLike, y: ArrayLike, *, num_classes: _Classes = None, valid: ArrayLike | None = None
) -> jax.Array:
    """Counts ``table[a, b]`` of samples with ``x == a`` and ``y == b`` (float32 ``[Cx, Cy]``).

    ``num_classes`` is one int for both, a pair ``(Cx, Cy)``, or None (inferred, eager only).
    Under jit, out-of-range labels make the whole table NaN.

    Example:
        >>> contingency_table(np.array([0, 1, 1]), np.array([1, 1, 0]), num_classes=2).tolist()
        [[0.0, 1.0], [1.0, 1.0]]
    """
    return _run("table", [x, y], num_classes, valid)


def entropy(
    x: ArrayLike,
    *,
    num_classes: int | None = None,
    valid: ArrayLike | None = None,
    estimator: str = "plugin",
) -> jax.Array:
    """Entropy H(X) in bits of integer labels.

    Example:
        >>> float(entropy(np.array([0, 1, 2, 3])))
        2.0
    """
    _check_estimator(estimator)
    return _run(f"entropy/{estimator}", [x], num_classes, valid)


def joint_entropy(
    x: ArrayLike,
    y: ArrayLike,
    *,
    num_classes: _Classes = None,
    valid: ArrayLike | None = None,
    estimator: str = "plugin",
) -> jax.Array:
    """Joint entropy H(X, Y) in bits.

    Example:
        >>> float(joint_entropy(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])))
        2.0
    """
    _check_estimator(estimator)
    return _run(f"joint/{estimator}", [x, y], num_classes, valid)


def conditional_entropy(
    x: ArrayLike,
    y: ArrayLike,
    *,
    num_classes: _Classes = None,
    valid: ArrayLike | None = None,
    estimator: str = "plugin",
) -> jax.Array:
    """Conditional entropy H(X | Y) = H(X, Y) - H(Y) in bits: what is left of x once y is known.

    Example:
        >>> float(conditional_entropy(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])))
        1.0
    """
    _check_estimator(estimator)
    return _run(f"conditional/{estimator}", [x, y], num_classes, valid)


def mutual_information(
    x: ArrayLike,
    y: ArrayLike,
    *,
    estimator: str = "plugin",
    num_classes: _Classes = None,
    valid: ArrayLike | None = None,
) -> jax.Array:
    """Mutual information I(X; Y) in bits (``"plugin"`` or ``"miller_madow"``, module docstring).

    scikit-learn's ``mutual_info_score`` is the plug-in estimate in nats (= this × ln 2).

    Example:
        >>> x = np.array([0, 0, 1, 1, 2, 2])
        >>> round(float(mutual_information(x, x)), 4)
        1.585
    """
    _check_estimator(estimator)
    return _run(f"mi/{estimator}", [x, y], num_classes, valid)


def normalized_mutual_information(
    x: ArrayLike,
    y: ArrayLike,
    *,
    variant: str = "arithmetic",
    num_classes: _Classes = None,
    valid: ArrayLike | None = None,
) -> jax.Array:
    """Plug-in MI normalised to [0, 1] by ``variant`` (see the module docstring).

    ``"arithmetic"``, ``"geometric"``, ``"min"`` and ``"max"`` equal scikit-learn's
    ``normalized_mutual_info_score(x, y, average_method=variant)``.

    Example:
        >>> float(normalized_mutual_information(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])))
        1.0
    """
    _check_variant(variant)
    return _run(f"nmi/{variant}", [x, y], num_classes, valid)


# ----------------------------------------------------------------------------------------------
# Tables for a study: per ordered pair and per model, with bootstrap intervals
# ----------------------------------------------------------------------------------------------

# Bound on the resampled labels and bootstrap count tables held at once (entries).
_CHUNK_ELEMENTS = 1 << 22


@partial(jax.jit, static_argnames=("variants", "classification"))
def _table_stats(table: jax.Array, variants: tuple[str, ...], classification: bool) -> dict:
    """Every statistic of the tables ``[..., Cx, Cy]`` (x = reference, y = the labels judged)."""
    out = {
        "h_x": entropy_from_counts(table.sum(-1)),
        "h_y": entropy_from_counts(table.sum(-2)),
        "mi": mutual_information_from_table(table),
        "mi_mm": mutual_information_from_table(table, estimator="miller_madow"),
    }
    for v in variants:
        out[f"nmi_{v}"] = normalized_mutual_information_from_table(table, variant=v)
    if classification:
        n = table.sum((-2, -1))
        tp = jnp.diagonal(table, axis1=-2, axis2=-1)
        support, predicted = table.sum(-1), table.sum(-2)
        # scikit-learn's macro average: over classes present in the truth or the predictions,
        # with 0 for a class that has no predictions (precision) or no true samples (recall).
        present = ((support > 0) | (predicted > 0)).astype(jnp.float32)
        precision = jnp.where(predicted > 0, tp / jnp.where(predicted > 0, predicted, 1.0), 0.0)
        recall = jnp.where(support > 0, tp / jnp.where(support > 0, support, 1.0), 0.0)
        k = jnp.maximum(present.sum(-1), 1.0)
        out["accuracy"] = jnp.where(n > 0, tp.sum(-1) / jnp.where(n > 0, n, 1.0), jnp.nan)
        out["precision"] = jnp.where(n > 0, (precision * present).sum(-1) / k, jnp.nan)
        out["recall"] = jnp.where(n > 0, (recall * present).sum(-1) / k, jnp.nan)
    return out


def _histograms(codes: np.ndarray, size: int) -> np.ndarray:
    """Row-wise histograms of ``codes[..., N]`` over ``[0, size)``; the code ``size`` is dropped."""
    lead = codes.shape[:-1]
    rows = int(np.prod(lead))
    flat = (np.arange(rows).reshape(*lead, 1) * (size + 1) + codes).ravel()
    counts = np.bincount(flat, minlength=rows * (size + 1)).reshape(*lead, size + 1)
    return counts[..., :size].astype(np.float32)


# Statistics whose bootstrap interval is the basic one, clipped to (lower, upper) bounds; the
# others (macro precision and recall) get the percentile interval, accuracy Clopper-Pearson.
_BASIC_RANGE = {"h_x": (0.0, None), "h_y": (0.0, None), "mi": (0.0, None), "mi_mm": (None, None)}
_NMI_RANGE = (0.0, 1.0)
#: What the ``interval`` column of each table says.
INFORMATION_INTERVAL = "basic_bootstrap"
METRICS_INTERVAL = "accuracy: clopper_pearson; precision, recall: percentile_bootstrap; information: basic_bootstrap"


def _bootstrap_bounds(key: str, value: np.ndarray, samples: np.ndarray, confidence: float):
    lo, hi = percentile_interval(samples, confidence)
    if key in ("precision", "recall"):
        return lo, hi
    lower, upper = _NMI_RANGE if key.startswith("nmi_") else _BASIC_RANGE[key]
    lo, hi = 2.0 * value - hi, 2.0 * value - lo
    if lower is not None or upper is not None:
        lo, hi = np.clip(lo, lower, upper), np.clip(hi, lower, upper)
    return lo, hi


def _stats_with_intervals(
    x: np.ndarray,
    y: np.ndarray,
    ok: np.ndarray,
    num_classes: int,
    *,
    variants: tuple[str, ...],
    classification: bool,
    n_boot: int,
    confidence: float,
    seed: int,
    min_n: int | None,
) -> dict[str, np.ndarray]:
    """Statistics of K tables (``x[K, N]`` vs ``y[K, N]`` where ``ok``), each with _lo and _hi,
    and each row's ``interval_note``; bootstrap only for rows with at least ``min_n`` samples."""
    c = num_classes
    k, n = x.shape
    codes = np.where(ok, x * c + y, c * c)  # c * c marks a sample that is not counted
    min_n = bootstrap_min_n(c) if min_n is None else int(min_n)

    def stats_of(tables: np.ndarray) -> dict[str, np.ndarray]:
        got = _table_stats(jnp.asarray(tables.reshape(*tables.shape[:-1], c, c)), variants,
                           classification)
        return {key: np.asarray(v, np.float64) for key, v in got.items()}

    rows_n = ok.sum(-1)
    out: dict[str, np.ndarray] = {"n": rows_n}
    point = stats_of(_histograms(codes, c * c))
    boot_rows = np.flatnonzero(rows_n >= min_n) if n_boot > 0 else np.zeros(0, np.int64)
    boot: dict[str, list[np.ndarray]] = {key: [] for key in point}
    if boot_rows.size:
        idx = bootstrap_indices(n, n_boot, seed)
        # Chunk the K tables so that resampled codes and count tables stay bounded in memory.
        step = max(1, _CHUNK_ELEMENTS // (n_boot * max(n, c * c + 1)))
        for s in range(0, boot_rows.size, step):
            chunk = stats_of(_histograms(codes[boot_rows[s : s + step]][:, idx], c * c))  # [k', B]
            for key, v in chunk.items():
                boot[key].append(v)
    for key, value in point.items():
        out[key] = value
        lo, hi = np.full(k, np.nan), np.full(k, np.nan)
        if key == "accuracy":
            lo, hi = clopper_pearson(np.rint(value * rows_n), rows_n, confidence)
        elif boot_rows.size:
            samples = np.concatenate(boot[key], 0).T  # [B, rows]
            lo[boot_rows], hi[boot_rows] = _bootstrap_bounds(key, value[boot_rows], samples, confidence)
        out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
    note = np.where(
        rows_n >= min_n,
        "" if n_boot > 0 else "n_boot = 0: no bootstrap intervals",
        [f"n={int(v)} < {min_n}: a bootstrap interval would be below nominal coverage; none given"
         for v in rows_n],
    )
    out["interval_note"] = note.astype(object)
    return out


def _columns(
    stats: dict[str, np.ndarray], rename: dict[str, str], skip: Sequence[str] = ()
) -> dict:
    """Stats as frame columns: renamed (``mi`` → ``mi_source``, ``mi_lo`` → ``mi_source_lo``)."""
    cols = {}
    for key, value in stats.items():
        base, suffix = (key[:-3], key[-3:]) if key.endswith(("_lo", "_hi")) else (key, "")
        if base in skip:
            continue
        cols[rename.get(base, base) + suffix] = value
    return cols


def _info_names(target: str, variants: Sequence[str]) -> dict[str, str]:
    names = {"mi": f"mi_{target}", "mi_mm": f"mi_mm_{target}"}
    return names | {f"nmi_{v}": f"nmi_{v}_{target}" for v in variants}


def pairwise_information(
    labels: ArrayLike,
    original: ArrayLike,
    true: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    *,
    trivial: ArrayLike | None = None,
    include_trivial: bool = False,
    empty: ArrayLike | None = None,
    num_classes: int | None = None,
    model_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    nmi_variants: Sequence[str] = ("arithmetic",),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    bootstrap_min_n: int | None = None,
) -> pd.DataFrame:
    """Per ordered pair (f, g): how much g's label on f's sufficient signal says about f's label.

    For every source f and target g (diagonal included), over f's counted clips (valid and, unless
    ``include_trivial``, non-trivial; as in :func:`jsuff.transfer.transfer_analysis`):

    * ``mi_source``: I(c_f(x); c_g(x_S^f)) plug-in, ``mi_mm_source`` Miller–Madow,
      ``nmi_<variant>_source`` normalised; ``h_source`` = H(c_f(x)), ``h_target`` = H(c_g(x_S^f));
    * with ``true``: ``mi_true`` = I(y_true; c_g(x_S^f)), ``mi_mm_true``, ``nmi_<variant>_true``,
      ``h_true``.

    Every statistic has ``_lo``/``_hi`` basic bootstrap bounds (clips resampled, seeded), given
    only for rows with ``n`` (clips counted) at least ``bootstrap_min_n`` (default
    :func:`bootstrap_min_n` of the label space) and NaN otherwise, or when ``n_boot`` = 0;
    ``interval`` names the method and ``interval_note`` says why a row has none.
    ``source_trivial`` and ``source_silence_label`` give the source's trivial clips and its label
    on the empty signal (a name from ``label_names`` when given), ``trivial_counted`` whether
    trivial clips were counted. Other inputs are as in :func:`jsuff.transfer.transfer_analysis`.

    Example:
        >>> lab = np.array([[[0, 1, 1], [0, 1, 0]], [[0, 0, 1], [0, 0, 1]]])
        >>> df = pairwise_information(lab, np.array([[0, 1, 1], [0, 0, 1]]), n_boot=0)
        >>> df[["source", "target", "n", "mi_source"]].round(3).values.tolist()[:2]
        [['model_0', 'model_0', 3, 0.918], ['model_0', 'model_1', 3, 0.252]]
    """
    import pandas as pd

    for v in nmi_variants:
        _check_variant(v)
    inp = check_inputs(labels, original, valid=valid, true=true, num_classes=num_classes,
                       model_names=model_names, trivial=trivial, include_trivial=include_trivial,
                       empty=empty)
    m, n, c = inp.num_models, inp.num_clips, inp.num_classes
    ok = np.broadcast_to(inp.valid[:, None, :], (m, m, n)).reshape(m * m, n)
    y = inp.labels.reshape(m * m, n)
    common = dict(variants=tuple(nmi_variants), classification=False, n_boot=n_boot,
                  confidence=confidence, seed=seed, min_n=bootstrap_min_n)
    src = np.broadcast_to(inp.original[:, None, :], (m, m, n)).reshape(m * m, n)
    s = _stats_with_intervals(src, y, ok, c, **common)
    names = np.asarray(inp.model_names, dtype=object)
    cols: dict[str, Any] = {"source": np.repeat(names, m), "target": np.tile(names, m)}
    cols["n"] = s.pop("n")
    note = s.pop("interval_note")
    renames = {"h_x": "h_source", "h_y": "h_target"} | _info_names("source", nmi_variants)
    cols |= _columns(s, renames)
    if inp.true is not None:
        tru = np.broadcast_to(inp.true[None, :], (m * m, n))
        t = _stats_with_intervals(tru, y, ok, c, **common)
        t.pop("n"), t.pop("interval_note")
        cols |= _columns(t, {"h_x": "h_true"} | _info_names("true", nmi_variants), skip=("h_y",))
    cols |= {"interval": INFORMATION_INTERVAL, "interval_note": note}
    return pd.DataFrame(cols | inp.trivial_columns(label_names, np.repeat(np.arange(m), m), "source_"))


def classification_metrics(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    valid: ArrayLike | None = None,
    num_classes: int | None = None,
    model_names: Sequence[str] | None = None,
    nmi_variants: Sequence[str] = ("arithmetic",),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    bootstrap_min_n: int | None = None,
) -> pd.DataFrame:
    """Accuracy, macro precision and macro recall per model, beside I(y_true; prediction).

    Macro averages follow scikit-learn's defaults (``average="macro"``, ``zero_division=0``):
    the mean over the classes that occur in the truth or the predictions. The information
    columns (``mi``, ``mi_mm``, ``nmi_<variant>``, ``h_true``, ``h_pred``, bits) show differences
    that accuracy hides, e.g. a detector whose errors are systematic rather than random.

    Args:
        pred: predictions ``[M, N]`` (or ``[N]`` for one model).
        true: true labels ``[N]``.
        valid: ``[M, N]`` (or ``[N]``) mask of the predictions to count; default all.
        num_classes: label-space size (default: inferred).
        model_names: names of the M models.
        nmi_variants: normalisations to report.
        n_boot, confidence, seed: the bootstrap over clips (0: no bootstrap intervals).
        bootstrap_min_n: the fewest clips for a bootstrap interval (default
            :func:`bootstrap_min_n`).

    Returns:
        One row per model: ``model``, ``n``, each metric with ``_lo``/``_hi`` (accuracy:
        Clopper–Pearson; the others: bootstrap, see the module docstring), ``interval``,
        ``interval_note``.

    Example:
        >>> df = classification_metrics(np.array([[0, 1, 1, 1]]), np.array([0, 1, 1, 0]), n_boot=0)
        >>> df[["accuracy", "precision", "recall"]].round(4).values.tolist()
        [[0.75, 0.8333, 0.75]]
    """
    import pandas as pd

    for v in nmi_variants:
        _check_variant(v)
    p = np.asarray(pred)
    if p.ndim == 1:
        p = p[None]
        valid = None if valid is None else np.asarray(valid)[None]
    p = as_label_array("pred", p, (None, None))
    m, n = p.shape
    tru = as_label_array("true", true, (n,))
    ok = as_mask("valid", valid, (m, n))
    if not ok.any():
        raise LabelArrayError("every entry of valid is False: nothing to score")
    if num_classes is None:
        num_classes = infer_num_classes([(p, ok), (tru, None)])
    check_label_range("pred", p, num_classes, ok)
    check_label_range("true", tru, num_classes)
    p = np.where(ok, p, 0)
    s = _stats_with_intervals(np.broadcast_to(tru, (m, n)), p, ok, int(num_classes),
                              variants=tuple(nmi_variants), classification=True, n_boot=n_boot,
                              confidence=confidence, seed=seed, min_n=bootstrap_min_n)
    cols: dict[str, Any] = {"model": list(check_model_names(model_names, m)), "n": s.pop("n")}
    nmis = tuple(f"nmi_{v}" for v in nmi_variants)
    order = ("accuracy", "precision", "recall", "mi", "mi_mm", *nmis, "h_x", "h_y")
    ranked = {k: s[k] for base in order for k in (base, f"{base}_lo", f"{base}_hi")}
    cols |= _columns(ranked, {"h_x": "h_true", "h_y": "h_pred"})
    return pd.DataFrame(cols | {"interval": METRICS_INTERVAL, "interval_note": s["interval_note"]})
