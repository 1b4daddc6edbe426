"""From a responsibility map to a sufficient signal, and a certificate that it is 1-minimal.

The grid is ranked by the target's responsibility (highest first, ties by cell index) and cut into
*chunks* of ``chunk_size`` consecutive ranks; every set considered here is a union of chunks
(``include[num_chunks]``), so sets are cheap to describe and the mask of many of them is built on
the device by one gather.

* **sufficient** (global insertion, the default): the first prefix of chunks ``0..k-1`` that is
  sufficient: top-1 = target and target confidence >= tau x its confidence on the clip.
* **contrastive**: the first prefix that is sufficient *and* necessary (removing it from the clip
  changes the top-1 label).
* **complete**: from the contrastive prefix, keep adding chunks until the target confidence
  reaches its confidence on the fully reconstructed clip (the last prefix always does).
* **certificate**: one batch that removes each chunk of S in turn; S is 1-minimal when none of
  those removals is still sufficient (the removable chunks are reported otherwise).
* **pruning** (optional): certify, then drop the removable chunks least responsible first, as
  many as stay sufficient when dropped together (checked in one batch), and repeat until the
  certificate holds. The result is certified 1-minimal.
* If the *empty* signal (everything removed) already passes, the answer is the empty set,
  reported as such (``empty_is_target``): a finding about the model, not an error.

Prefix scans evaluate ``prefixes_per_call`` prefixes per model call and take the first passing
index with an argmax, so the answer does not depend on that setting (only the query count does).

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from jsuff.domains import RFFT
    >>> def apply(p, x):  # class 1 iff the 20-30 bin band carries energy
    ...     e = jnp.abs(jnp.fft.rfft(x))[:, 20:30].sum(-1, keepdims=True)
    ...     return jnp.concatenate([jnp.full_like(e, 1.0), e], axis=-1)
    >>> x = np.cos(2 * np.pi * 25 * np.arange(128) / 128).astype(np.float32)
    >>> oracle = Oracle.for_clip(apply, None, RFFT(), x, chunk_size=4)
    >>> resp = np.zeros(65, np.float32); resp[25] = 1.0  # pretend the search found bin 25
    >>> ex = extract(oracle, resp)
    >>> int(ex.mask.sum()), bool(ex.mask[25]), ex.verified, ex.minimal  # one chunk: bin 25 + 3 ties
    (4, True, True, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jsuff.domains import Coefficients, Domain
from jsuff.evaluate import (
    ApplyFn,
    analyze_and_predict,
    device_batch,
    masked_logits,
    model_jit,
    resolve_axis,
    top1_and_confidence,
)

__all__ = [
    "MODES",
    "Certificate",
    "ExtractConfig",
    "Extraction",
    "Oracle",
    "Ranking",
    "certify",
    "complete_prefix",
    "contrastive_prefix",
    "extract",
    "prune",
    "rank",
    "sufficient_prefix",
]

MODES = ("sufficient", "contrastive", "complete")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """How a sufficient signal is taken from a responsibility map (frozen).

    Attributes:
        mode: ``"sufficient"`` | ``"contrastive"`` | ``"complete"`` (module docstring).
        chunk_size: cells added per prefix step and the granularity of minimality; ``None``:
            the search's ``min_box_size`` (10 when used alone).
        prefixes_per_call: candidate sets per model call in scans and certificates.
        certify: run the 1-minimality certificate on the result.
        prune: greedily prune the result to a certified 1-minimal set (implies ``certify``).
        tau: a set is sufficient when the target's confidence on it is >= tau x its confidence
            on the clip (and the target is top-1). 0: the label alone.
    """

    mode: str = "sufficient"
    chunk_size: int | None = None
    prefixes_per_call: int = 256
    certify: bool = True
    prune: bool = False
    tau: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ExtractConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"ExtractConfig.chunk_size must be >= 1, got {self.chunk_size}")
        if self.prefixes_per_call < 1:
            raise ValueError(f"ExtractConfig.prefixes_per_call must be >= 1, got {self.prefixes_per_call}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"ExtractConfig.tau must be in [0, 1], got {self.tau}")

    def resolved_chunk_size(self, min_box_size: int = 10) -> int:
        return int(self.chunk_size if self.chunk_size is not None else min_box_size)


class Ranking(NamedTuple):
    """The grid ranked by responsibility and cut into chunks.

    Attributes:
        order: ``[G]`` flat cell indices, most responsible first (ties: lower index first).
        chunk_of_cell: ``[G]`` int32: the chunk (``rank // chunk_size``) of each flat cell.
        num_chunks: ``ceil(G / chunk_size)``.
        chunk_size: cells per chunk (the last chunk may be smaller).
    """

    order: np.ndarray
    chunk_of_cell: np.ndarray
    num_chunks: int
    chunk_size: int


def rank(responsibility: np.ndarray, chunk_size: int) -> Ranking:
    """Rank the cells of a map (any shape; flattened row-major) and cut the ranking into chunks.

    Example:
        >>> rank(np.array([0.0, 2.0, 1.0, 2.0]), 2).chunk_of_cell.tolist()
        [1, 0, 1, 0]
    """
    r = np.asarray(responsibility, np.float64).reshape(-1)
    if not np.isfinite(r).all():
        raise ValueError("the responsibility map has non-finite values")
    order = np.argsort(-r, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return Ranking(order, (ranks // chunk_size).astype(np.int32), -(-r.size // chunk_size), int(chunk_size))


def _identity_ranking(cells: int, chunk_size: int) -> Ranking:
    return rank(np.zeros(cells), chunk_size)


@model_jit(static_argnames=("domain", "grid", "batch", "mesh", "axis"))
def _classify_sets(
    params: Any,
    coeffs: Coefficients,
    chunk_of_cell: jax.Array,
    include: jax.Array,
    target: jax.Array,
    *,
    apply_fn: ApplyFn,
    domain: Domain,
    grid: tuple[int, ...],
    batch: int,
    mesh: Mesh | None,
    axis: str | None,
) -> tuple[jax.Array, jax.Array]:
    """Top-1 label and target confidence of each chunk set ``include[P, num_chunks]``."""
    rows = include.shape[0]
    one_clip = jax.tree_util.tree_map(lambda a: a[None], coeffs)
    clip = jnp.zeros(batch, jnp.int32)

    def run(inc: jax.Array) -> tuple[jax.Array, jax.Array]:
        masks = inc[:, chunk_of_cell].reshape((batch, *grid))
        logits = masked_logits(apply_fn, params, domain, one_clip, clip, masks, mesh, axis)
        return top1_and_confidence(logits, jnp.broadcast_to(target, (batch,)))

    labels, conf = jax.lax.map(run, include.reshape(rows // batch, batch, include.shape[1]))
    return labels.reshape(rows), conf.reshape(rows)


class Oracle:
    """Answers "which label, with what target confidence?" for many chunk sets of one clip per
    model call, and counts the model queries it spends (``queries``).

    On construction it evaluates the empty signal and the full reconstruction (2 queries):
    ``empty_label``, ``empty_confidence``, ``empty_is_target`` (the trivial case) and
    ``full_confidence`` (the goal of ``complete``).

    Args:
        apply_fn, params: the model.
        domain: the grid's domain.
        coeffs: ``domain.analyze(x)`` of the clip.
        target: the label explained; confidence: its softmax confidence on the clip.
        tau: sufficiency threshold factor (see :class:`ExtractConfig`).
        chunk_size: granularity of the chunk sets.
        per_call: sets per model call for large requests; max_batch: waveforms per ``apply``.
        mesh, mesh_axis: shard each batch of waveforms over a mesh axis.
    """

    def __init__(
        self,
        apply_fn: ApplyFn,
        params: Any,
        domain: Domain,
        coeffs: Coefficients,
        target: int,
        confidence: float,
        *,
        tau: float = 0.0,
        chunk_size: int = 10,
        per_call: int = 256,
        max_batch: int = 64,
        mesh: Mesh | None = None,
        mesh_axis: str | None = None,
    ) -> None:
        self.apply_fn, self.params, self.domain, self.coeffs = apply_fn, params, domain, coeffs
        self.grid = tuple(domain.grid_shape(coeffs.num_samples))
        self.cells = int(np.prod(self.grid))
        self.target, self.confidence = int(target), float(confidence)
        self.threshold = np.float32(tau) * np.float32(confidence)
        self.chunk_size = int(chunk_size)
        self.num_chunks = -(-self.cells // self.chunk_size)
        self.mesh, self.axis = mesh, resolve_axis(mesh, mesh_axis)
        # no request of the scans or the certificate exceeds num_chunks + 1 sets, so a coarse
        # grid is never padded up to max_batch (which costs real time with an expensive model)
        self.batch = device_batch(max_batch, self.num_chunks + 1, mesh, self.axis)
        self.per_call = -(-max(per_call, self.batch) // self.batch) * self.batch
        self.queries = 0
        ident = _identity_ranking(self.cells, self.chunk_size)
        labels, conf = self.classify(ident, np.array([[False] * self.num_chunks, [True] * self.num_chunks]))
        self.empty_label, self.empty_confidence = int(labels[0]), float(conf[0])
        self.full_label, self.full_confidence = int(labels[1]), float(conf[1])
        self.empty_is_target = bool(self.passes(labels[:1], conf[:1])[0])

    @classmethod
    def for_clip(
        cls,
        apply_fn: ApplyFn,
        params: Any,
        domain: Domain,
        waveform: Any,
        *,
        target: int | None = None,
        **kwargs: Any,
    ) -> Oracle:
        """Analyse ``waveform[T]`` and classify it (1 query) to build the oracle."""
        x = jnp.asarray(waveform, jnp.float32)
        if x.ndim != 1:
            raise ValueError(f"Oracle.for_clip takes one clip [T], got shape {x.shape}")
        coeffs, logits = analyze_and_predict(params, x[None], apply_fn=apply_fn, domain=domain)
        probs = np.asarray(jax.nn.softmax(logits[0]))
        tgt = int(np.argmax(probs)) if target is None else int(target)
        one = jax.tree_util.tree_map(lambda a: a[0], coeffs)
        oracle = cls(apply_fn, params, domain, one, tgt, float(probs[tgt]), **kwargs)
        oracle.queries += 1
        return oracle

    def passes(self, labels: np.ndarray, conf: np.ndarray) -> np.ndarray:
        """Sufficiency of each evaluated set."""
        return (np.asarray(labels) == self.target) & (np.asarray(conf) >= self.threshold)

    def classify(self, ranking: Ranking, include: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and target confidences of the chunk sets ``include[P, num_chunks]``."""
        include = np.asarray(include, bool)
        if include.ndim != 2 or include.shape[1] != ranking.num_chunks:
            raise ValueError(f"include must be [P, {ranking.num_chunks}], got {include.shape}")
        return self.classify_rows(ranking, include.shape[0], lambda lo, hi: include[lo:hi])

    def classify_rows(
        self, ranking: Ranking, n: int, rows_of: Callable[[int, int], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`classify` for ``n`` sets whose rows ``rows_of(lo, hi)`` are built one call
        at a time, so memory stays ``per_call x num_chunks`` however many sets there are."""
        labels, conf = np.zeros(n, np.int32), np.zeros(n, np.float32)
        chunk_of_cell = jnp.asarray(ranking.chunk_of_cell)
        start = 0
        while start < n:
            # two fixed call sizes (one batch, or per_call rows) so nothing recompiles
            size = self.batch if n - start <= self.batch else self.per_call
            rows = np.asarray(rows_of(start, min(start + size, n)), bool)
            padded = np.zeros((size, ranking.num_chunks), bool)
            padded[: len(rows)] = rows
            lab, cf = _classify_sets(
                self.params, self.coeffs, chunk_of_cell, jnp.asarray(padded), jnp.int32(self.target),
                apply_fn=self.apply_fn, domain=self.domain, grid=self.grid, batch=self.batch,
                mesh=self.mesh, axis=self.axis,
            )
            labels[start : start + len(rows)] = np.asarray(lab)[: len(rows)]
            conf[start : start + len(rows)] = np.asarray(cf)[: len(rows)]
            self.queries += len(rows)
            start += size
        return labels, conf

    def mask(self, ranking: Ranking, include: np.ndarray) -> np.ndarray:
        """The boolean grid mask of one chunk set."""
        return np.asarray(include, bool)[ranking.chunk_of_cell].reshape(self.grid)


def _prefixes(ks: np.ndarray, num_chunks: int) -> np.ndarray:
    return np.arange(num_chunks)[None, :] < ks[:, None]


def _scan(
    oracle: Oracle,
    ranking: Ranking,
    judge: Callable[[np.ndarray], np.ndarray],
    start: int,
    per_call: int,
) -> int | None:
    """The first k in ``start..num_chunks`` whose prefix ``judge`` accepts, ``per_call`` per block."""
    for lo in range(start, ranking.num_chunks + 1, per_call):
        ks = np.arange(lo, min(lo + per_call, ranking.num_chunks + 1))
        ok = judge(ks)
        if ok.any():
            return int(ks[int(np.argmax(ok))])
    return None


def sufficient_prefix(oracle: Oracle, ranking: Ranking, per_call: int = 256) -> int | None:
    """Global insertion: the number of chunks of the first sufficient prefix (None: none is)."""

    def judge(ks: np.ndarray) -> np.ndarray:
        return oracle.passes(*oracle.classify(ranking, _prefixes(ks, ranking.num_chunks)))

    return _scan(oracle, ranking, judge, 1, per_call)


def contrastive_prefix(oracle: Oracle, ranking: Ranking, per_call: int = 256) -> int | None:
    """The first prefix that is sufficient and whose removal from the clip changes the label."""

    def judge(ks: np.ndarray) -> np.ndarray:
        keep = _prefixes(ks, ranking.num_chunks)
        labels, conf = oracle.classify(ranking, np.concatenate([keep, ~keep]))
        n = len(ks)
        return oracle.passes(labels[:n], conf[:n]) & (labels[n:] != oracle.target)

    return _scan(oracle, ranking, judge, 1, per_call)


def complete_prefix(oracle: Oracle, ranking: Ranking, start: int, per_call: int = 256) -> int | None:
    """From prefix ``start`` on, the first prefix whose target confidence reaches the full clip's."""

    def judge(ks: np.ndarray) -> np.ndarray:
        labels, conf = oracle.classify(ranking, _prefixes(ks, ranking.num_chunks))
        return (labels == oracle.target) & (conf >= np.float32(oracle.full_confidence))

    return _scan(oracle, ranking, judge, start, per_call)


class Certificate(NamedTuple):
    """Result of the 1-minimality check: ``minimal`` iff ``removable`` (chunk indices whose
    removal alone leaves a sufficient set) is empty."""

    minimal: bool
    removable: tuple[int, ...]


def certify(oracle: Oracle, ranking: Ranking, include: np.ndarray) -> Certificate:
    """Check, batched, that removing any one chunk of S breaks sufficiency."""
    include = np.asarray(include, bool)
    members = np.flatnonzero(include)
    if members.size == 0:
        return Certificate(True, ())

    def rows(lo: int, hi: int) -> np.ndarray:
        out = np.repeat(include[None], hi - lo, axis=0)
        out[np.arange(hi - lo), members[lo:hi]] = False
        return out

    still = oracle.passes(*oracle.classify_rows(ranking, members.size, rows))
    removable = tuple(int(j) for j in members[still])
    return Certificate(not removable, removable)


def prune(oracle: Oracle, ranking: Ranking, include: np.ndarray) -> tuple[np.ndarray, Certificate]:
    """Greedily remove chunks while S stays sufficient, until S is certified 1-minimal.

    Each round certifies S, then tries dropping its removable chunks least responsible first,
    cumulatively, in one batch, and keeps the longest run that stays sufficient.
    """
    s = np.asarray(include, bool).copy()
    while True:
        cert = certify(oracle, ranking, s)
        if cert.minimal:
            return s, cert
        drop = np.array(sorted(cert.removable, reverse=True))

        def rows(lo: int, hi: int, s: np.ndarray = s, drop: np.ndarray = drop) -> np.ndarray:
            out = np.repeat(s[None], hi - lo, axis=0)
            for i in range(lo, hi):  # row i drops the first i + 1 removable chunks
                out[i - lo, drop[: i + 1]] = False
            return out

        ok = oracle.passes(*oracle.classify_rows(ranking, drop.size, rows))
        run = drop.size if ok.all() else int(np.argmin(ok))
        if run == 0:  # the single removal that was certified no longer passes: stop, report as is
            return s, cert
        s[drop[:run]] = False


class Extraction(NamedTuple):
    """What :func:`extract` found.

    Attributes:
        mask: ``[*grid]`` bool, the cells kept.
        include: ``[num_chunks]`` bool, the same set as chunks of the ranking.
        found: a set with the mode's property was found (False: ``mask`` is every cell).
        verified: the final set was re-checked sufficient.
        necessary: removing the set from the clip changes the label.
        minimal: the 1-minimality certificate (None when not certified).
        removable: chunks whose removal alone keeps sufficiency (empty when minimal).
        label, confidence: the model's top-1 and target confidence on the sufficient signal.
        label_without: the model's top-1 on the clip with the set removed.
        empty_is_target: the trivial case: the empty set is already sufficient.
        queries: model queries spent by the oracle so far (its own count).
    """

    mask: np.ndarray
    include: np.ndarray
    found: bool
    verified: bool
    necessary: bool
    minimal: bool | None
    removable: tuple[int, ...]
    label: int
    confidence: float
    label_without: int
    empty_is_target: bool
    queries: int


def extract(oracle: Oracle, responsibility: np.ndarray, config: ExtractConfig = ExtractConfig()) -> Extraction:
    """A sufficient (or contrastive, or complete) set from the target's responsibility map.

    Args:
        oracle: the clip and model (its ``chunk_size`` is the granularity used).
        responsibility: ``[*grid]`` the target class's map.
        config: :class:`ExtractConfig` (its ``chunk_size`` is ignored here: the oracle's counts).

    Returns:
        :class:`Extraction`.
    """
    resp = np.asarray(responsibility)
    if resp.shape != oracle.grid:
        raise ValueError(f"responsibility map has shape {resp.shape}, the grid is {oracle.grid}")
    ranking = rank(resp, oracle.chunk_size)
    nc, per_call = ranking.num_chunks, config.prefixes_per_call
    if oracle.empty_is_target:
        include = np.zeros(nc, bool)
        return Extraction(
            oracle.mask(ranking, include), include, True, True, False, True, (), oracle.empty_label,
            oracle.empty_confidence, oracle.full_label, True, oracle.queries,
        )
    if config.mode == "sufficient":
        k = sufficient_prefix(oracle, ranking, per_call)
    else:
        k = contrastive_prefix(oracle, ranking, per_call)
        if k is not None and config.mode == "complete":
            k = complete_prefix(oracle, ranking, k, per_call)
    found = k is not None
    include = np.arange(nc) < (k if found else nc)
    cert: Certificate | None = None
    if config.prune and found:
        include, cert = prune(oracle, ranking, include)
    elif config.certify and found:
        cert = certify(oracle, ranking, include)
    labels, conf = oracle.classify(ranking, np.stack([include, ~include]))
    return Extraction(
        mask=oracle.mask(ranking, include),
        include=include,
        found=found,
        verified=bool(oracle.passes(labels[:1], conf[:1])[0]),
        necessary=bool(labels[1] != oracle.target),
        minimal=None if cert is None else cert.minimal,
        removable=() if cert is None else cert.removable,
        label=int(labels[0]),
        confidence=float(conf[0]),
        label_without=int(labels[1]),
        empty_is_target=False,
        queries=oracle.queries,
    )
