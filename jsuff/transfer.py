"""Transferability of sufficient signals between models: pure statistics over label arrays.

One task has M models that share a label space of C classes, and N clips. The study produces:

* ``labels[f, g, i]`` = c_g(x_S^f(x_i)): model g's top-1 label on model f's sufficient signal for
  clip i (the diagonal is f's own label on its signal, the target by construction);
* ``original[g, i]`` = c_g(x_i): every model's label on the original clip;
* ``valid[f, i]``: f produced a sufficient signal for clip i and the file was readable (entries of
  ``labels[f, :, i]`` where it is False are never counted, whatever they hold);
* optionally ``true[i]``, the clip's true label, ``empty[g]``, each model's label on the empty
  signal (silence), and ``trivial[f, i]``: f's explanation of clip i is *trivial*, the empty
  signal already gets f's label. Its "sufficient signal" is silence, and T(f→g) would only count
  whether g also gives silence that label, so by default a trivial clip is not a transfer source:
  every statistic counts the *non-trivial valid* clips ``valid & ~trivial``
  (``include_trivial=True`` counts them too, for comparison). Every frame reports per model how
  many valid clips were trivial and which label silence gets.

Transfer f→g on clip i succeeds when ``labels[f, g, i] == original[f, i]`` (SPEC §2). Over the clips
counted by a *condition*:

* ``"all"``: f's counted clips (``valid[f, i]``, and not trivial unless they are included);
* ``"agree"``: those where g also agrees with f on the original clip, ``original[g, i] ==
  original[f, i]``;
* ``"correct"``: those where f is right on the original clip, ``original[f, i] == true[i]``;

``T[f, g]`` is the fraction of successes and ``n[f, g]`` the number of clips counted. Aggregates are
means of matrix cells (every ordered pair weighs the same, whatever its n), over cells with n > 0:

* task mean: the mean of ``T[f, g]`` over ordered pairs f ≠ g;
* outgoing rate of f: the mean of row f without the diagonal (how often others accept f's signals);
* incoming rate of g: the mean of column g without the diagonal (how often g accepts others').

Confidence intervals (``interval=``; each :class:`Estimate` records its ``method``, and the
frames an ``interval`` column):

* ``"clopper_pearson"`` (the default): a cell is a binomial proportion (its n clips are
  independent draws), with the exact Clopper–Pearson interval, whose coverage is at least nominal
  for every p and n. The aggregates share clips across cells and successes within a clip may be
  correlated; they get the Korn–Graubard interval (``"korn_graubard"``): the Clopper–Pearson
  interval on the effective sample size ``p (1 - p) / var``, where ``var`` is the clip-level
  (cluster) linearised variance of the mean of cells, with ``clips - 1`` degrees of freedom (see
  :mod:`jsuff.intervals`). Both are checked by a coverage simulation (tests/test_coverage.py,
  docs/statistics.md).
* ``"wilson"``: Wilson score intervals for the cells and on the effective n for the aggregates.
  Shorter, but below nominal coverage for rates within a few percent of 0 or 1.
* ``"bootstrap"``: percentile bootstrap intervals (the earlier default): clips (the N axis) are
  resampled with replacement, jointly for every model and cell, with a seeded
  ``numpy.random.default_rng``; every statistic is recomputed on each resample and the interval
  is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the resampled
  values (a resample in which a cell has no clips leaves that cell out). At small n it is far
  too narrow: a 12/12 cell gets [1, 1].

:func:`flat_earthers` screens the models of a task for ones that behave unlike the rest.

Example:
    >>> import numpy as np
    >>> labels = np.array([[[0, 1], [0, 0]], [[1, 0], [1, 1]]])  # [f, g, i]
    >>> original = np.array([[0, 1], [1, 1]])                       # [g, i]
    >>> r = transfer_analysis(labels, original)
    >>> r.matrix.tolist()
    [[1.0, 0.5], [0.5, 1.0]]
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jsuff.intervals import binomial_interval, effective_n_interval

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CONDITIONS",
    "INTERVALS",
    "Estimate",
    "LabelArrayError",
    "LabelArrays",
    "OUTLIER_METHODS",
    "Rates",
    "TAILS",
    "TransferResult",
    "as_label_array",
    "as_mask",
    "bootstrap_indices",
    "bootstrap_weights",
    "check_inputs",
    "check_label_range",
    "check_model_names",
    "condition_mask",
    "flat_earthers",
    "infer_num_classes",
    "outlier_scores",
    "percentile_interval",
    "rate_estimates",
    "transfer_analysis",
    "transfer_counts",
    "transfer_matrix",
    "trivial_summary",
]

CONDITIONS = ("all", "agree", "correct")
#: ``interval=`` choices: what the cells and the aggregates get (their ``method`` names).
INTERVALS = {
    "clopper_pearson": ("clopper_pearson", "korn_graubard"),
    "wilson": ("wilson", "wilson_effective_n"),
    "bootstrap": ("percentile_bootstrap", "percentile_bootstrap"),
}
OUTLIER_METHODS = ("mad", "loo")
TAILS = ("both", "lower", "upper")

# Scale factors that make a spread estimate match the standard deviation of a normal sample:
# MAD × 1.4826 (1 / Φ⁻¹(3/4)), and mean absolute deviation × 1.2533 (√(π/2)) as the fallback used
# when more than half of the models share one value (MAD = 0).
_MAD_SCALE = 1.482602218505602
_MEANAD_SCALE = 1.2533141373155001


class LabelArrayError(ValueError):
    """Label arrays that cannot be analysed; the message names the array and the problem."""


# ----------------------------------------------------------------------------------------------
# Input checking
# ----------------------------------------------------------------------------------------------


class LabelArrays(NamedTuple):
    """Checked inputs of one task, as NumPy arrays (see the module docstring for their meaning).

    ``valid`` is the mask of the source clips that are counted: the valid ones, less the trivial
    ones unless ``include_trivial``. Entries of ``labels[f, :, i]`` where it is False are set to 0;
    they are never counted. ``trivial`` marks the valid clips whose explanation is trivial.
    """

    labels: np.ndarray  # int64 [M, M, N]
    original: np.ndarray  # int64 [M, N]
    valid: np.ndarray  # bool [M, N]: counted source clips
    true: np.ndarray | None  # int64 [N]
    num_classes: int
    model_names: tuple[str, ...]
    trivial: np.ndarray | None = None  # bool [M, N]: valid clips with a trivial explanation
    include_trivial: bool = False
    empty: np.ndarray | None = None  # int64 [M]: each model's label on the empty signal

    @property
    def num_models(self) -> int:
        return self.labels.shape[0]

    @property
    def trivial_counts(self) -> np.ndarray:
        """Per model: how many valid clips had a trivial explanation (counted or not)."""
        if self.trivial is None:
            return np.zeros(self.num_models, np.int64)
        return self.trivial.sum(axis=1).astype(np.int64)

    def silence_labels(self, label_names: Sequence[str] | None = None) -> list[Any]:
        """Per model: its label on the empty signal (a name from ``label_names`` when given),
        None where unknown."""
        if self.empty is None:
            return [None] * self.num_models
        return [label_names[k] if label_names is not None else int(k) for k in self.empty]

    def trivial_columns(
        self, label_names: Sequence[str] | None = None, rows: np.ndarray | None = None, prefix: str = ""
    ) -> dict[str, Any]:
        """Frame columns for model ``rows[j]`` (default: each model once) in row j: its trivial
        clip count, its silence label (int, name, or None when unknown), and whether trivial clips
        were counted."""
        rows = np.arange(self.num_models) if rows is None else np.asarray(rows)
        if self.empty is None:
            silence = np.full(rows.shape, None, dtype=object)
        elif label_names is None:
            silence = self.empty[rows]
        else:
            silence = np.asarray([label_names[k] for k in self.empty[rows]], dtype=object)
        return {
            f"{prefix}trivial": self.trivial_counts[rows],
            f"{prefix}silence_label": silence,
            "trivial_counted": self.include_trivial,
        }

    @property
    def num_clips(self) -> int:
        return self.labels.shape[2]


def as_label_array(name: str, x: ArrayLike, shape: tuple[int | None, ...]) -> np.ndarray:
    """``x`` as an int64 NumPy array of the given shape (None = any size), or a clear error."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise LabelArrayError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise LabelArrayError(f"{name} has shape {list(arr.shape)}, expected {want}")
    return arr.astype(np.int64)


def as_mask(name: str, x: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as a boolean mask of exactly ``shape`` (all True when None), or a clear error."""
    if x is None:
        return np.ones(shape, bool)
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        raise LabelArrayError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise LabelArrayError(f"{name} has shape {list(arr.shape)}, expected {list(shape)}")
    return arr


def check_label_range(name: str, x: np.ndarray, num_classes: int, where: np.ndarray | None = None):
    """Raise when an entry of ``x`` (where ``where`` holds) is outside ``[0, num_classes)``."""
    bad = (x < 0) | (x >= num_classes)
    if where is not None:
        bad &= where
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LabelArrayError(
            f"{name}{list(first)} = {int(x[first])} is outside the label range [0, {num_classes})"
            f" ({int(bad.sum())} such entries); pass the right num_classes or fix the labels"
        )


def infer_num_classes(arrays: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> int:
    """1 + the largest label among ``(array, mask)`` pairs (mask None = every entry)."""
    return 1 + max(int((a if m is None else a[m]).max(initial=0)) for a, m in arrays)


def check_inputs(
    labels: ArrayLike,
    original: ArrayLike,
    *,
    valid: ArrayLike | None = None,
    true: ArrayLike | None = None,
    num_classes: int | None = None,
    model_names: Sequence[str] | None = None,
    trivial: ArrayLike | None = None,
    include_trivial: bool = False,
    empty: ArrayLike | None = None,
) -> LabelArrays:
    """Check and normalise the label arrays of one task.

    Args:
        labels: ``labels[f, g, i]`` = model g's label on model f's sufficient signal for clip i.
        original: ``original[g, i]`` = model g's label on the original clip i.
        valid: ``valid[f, i]``: f has a (readable) sufficient signal for clip i; default all True.
        true: the true label of each clip, optional.
        num_classes: size of the shared label space; default 1 + the largest label seen.
        model_names: one unique name per model; default ``model_0``, ``model_1``, ...
        trivial: ``trivial[f, i]``: f's explanation of clip i is trivial (the empty signal already
            gets f's label); default none is.
        include_trivial: count trivial clips as sources (default: leave them out).
        empty: each model's label on the empty signal, reported beside the trivial counts.

    Returns:
        :class:`LabelArrays`.

    Raises:
        LabelArrayError: wrong dtypes or shapes, labels outside ``[0, num_classes)`` (only valid
            entries of ``labels`` are checked), no valid (non-trivial) entry at all, bad model
            names.

    Example:
        >>> check_inputs(np.zeros((2, 2, 3), int), np.zeros((2, 3), int)).num_clips
        3
    """
    lab = as_label_array("labels", labels, (None, None, None))
    m, m2, n = lab.shape
    if m != m2:
        raise LabelArrayError(
            f"labels must be [M, M, N] (source, target, clip), got {list(lab.shape)}"
        )
    if m == 0 or n == 0:
        raise LabelArrayError(f"labels has no models or no clips: shape {list(lab.shape)}")
    orig = as_label_array("original", original, (m, n))
    ok = as_mask("valid", valid, (m, n))
    if not ok.any():
        raise LabelArrayError("every entry of valid is False: no sufficient signal to analyse")
    triv = ok & (np.zeros((m, n), bool) if trivial is None else as_mask("trivial", trivial, (m, n)))
    counted = ok if include_trivial else ok & ~triv
    if not counted.any():
        raise LabelArrayError(
            "every valid sufficient signal is trivial (the empty signal already gets the label): "
            "no transfer source to analyse; pass include_trivial=True to count them"
        )
    tru = None if true is None else as_label_array("true", true, (n,))
    emp = None if empty is None else as_label_array("empty", empty, (m,))
    lab_ok = np.broadcast_to(ok[:, None, :], lab.shape)
    if num_classes is None:
        parts = [(lab, lab_ok), (orig, None)] + [(a, None) for a in (tru, emp) if a is not None]
        num_classes = infer_num_classes(parts)
    elif int(num_classes) < 1:
        raise LabelArrayError(f"num_classes must be at least 1, got {num_classes}")
    num_classes = int(num_classes)
    check_label_range("labels", lab, num_classes, lab_ok)
    check_label_range("original", orig, num_classes)
    if tru is not None:
        check_label_range("true", tru, num_classes)
    if emp is not None:
        check_label_range("empty", emp, num_classes)
    names = check_model_names(model_names, m)
    kept = np.broadcast_to(counted[:, None, :], lab.shape)
    return LabelArrays(np.where(kept, lab, 0), orig, counted, tru, num_classes, names, triv,
                       bool(include_trivial), emp)


def check_model_names(model_names: Sequence[str] | None, m: int) -> tuple[str, ...]:
    """``m`` unique model names (default ``model_0``, ...), or a clear error."""
    if model_names is None:
        return tuple(f"model_{k}" for k in range(m))
    names = tuple(str(s) for s in model_names)
    if len(names) != m:
        raise LabelArrayError(f"model_names has {len(names)} names for {m} models")
    if len(set(names)) != m:
        raise LabelArrayError(f"model_names must be unique, got {list(names)}")
    return names


# ----------------------------------------------------------------------------------------------
# Bootstrap helpers (shared with jsuff.info)
# ----------------------------------------------------------------------------------------------


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` clip indices drawn with replacement by ``numpy.random.default_rng(seed)``.

    Example:
        >>> bootstrap_indices(4, 2, seed=0).shape
        (2, 4)
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]``: how often each clip occurs in each resample of :func:`bootstrap_indices`.

    Example:
        >>> bootstrap_weights(5, 3, seed=0).sum(axis=1).tolist()
        [5.0, 5.0, 5.0]
    """
    idx = bootstrap_indices(n, n_boot, seed)
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of bootstrap ``samples``, ignoring NaN resamples.

    Slices with no finite resample (or no resample at all) give NaN bounds.

    Example:
        >>> lo, hi = percentile_interval(np.arange(101.0), 0.9)
        >>> round(float(lo), 6), round(float(hi), 6)
        (5.0, 95.0)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    samples = np.asarray(samples, np.float64)
    if samples.shape[0] == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    alpha = 100.0 * (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        # An all-NaN slice (a cell no resample covers) is an expected NaN, not a problem.
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(samples, [alpha, 100.0 - alpha], axis=0)
    return lo, hi


def _nanmean(x: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean over finite entries; NaN (no warning) where there are none."""
    ok = np.isfinite(x)
    count = ok.sum(axis)
    total = np.where(ok, x, 0.0).sum(axis)
    return np.divide(total, count, out=np.full(np.shape(total), np.nan), where=count > 0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=np.asarray(den) > 0)


# ----------------------------------------------------------------------------------------------
# The transfer matrix (jittable)
# ----------------------------------------------------------------------------------------------


def condition_mask(
    original: ArrayLike,
    valid: ArrayLike,
    true: ArrayLike | None = None,
    condition: str = "all",
) -> jax.Array:
    """``mask[f, g, i]``: clip i counts towards ``T[f, g]`` under ``condition`` (jittable).

    Example:
        >>> condition_mask(np.array([[0], [1]]), np.ones((2, 1), bool), condition="agree")[..., 0]
        Array([[ True, False],
               [False,  True]], dtype=bool)
    """
    original = jnp.asarray(original)
    valid = jnp.asarray(valid, bool)
    m = original.shape[0]
    base = jnp.broadcast_to(valid[:, None, :], (m, *valid.shape))
    if condition == "all":
        return base
    if condition == "agree":
        return base & (original[None, :, :] == original[:, None, :])
    if condition == "correct":
        if true is None:
            raise ValueError('condition "correct" needs the true labels')
        return base & (original == jnp.asarray(true)[None, :])[:, None, :]
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def transfer_counts(
    labels: ArrayLike,
    original: ArrayLike,
    mask: ArrayLike,
    weights: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Successes and counts per cell: ``Σ_i w_i · mask[f,g,i] · [labels[f,g,i] == original[f,i]]``.

    ``weights`` (default all 1) may carry leading batch axes, e.g. bootstrap resample counts
    ``[B, N]``. Jittable; counts are exact in float32 up to 2**24.

    Example:
        >>> lab = np.array([[[0, 1], [0, 0]], [[1, 0], [1, 1]]])
        >>> hits, n = transfer_counts(lab, lab[[0, 1], [0, 1]], np.ones((2, 2, 2), bool))
        >>> hits.tolist(), n.tolist()
        ([[2.0, 1.0], [1.0, 2.0]], [[2.0, 2.0], [2.0, 2.0]])
    """
    labels = jnp.asarray(labels)
    original = jnp.asarray(original)
    mask = jnp.asarray(mask, bool)
    hit = (mask & (labels == original[:, None, :])).astype(jnp.float32)
    cnt = mask.astype(jnp.float32)
    if weights is None:
        return hit.sum(-1), cnt.sum(-1)
    w = jnp.asarray(weights, jnp.float32)
    hi = jax.lax.Precision.HIGHEST  # keep integer counts exact on accelerators (no TF32)
    return (
        jnp.einsum("...n,fgn->...fg", w, hit, precision=hi),
        jnp.einsum("...n,fgn->...fg", w, cnt, precision=hi),
    )


def transfer_matrix(
    labels: ArrayLike,
    original: ArrayLike,
    *,
    valid: ArrayLike | None = None,
    true: ArrayLike | None = None,
    condition: str = "all",
) -> tuple[jax.Array, jax.Array]:
    """The transfer matrix ``T[f, g]`` (NaN where no clip counts) and its counts ``n[f, g]``.

    A jittable building block (``condition`` static); inputs are not checked, use
    :func:`transfer_analysis` for checked results with intervals.

    Example:
        >>> lab = np.array([[[0, 1], [0, 0]], [[1, 0], [1, 1]]])
        >>> t, n = transfer_matrix(lab, np.array([[0, 1], [1, 1]]))
        >>> t.tolist()
        [[1.0, 0.5], [0.5, 1.0]]
    """
    labels = jnp.asarray(labels)
    if valid is None:
        valid = jnp.ones((labels.shape[0], labels.shape[2]), bool)
    mask = condition_mask(original, valid, true, condition)
    hits, n = transfer_counts(labels, original, mask)
    return jnp.where(n > 0, hits / jnp.maximum(n, 1.0), jnp.nan), n


# ----------------------------------------------------------------------------------------------
# Analysis with intervals
# ----------------------------------------------------------------------------------------------


class Estimate(NamedTuple):
    """A statistic with its confidence interval, the number of events behind it, and the method.

    ``n`` counts (source, clip) events: clips for a cell, the sum over the cells for an aggregate.
    ``method`` names the interval (``INTERVALS``; see the module docstring).
    """

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    method: str = ""


class Rates(NamedTuple):
    """The transfer statistics under one condition."""

    matrix: Estimate  # [M, M]
    task_mean: Estimate  # scalars: mean over ordered pairs f != g
    outgoing: Estimate  # [M]: row means without the diagonal
    incoming: Estimate  # [M]: column means without the diagonal


def _aggregates(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Task mean, outgoing and incoming rates of ``t[..., M, M]`` (off-diagonal cell means)."""
    m = t.shape[-1]
    off = np.where(np.eye(m, dtype=bool), np.nan, t)
    return _nanmean(off, (-2, -1)), _nanmean(off, -1), _nanmean(off, -2)


def rate_estimates(
    hit: ArrayLike, mask: ArrayLike, *, confidence: float = 0.95, interval: str = "clopper_pearson"
) -> Rates:
    """Cells and aggregates with small-sample intervals from per-clip outcomes (NumPy).

    Args:
        hit: ``hit[..., f, g, i]``: transfer f→g succeeds on clip i (bool; leading batch axes
            allowed, e.g. simulated tasks).
        mask: ``mask[..., f, g, i]``: clip i counts towards cell (f, g).
        confidence: nominal coverage.
        interval: ``"clopper_pearson"`` or ``"wilson"`` (the bootstrap needs the label arrays:
            :func:`transfer_analysis`).

    Returns:
        :class:`Rates` whose arrays carry the leading batch axes. Cells: ``k`` successes of ``n``
        clips, a binomial interval. Aggregates (mean of the cells with n > 0 of a group: all
        off-diagonal cells, a row, a column): the effective-n interval of
        :func:`jsuff.intervals.effective_n_interval`, with the clip-level linearised variance
        ``clips / (clips - 1) * sum_i u_i^2``, ``u_i = mean over the group's cells c of
        mask[c, i] (hit[c, i] - T_c) / n_c`` (clip i's influence on the mean), ``clips`` the
        clips that count in some cell of the group.

    Example:
        >>> hit = np.ones((2, 2, 12), bool)
        >>> r = rate_estimates(hit, hit)
        >>> round(float(r.matrix.lo[0, 1]), 4), r.matrix.method, r.task_mean.method
        (0.7354, 'clopper_pearson', 'korn_graubard')
    """
    if interval not in ("clopper_pearson", "wilson"):
        raise ValueError(f'rate_estimates takes interval "clopper_pearson" or "wilson", got {interval!r}')
    cell_method, aggregate_method = INTERVALS[interval]
    hit, mask = np.asarray(hit, bool), np.asarray(mask, bool)
    if hit.shape != mask.shape or hit.ndim < 3 or hit.shape[-3] != hit.shape[-2]:
        raise ValueError(f"hit and mask must both be [..., M, M, N], got {hit.shape} and {mask.shape}")
    n = mask.sum(-1)
    k = (hit & mask).sum(-1)
    t = _ratio(k, n)
    lo, hi = binomial_interval(k, n, confidence, interval)
    cells = Estimate(t, lo, hi, n.astype(np.int64), cell_method)
    value, var, clips, events = _aggregate_moments(hit, mask, n, t)
    a_lo, a_hi, _ = effective_n_interval(value, var, clips, events, confidence, interval)

    def part(sl: Any) -> Estimate:
        return Estimate(value[..., sl], a_lo[..., sl], a_hi[..., sl], events[..., sl], aggregate_method)

    m = n.shape[-1]
    return Rates(cells, part(0), part(slice(1, 1 + m)), part(slice(1 + m, 1 + 2 * m)))


def _aggregate_moments(hit: np.ndarray, mask: np.ndarray, n: np.ndarray, t: np.ndarray):
    """Value, clip-level variance, clips and events of the aggregates ``[..., 1 + 2M]``: the task
    mean, then each row's and each column's mean of the off-diagonal cells with n > 0."""
    m = n.shape[-1]
    eye = np.eye(m, dtype=bool)
    groups = np.concatenate([~eye[None], eye[:, :, None] & ~eye, eye[:, None, :] & ~eye])
    use = groups & (n > 0)[..., None, :, :]  # [..., 1 + 2M, M, M]
    size = use.sum((-2, -1))
    weight = use / np.maximum(size, 1)[..., None, None]
    known = np.nan_to_num(t)
    value = np.where(size > 0, (weight * known[..., None, :, :]).sum((-2, -1)), np.nan)
    # clip i's influence on the mean: the weighted sum of its residuals, each over its cell's n
    influence = np.where(mask, hit - known[..., None], 0.0) / np.maximum(n, 1)[..., None]
    u = np.einsum("...kfg,...fgi->...ki", weight, influence)
    clips = (np.einsum("...kfg,...fgi->...ki", use.astype(np.float64), mask.astype(np.float64)) > 0).sum(-1)
    var = (u * u).sum(-1) * clips / np.maximum(clips - 1, 1)
    events = (use * n[..., None, :, :]).sum((-2, -1)).astype(np.int64)
    return value, var, clips, events


def _rates(hits, n, boot_hits, boot_n, confidence: float) -> Rates:
    hits, n = np.asarray(hits, np.float64), np.asarray(n, np.float64)
    t = _ratio(hits, n)
    values = (t, *_aggregates(t))
    m = n.shape[-1]
    off_n = np.where(np.eye(m, dtype=bool), 0.0, n)
    counts = (n, off_n.sum(), off_n.sum(-1), off_n.sum(-2))
    if boot_hits is None:
        boots = tuple(np.empty((0, *np.shape(v))) for v in values)
    else:
        tb = _ratio(boot_hits, boot_n)
        boots = (tb, *_aggregates(tb))
    parts = []
    for v, b, c in zip(values, boots, counts):
        lo, hi = percentile_interval(b, confidence)
        parts.append(Estimate(v, lo, hi, np.asarray(c, np.int64), INTERVALS["bootstrap"][0]))
    return Rates(*parts)


def trivial_summary(inputs: LabelArrays, label_names: Sequence[str] | None = None) -> str:
    """One line per task: each model's trivial clip count and its label on silence.

    Example:
        >>> inp = check_inputs(np.zeros((2, 2, 3), int), np.zeros((2, 3), int),
        ...                    trivial=np.array([[True, False, False], [False] * 3]), empty=[0, 1])
        >>> trivial_summary(inp, ["a", "b"])
        'model_0: 1 (silence -> a); model_1: 0 (silence -> b)'
    """
    parts = []
    for name, k, lab in zip(inputs.model_names, inputs.trivial_counts, inputs.silence_labels(label_names)):
        parts.append(f"{name}: {int(k)}" + ("" if lab is None else f" (silence -> {lab})"))
    return "; ".join(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class TransferResult:
    """Transfer statistics of one task (see the module docstring for the definitions).

    Attributes:
        model_names: one name per model, in matrix order.
        overall: :class:`Rates` over every counted clip (condition ``"all"``).
        given_agree: :class:`Rates` over clips where g agrees with f on the original.
        given_correct: :class:`Rates` over clips f classifies correctly; None without true labels.
        inputs: the checked :class:`LabelArrays` the statistics come from (``inputs.valid``: the
            counted source clips; ``inputs.trivial``: the trivial ones).
        confidence, n_boot, seed: the interval settings (``n_boot``, ``seed``: bootstrap only).
        interval: the ``interval=`` choice (``INTERVALS``).

    The frames take optional ``label_names`` to print the silence labels as names.
    """

    model_names: tuple[str, ...]
    overall: Rates
    given_agree: Rates
    given_correct: Rates | None
    inputs: LabelArrays
    confidence: float
    n_boot: int
    seed: int
    interval: str = "clopper_pearson"

    @property
    def matrix(self) -> np.ndarray:
        """``T[f, g]`` over every counted clip."""
        return self.overall.matrix.value

    @property
    def n(self) -> np.ndarray:
        """Clips counted per cell of :attr:`matrix`."""
        return self.overall.matrix.n

    def rates(self, condition: str) -> Rates:
        """The :class:`Rates` of ``"all"``, ``"agree"`` or ``"correct"``."""
        table = {"all": self.overall, "agree": self.given_agree, "correct": self.given_correct}
        if condition not in table:
            raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
        if table[condition] is None:
            raise ValueError('condition "correct" needs the true labels, which were not given')
        return table[condition]

    @property
    def conditions(self) -> tuple[str, ...]:
        """The conditions this result has (``"correct"`` only with true labels)."""
        return CONDITIONS if self.given_correct is not None else CONDITIONS[:2]

    def to_frame(self) -> pd.DataFrame:
        """Long tidy frame: one row per (condition, source, target) with rate, lo, hi, n, interval."""
        import pandas as pd

        names = np.asarray(self.model_names, dtype=object)
        m = len(names)
        src, tgt = np.repeat(names, m), np.tile(names, m)
        frames = []
        for cond in self.conditions:
            e = self.rates(cond).matrix
            frames.append(
                pd.DataFrame(
                    {
                        "condition": cond,
                        "source": src,
                        "target": tgt,
                        "rate": e.value.ravel(),
                        "lo": e.lo.ravel(),
                        "hi": e.hi.ravel(),
                        "n": e.n.ravel(),
                        "interval": e.method,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def pairs_frame(self, label_names: Sequence[str] | None = None) -> pd.DataFrame:
        """Wide frame: one row per ordered pair (source, target), diagonal included.

        Columns ``rate, lo, hi, n`` (condition ``"all"``), then ``agree_rate, agree_lo, ...`` and
        ``correct_rate, ...`` when true labels were given; ``self`` marks the diagonal;
        ``interval`` names the cells' interval; ``source_trivial`` and ``source_silence_label``:
        the source's trivial clips and its label on silence; ``trivial_counted``.
        """
        import pandas as pd

        names = np.asarray(self.model_names, dtype=object)
        m = len(names)
        cols: dict[str, Any] = {"source": np.repeat(names, m), "target": np.tile(names, m)}
        cols["self"] = np.eye(m, dtype=bool).ravel()
        for cond in self.conditions:
            e = self.rates(cond).matrix
            p = "" if cond == "all" else f"{cond}_"
            cols |= {f"{p}rate": e.value.ravel(), f"{p}lo": e.lo.ravel(), f"{p}hi": e.hi.ravel()}
            cols[f"{p}n"] = e.n.ravel()
        cols["interval"] = self.overall.matrix.method
        return pd.DataFrame(cols | self.inputs.trivial_columns(label_names, np.repeat(np.arange(m), m), "source_"))

    def models_frame(self, label_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per model: outgoing and incoming rates with intervals and n, per condition.

        ``signals`` is the number of the model's clips counted as sources (valid, and non-trivial
        unless trivial clips are counted), ``self_rate`` its diagonal cell (1.0 when its signals
        reproduce its own label), ``trivial`` its valid clips with a trivial explanation and
        ``silence_label`` its label on the empty signal; ``interval`` names the rates' interval.
        """
        import pandas as pd

        cols: dict[str, Any] = {"model": list(self.model_names)}
        cols["signals"] = self.inputs.valid.sum(axis=1)
        cols["self_rate"] = np.diag(self.matrix)
        for cond in self.conditions:
            r = self.rates(cond)
            p = "" if cond == "all" else f"{cond}_"
            for kind in ("outgoing", "incoming"):
                e = getattr(r, kind)
                cols |= {f"{p}{kind}": e.value, f"{p}{kind}_lo": e.lo, f"{p}{kind}_hi": e.hi}
                cols[f"{p}{kind}_n"] = e.n
        cols["interval"] = self.overall.outgoing.method
        return pd.DataFrame(cols | self.inputs.trivial_columns(label_names))

    def task_frame(self, label_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per condition: the task mean over ordered pairs f ≠ g, its interval, n, pairs,
        the interval's method, and the trivial clips (total and per model with its silence label).
        """
        import pandas as pd

        rows = []
        total = int(self.inputs.trivial_counts.sum())
        per_model = trivial_summary(self.inputs, label_names)
        for cond in self.conditions:
            r = self.rates(cond)
            off = ~np.eye(len(self.model_names), dtype=bool)
            pairs = int((np.isfinite(r.matrix.value) & off).sum())
            e = r.task_mean
            rows.append(
                {"condition": cond, "mean": float(e.value), "lo": float(e.lo), "hi": float(e.hi),
                 "n": int(e.n), "pairs": pairs, "interval": e.method, "trivial": total,
                 "trivial_counted": self.inputs.include_trivial, "trivial_by_model": per_model}
            )
        return pd.DataFrame(rows)


def transfer_analysis(
    labels: ArrayLike,
    original: ArrayLike,
    *,
    valid: ArrayLike | None = None,
    true: ArrayLike | None = None,
    trivial: ArrayLike | None = None,
    include_trivial: bool = False,
    empty: ArrayLike | None = None,
    num_classes: int | None = None,
    model_names: Sequence[str] | None = None,
    interval: str = "clopper_pearson",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TransferResult:
    """Transfer matrix, conditioned variants, task mean and per-model rates with intervals.

    Args:
        labels: ``labels[f, g, i]`` = c_g(x_S^f(x_i)), int ``[M, M, N]``.
        original: ``original[g, i]`` = c_g(x_i), int ``[M, N]``.
        valid: ``valid[f, i]``: f has a readable sufficient signal for clip i (default all True).
        true: true labels ``[N]``; enables the ``"correct"`` condition.
        trivial: ``trivial[f, i]``: f's explanation of clip i is trivial (the empty signal
            already gets f's label); such clips are not sources unless ``include_trivial``.
        include_trivial: count trivial clips as sources too (for comparison).
        empty: each model's label on the empty signal ``[M]``, reported in the frames.
        num_classes: shared label-space size (default: inferred from the labels).
        model_names: names for the frames (default ``model_0``, ...).
        interval: ``"clopper_pearson"`` (default), ``"wilson"`` or ``"bootstrap"`` (module
            docstring).
        n_boot: bootstrap resamples of the clips (``interval="bootstrap"`` only; 0: no
            intervals, bounds are NaN).
        confidence: nominal coverage of the intervals.
        seed: seed of the ``numpy.random.default_rng`` that draws the resamples.

    Returns:
        :class:`TransferResult`; ``.pairs_frame()``, ``.models_frame()``, ``.task_frame()`` and
        ``.to_frame()`` give tidy tables.

    Raises:
        LabelArrayError: bad shapes, dtypes or labels, no valid (non-trivial) entry, fewer than 2
            models.

    Example:
        >>> lab = np.array([[[0, 1], [0, 0]], [[1, 0], [1, 1]]])
        >>> r = transfer_analysis(lab, np.array([[0, 1], [1, 1]]))
        >>> float(r.overall.task_mean.value), int(r.overall.task_mean.n), r.overall.task_mean.method
        (0.5, 4, 'korn_graubard')
    """
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {tuple(INTERVALS)}")
    inp = check_inputs(labels, original, valid=valid, true=true, num_classes=num_classes,
                       model_names=model_names, trivial=trivial, include_trivial=include_trivial,
                       empty=empty)
    if inp.num_models < 2:
        raise LabelArrayError("transfer needs at least 2 models")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    bootstrap = interval == "bootstrap"
    weights = bootstrap_weights(inp.num_clips, n_boot, seed) if bootstrap and n_boot > 0 else None
    hit = inp.labels == inp.original[:, None, :]
    out: dict[str, Rates | None] = {"correct": None}
    for cond in CONDITIONS if inp.true is not None else CONDITIONS[:2]:
        mask = condition_mask(inp.original, inp.valid, inp.true, cond)
        if not bootstrap:
            out[cond] = rate_estimates(hit, np.asarray(mask), confidence=confidence, interval=interval)
            continue
        hits, n = transfer_counts(inp.labels, inp.original, mask)
        bh = bn = None
        if weights is not None:
            bh, bn = transfer_counts(inp.labels, inp.original, mask, weights)
        out[cond] = _rates(hits, n, bh, bn, confidence)
    return TransferResult(inp.model_names, out["all"], out["agree"], out["correct"], inp,
                          float(confidence), int(n_boot), int(seed), interval)


# ----------------------------------------------------------------------------------------------
# Flat-earther screening
# ----------------------------------------------------------------------------------------------


def outlier_scores(values: ArrayLike, method: str = "mad") -> np.ndarray:
    """Robust z-scores of one statistic across the models of a task.

    * ``"mad"``: the modified z-score ``(v - median) / (1.4826 · MAD)`` (Iglewicz & Hoaglin; the
      usual cut-off is 3.5). When MAD = 0 (more than half the models share one value) the mean
      absolute deviation from the median × 1.2533 is the scale instead; when that is 0 as well
      every value equals the median and every score is 0.
    * ``"loo"``: leave-one-out z-score ``(v_m - mean(others)) / std(others, ddof=1)``; needs at
      least 2 other finite values. Zero spread among the others gives 0 when ``v_m`` equals their
      mean and ±inf otherwise.

    NaN values (a model with no data) get a NaN score and are left out of the others' statistics.

    Example:
        >>> outlier_scores([0.3, 0.31, 0.29, 0.3, 0.9]).round(1).tolist()
        [0.0, 0.7, -0.7, 0.0, 40.5]
    """
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    z = np.full(v.shape, np.nan)
    if method == "mad":
        if not ok.any():
            return z
        med = np.median(v[ok])
        dev = np.abs(v[ok] - med)
        mad = np.median(dev)
        scale = _MAD_SCALE * mad if mad > 0 else _MEANAD_SCALE * dev.mean()
        z[ok] = (v[ok] - med) / scale if scale > 0 else 0.0
        return z
    if method == "loo":
        for k in np.flatnonzero(ok):
            others = v[ok & (np.arange(v.size) != k)]
            if others.size < 2:
                continue
            mu, sd = others.mean(), others.std(ddof=1)
            diff = v[k] - mu
            z[k] = diff / sd if sd > 0 else (0.0 if diff == 0 else np.copysign(np.inf, diff))
        return z
    raise ValueError(f"unknown outlier method {method!r}; expected one of {OUTLIER_METHODS}")


def _loo_agreement(votes: np.ndarray, own: np.ndarray, num_classes: int) -> np.ndarray:
    """Agreement of each model with the majority of the others, one value per (model, item).

    ``votes[..., g]`` are the models' labels on one item (a signal or clip), ``own[m, ...]`` is
    ``votes[..., m]`` moved to the front. Ties: credit 1/k when the model's label is one of k tied
    majority labels (the expected agreement under a random tie-break).
    """
    onehot = np.eye(num_classes, dtype=np.int64)[votes]  # [..., M, C]
    total = onehot.sum(-2)  # [..., C]
    mine = np.moveaxis(onehot, -2, 0)  # [M, ..., C]
    others = total[None] - mine
    modes = others == others.max(-1, keepdims=True)
    k = modes.sum(-1)
    hit = np.take_along_axis(modes, own[..., None], -1)[..., 0]
    return hit / k


def flat_earthers(
    data: TransferResult | LabelArrays,
    *,
    empty: ArrayLike | None = None,
    method: str = "mad",
    threshold: float = 3.5,
    tail: str = "both",
    degenerate_fraction: float = 0.95,
) -> pd.DataFrame:
    """Screen a task's models for ones that behave unlike the rest ("flat-earthers", SPEC §5).

    We define four per-model statistics and score each across the task's models with
    :func:`outlier_scores` (``method``):

    * ``outgoing``, ``incoming``: the model's outgoing and incoming transfer rates (condition
      ``"all"``, off-diagonal cell means, see the module docstring);
    * ``consensus``: agreement with the leave-one-out consensus on sufficient signals. For each
      source f and clip i with ``valid[f, i]``, and the model m under test, the consensus is the
      most frequent label among ``labels[f, g, i]`` over all models g ≠ m (source f included when
      f ≠ m); m scores 1 when ``labels[f, m, i]`` is the consensus, 1/k when it is one of k tied
      most-frequent labels, else 0. The statistic is the mean over every valid (f, i);
    * ``original_consensus``: the same on the original clips (``original[g, i]``, every clip).

    A statistic is an outlier when its score passes ``threshold``: ``|z| > threshold`` for
    ``tail="both"``, ``z < -threshold`` for ``"lower"`` (only unusually low rates and agreement),
    ``z > threshold`` for ``"upper"``.

    Degenerate-model check: every label the model gave (originals, every valid sufficient signal
    it heard, and the empty signal when ``empty`` is given) is pooled; ``dominant_fraction`` is the
    share of the most frequent one and the model is ``degenerate`` when it is at least
    ``degenerate_fraction``. ``empty_is_dominant`` says whether the empty signal got that label.

    A model is a ``flat_earther`` when any statistic is an outlier or it is degenerate; ``reasons``
    lists which.

    Args:
        data: a :class:`TransferResult` or checked :class:`LabelArrays` (from :func:`check_inputs`).
        empty: each model's label on the empty signal, int ``[M]`` (optional; default the one
            the inputs carry).
        method: ``"mad"`` (median/MAD modified z-score) or ``"loo"`` (leave-one-out z-score).
        threshold: score cut-off (3.5 is Iglewicz & Hoaglin's for the modified z-score).
        tail: ``"both"``, ``"lower"`` or ``"upper"``.
        degenerate_fraction: share of one label at which a model counts as degenerate.

    Returns:
        One row per model: ``model``, each statistic with its ``_n``, ``_z`` and ``_outlier``
        columns, ``dominant_label``, ``dominant_fraction``, ``label_n``, ``empty_label``,
        ``empty_is_dominant``, ``degenerate``, ``trivial`` (valid clips with a trivial
        explanation), ``trivial_counted``, ``flat_earther``, ``reasons``.

    Raises:
        LabelArrayError: fewer than 3 models, or a bad ``empty`` array.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> orig = np.tile(rng.integers(0, 3, 40), (5, 1)); orig[4] = 0   # model 4: always 0
        >>> lab = np.broadcast_to(orig[:, None, :], (5, 5, 40)).copy(); lab[:, 4] = 0
        >>> flat_earthers(transfer_analysis(lab, orig, n_boot=0)).flat_earther.tolist()
        [False, False, False, False, True]
    """
    import pandas as pd

    if method not in OUTLIER_METHODS:
        raise ValueError(f"unknown outlier method {method!r}; expected one of {OUTLIER_METHODS}")
    if tail not in TAILS:
        raise ValueError(f"unknown tail {tail!r}; expected one of {TAILS}")
    if not 0.0 < degenerate_fraction <= 1.0:
        raise ValueError(f"degenerate_fraction must be in (0, 1], got {degenerate_fraction}")
    if not isinstance(data, TransferResult | LabelArrays):
        raise TypeError(f"flat_earthers takes a TransferResult or LabelArrays, got {type(data)}")
    inp = data.inputs if isinstance(data, TransferResult) else data
    m, c = inp.num_models, inp.num_classes
    if m < 3:
        raise LabelArrayError(f"flat-earther screening needs at least 3 models, got {m}")
    if isinstance(data, TransferResult):
        rates = data.overall
    else:
        rates = transfer_analysis(inp.labels, inp.original, valid=inp.valid, true=inp.true,
                                  num_classes=c, n_boot=0).overall
    emp = inp.empty
    if empty is not None:
        emp = as_label_array("empty", empty, (m,))
        check_label_range("empty", emp, c)

    # Consensus on sufficient signals: items are (f, i); votes [f, i, g].
    votes = np.moveaxis(inp.labels, 1, 2)
    agree = _loo_agreement(votes, np.moveaxis(inp.labels, 1, 0), c)  # [m, f, i]
    ok = inp.valid[None]
    consensus = (agree * ok).sum((1, 2)) / inp.valid.sum()
    orig_agree = _loo_agreement(inp.original.T, inp.original, c)  # [m, i]

    stats = {
        "outgoing": (rates.outgoing.value, rates.outgoing.n),
        "incoming": (rates.incoming.value, rates.incoming.n),
        "consensus": (consensus, np.full(m, inp.valid.sum())),
        "original_consensus": (orig_agree.mean(1), np.full(m, inp.num_clips)),
    }
    cols: dict[str, Any] = {"model": list(inp.model_names)}
    reasons: list[list[str]] = [[] for _ in range(m)]
    any_out = np.zeros(m, bool)
    for name, (value, n) in stats.items():
        z = outlier_scores(value, method)
        with np.errstate(invalid="ignore"):
            low, high = z < -threshold, z > threshold
            out = {"both": low | high, "lower": low, "upper": high}[tail]
        cols |= {name: value, f"{name}_n": n, f"{name}_z": z, f"{name}_outlier": out}
        any_out |= out
        for k in np.flatnonzero(out):
            reasons[k].append(f"{'low' if z[k] < 0 else 'high'} {name.replace('_', ' ')}")

    # Degenerate check: pool every label each model gave.
    heard = np.eye(c, dtype=np.int64)[inp.labels] * inp.valid[:, None, :, None]  # [f, g, i, C]
    counts = heard.sum((0, 2)) + np.eye(c, dtype=np.int64)[inp.original].sum(1)  # [g, C]
    if emp is not None:
        counts = counts + np.eye(c, dtype=np.int64)[emp]
    dominant = counts.argmax(1)
    total = counts.sum(1)
    frac = counts.max(1) / total
    degenerate = frac >= degenerate_fraction
    for k in np.flatnonzero(degenerate):
        reasons[k].append(f"degenerate ({frac[k]:.0%} label {dominant[k]})")
    cols |= {"dominant_label": dominant, "dominant_fraction": frac, "label_n": total}
    cols["empty_label"] = pd.array(emp if emp is not None else [None] * m, dtype="Int64")
    cols["empty_is_dominant"] = pd.array(
        (emp == dominant) if emp is not None else [None] * m, dtype="boolean"
    )
    cols["degenerate"] = degenerate
    cols["trivial"] = inp.trivial_counts
    cols["trivial_counted"] = inp.include_trivial
    cols["flat_earther"] = any_out | degenerate
    cols["reasons"] = ["; ".join(r) for r in reasons]
    return pd.DataFrame(cols)
