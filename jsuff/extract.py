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
  many as stay sufficient when dropped together (found by a scan), and repeat until the
  certificate holds. The result is certified 1-minimal.
* If the *empty* signal (everything removed) already passes, the answer is the empty set,
  reported as such (``empty_is_target``): a finding about the model, not an error.

**Scans ask only what they need.** A scan (the prefix scans above, and pruning's search for the
longest run of chunks that can go) asks its candidates in blocks that grow: ``prefixes_first_call``
prefixes, then twice as many, and so on up to ``prefixes_per_call``, and stops at the first block
that holds a passing index (taken with an argmax). So a set of k chunks costs fewer than 2k scan
queries when the first block is 1 (the default on a CPU, where a call costs about its rows), and
one wide call when the first block is ``prefixes_per_call`` (the default on an accelerator, where
a narrow call costs about what a wide one does). The answer does not depend on the schedule, only
the query count does. The certificate of a prefix set knows one answer already: removing its last
chunk leaves the previous prefix, which the scan found not sufficient (or the empty signal), so
that row is not asked again.

**Batched across clips.** A :class:`Problem` describes N clips of one length, the model and the
settings, frozen. Each step above is written for one clip as a sequence of *requests* (chunk sets
to classify) and run for all clips in lock-step: each round, the requests of every clip still
working are answered together, so N clips need about the model calls of one. A round's rows go in
calls of ``prefixes_per_call`` rows while that many are left, then of ``max_batch`` rows, then of
powers of two: no call is padded (with a mesh, a call is rounded up to a multiple of the device
count, and those few padding rows are evaluated and counted). Every function returns its result
and the model queries it spent: the rows the model evaluated for it.

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from jsuff.domains import RFFT
    >>> def apply(p, x):  # class 1 iff the 20-30 bin band carries energy
    ...     e = jnp.abs(jnp.fft.rfft(x))[:, 20:30].sum(-1, keepdims=True)
    ...     return jnp.concatenate([jnp.full_like(e, 1.0), e], axis=-1)
    >>> x = np.cos(2 * np.pi * 25 * np.arange(128) / 128).astype(np.float32)
    >>> problem, queries = for_clips(apply, None, RFFT(), x, ExtractConfig(chunk_size=4))
    >>> resp = np.zeros(65, np.float32); resp[25] = 1.0  # pretend the search found bin 25
    >>> (ex,) = extract(problem, resp[None])
    >>> int(ex.mask.sum()), bool(ex.mask[25]), ex.verified, ex.minimal  # one chunk: bin 25 + 3 ties
    (4, True, True, True)
    >>> int(queries[0]), ex.queries  # the clip, its empty and full signals; one prefix, the final check
    (3, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jsuff.domains import Coefficients, Domain, as_domain
from jsuff.evaluate import (
    ApplyFn,
    Clips,
    device_batch,
    masked_logits,
    model_jit,
    prepare,
    replicate,
    resolve_axis,
    platform_of,
    resolve_batch,
    top1_and_confidence,
)

__all__ = [
    "MODES",
    "Certificate",
    "ExtractConfig",
    "Extraction",
    "Problem",
    "Ranking",
    "as_extract_config",
    "certify",
    "classify",
    "complete_prefix",
    "contrastive_prefix",
    "describe",
    "extract",
    "for_clips",
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
        prefixes_per_call: the widest block of a scan, and the rows per model call of long
            requests (certificates of large sets).
        prefixes_first_call: the first block of a scan; each later block doubles, up to
            ``prefixes_per_call`` (module docstring). ``None``: 1 on a CPU, ``prefixes_per_call``
            on an accelerator (resolved by :func:`describe` from the platform the model runs on).
        certify: run the 1-minimality certificate on the result.
        prune: greedily prune the result to a certified 1-minimal set (implies ``certify``).
        tau: a set is sufficient when the target's confidence on it is >= tau x its confidence
            on the clip (and the target is top-1). 0: the label alone.
    """

    mode: str = "sufficient"
    chunk_size: int | None = None
    prefixes_per_call: int = 256
    prefixes_first_call: int | None = None
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
        if self.prefixes_first_call is not None and self.prefixes_first_call < 1:
            raise ValueError(f"ExtractConfig.prefixes_first_call must be >= 1, got {self.prefixes_first_call}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"ExtractConfig.tau must be in [0, 1], got {self.tau}")

    def resolved_chunk_size(self, min_box_size: int = 10) -> int:
        """``chunk_size``, or ``min_box_size`` when it is ``None``."""
        return int(self.chunk_size if self.chunk_size is not None else min_box_size)

    def resolved_first_call(self, platform: str = "cpu") -> int:
        """``prefixes_first_call``, or its default on ``platform`` (``"cpu"``, ``"gpu"``, ...),
        at most ``prefixes_per_call``.

        Example:
            >>> ExtractConfig().resolved_first_call("cpu"), ExtractConfig().resolved_first_call("gpu")
            (1, 256)
        """
        first = self.prefixes_first_call
        if first is None:
            first = 1 if platform == "cpu" else self.prefixes_per_call
        return int(min(first, self.prefixes_per_call))


def as_extract_config(extract: ExtractConfig | str) -> ExtractConfig:
    """``extract`` itself, or ``ExtractConfig(mode=extract)`` for a mode name (``"contrastive"``).

    Example:
        >>> as_extract_config("complete").mode
        'complete'
    """
    if isinstance(extract, ExtractConfig):
        return extract
    if isinstance(extract, str):
        return ExtractConfig(mode=extract)
    raise TypeError(f"extract must be an ExtractConfig or a mode name ({', '.join(MODES)}); "
                    f"got {type(extract).__name__} {extract!r:.60}")


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


# ----------------------------------------------------------------------------------------------
# The problem, and the model calls that answer its requests
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """N clips of one length, the model, and how sets are taken from them (frozen).

    Built by :func:`describe` (from clips already analysed) or :func:`for_clips` (from waveforms);
    the extraction functions read it and never change it.

    Attributes:
        apply_fn, params: the model.
        domain: the grid's domain; coeffs: ``domain.analyze`` of the N clips (batched).
        targets: ``[N]`` int32, the labels explained.
        confidence: ``[N]`` float32, the target's softmax confidence on each clip.
        empty_label, empty_confidence: ``[N]`` the top-1 label and the target's confidence on the
            empty signal (everything removed).
        full_label, full_confidence: ``[N]`` the same on the full reconstruction (the goal of
            ``complete``).
        config: :class:`ExtractConfig`, its ``chunk_size`` resolved.
        max_batch: waveforms per model call at most (resolved: :func:`jsuff.evaluate.resolve_batch`).
        mesh, axis: shard each model call over this mesh axis.
    """

    apply_fn: ApplyFn
    params: Any
    domain: Domain
    coeffs: Coefficients
    targets: np.ndarray
    confidence: np.ndarray
    empty_label: np.ndarray
    empty_confidence: np.ndarray
    full_label: np.ndarray
    full_confidence: np.ndarray
    config: ExtractConfig
    max_batch: int = 64
    mesh: Mesh | None = None
    axis: str | None = None

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.domain.grid_shape(self.coeffs.num_samples))

    @property
    def num_clips(self) -> int:
        return int(self.targets.shape[0])

    @property
    def empty_is_target(self) -> np.ndarray:
        """``[N]`` bool: the trivial case, the empty signal is already sufficient."""
        return np.array([_clip(self, i).empty_is_target for i in range(self.num_clips)], bool)


class _Clip(NamedTuple):
    """What the steps of one clip read from the problem."""

    target: int
    threshold: np.float32
    empty_label: int
    empty_confidence: np.float32
    full_label: int
    full_confidence: np.float32

    def passes(self, labels: np.ndarray, conf: np.ndarray) -> np.ndarray:
        """Sufficiency of each evaluated set."""
        return (np.asarray(labels) == self.target) & (np.asarray(conf) >= self.threshold)

    @property
    def empty_is_target(self) -> bool:
        return bool(self.passes(np.array([self.empty_label]), np.array([self.empty_confidence]))[0])


def _clip(problem: Problem, i: int) -> _Clip:
    return _Clip(
        int(problem.targets[i]),
        np.float32(problem.config.tau) * np.float32(problem.confidence[i]),
        int(problem.empty_label[i]),
        np.float32(problem.empty_confidence[i]),
        int(problem.full_label[i]),
        np.float32(problem.full_confidence[i]),
    )


@model_jit(static_argnames=("domain", "grid", "batch", "mesh", "axis"))
def _classify_sets(
    params: Any,
    coeffs: Coefficients,
    chunk_of_cell: jax.Array,
    targets: jax.Array,
    include: jax.Array,
    clip: jax.Array,
    *,
    apply_fn: ApplyFn,
    domain: Domain,
    grid: tuple[int, ...],
    batch: int,
    mesh: Mesh | None,
    axis: str | None,
) -> tuple[jax.Array, jax.Array]:
    """Top-1 label and target confidence of each chunk set ``include[P, num_chunks]`` of clip
    ``clip[P]``, whose cells lie in the chunks ``chunk_of_cell[clip, G]``, ``batch`` per call."""
    rows, num_chunks = include.shape

    def run(part: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        inc, ci = part
        masks = jnp.take_along_axis(inc, chunk_of_cell[ci], axis=1).reshape((batch, *grid))
        logits = masked_logits(apply_fn, params, domain, coeffs, ci, masks, mesh, axis)
        return top1_and_confidence(logits, targets[ci])

    parts = (include.reshape(rows // batch, batch, num_chunks), clip.reshape(rows // batch, batch))
    labels, conf = jax.lax.map(run, parts)
    return labels.reshape(rows), conf.reshape(rows)


#: A request of one clip: ``(n, rows_of)``, ``n`` chunk sets whose rows ``rows_of(lo, hi)``
#: (``[hi - lo, num_chunks]`` bool) are built one model call at a time, so memory stays
#: ``per_call x num_chunks`` however many sets a certificate asks for.
_Request = tuple[int, Callable[[int, int], np.ndarray]]
#: Its answer: the labels and target confidences of the n sets.
_Answer = tuple[np.ndarray, np.ndarray]
_Steps = Generator[_Request, _Answer, Any]


def _call_sizes(total: int, per_call: int, batch: int, unit: int) -> list[int]:
    """Rows of each model call that answers ``total`` rows: ``per_call`` while that many are left,
    then ``batch``, then the rest as powers of two times ``unit`` (the mesh's device count; 1
    without one), largest first. Only the last call can hold padding (fewer than ``unit`` rows), and
    there are at most ``log2(batch / unit) + 3`` call shapes, so few compilations.

    Example:
        >>> _call_sizes(300, 256, 64, 1), _call_sizes(5, 256, 64, 4)
        ([256, 32, 8, 4], [4, 4])
    """
    sizes = []
    for size in (per_call, batch):
        while total >= size:
            sizes.append(size)
            total -= size
    size = unit
    while size * 2 < batch:
        size *= 2
    while total > 0:
        while size > unit and size > total:
            size //= 2
        sizes.append(size)
        total -= size
    return sizes


def _answer(
    problem: Problem, chunk_of_cell: jax.Array, num_chunks: int, requests: Mapping[int, _Request]
) -> tuple[dict[int, _Answer], dict[int, int]]:
    """Answer the requests of several clips together: their rows one after another, in the calls
    of :func:`_call_sizes`. Returns the answers and each clip's model rows evaluated (its own rows,
    plus the padding of a call rounded up to the device count, charged to the clip it ends with)."""
    batch = device_batch(problem.max_batch, num_chunks + 1, problem.mesh, problem.axis)
    per_call = -(-max(problem.config.prefixes_per_call, batch) // batch) * batch
    unit = 1 if problem.mesh is None else int(problem.mesh.shape[problem.axis])
    clips = sorted(requests)
    offsets = np.concatenate([[0], np.cumsum([requests[i][0] for i in clips])]).astype(int)
    total = int(offsets[-1])
    labels, conf = np.zeros(total, np.int32), np.zeros(total, np.float32)
    evaluated = {i: requests[i][0] for i in clips}
    targets = jnp.asarray(problem.targets)
    start = 0
    for size in _call_sizes(total, per_call, batch, unit):
        stop = min(start + size, total)
        include, owner = np.zeros((size, num_chunks), bool), np.zeros(size, np.int32)
        for j, i in enumerate(clips):
            lo, hi = max(start, offsets[j]), min(stop, offsets[j + 1])
            if lo < hi:
                include[lo - start : hi - start] = requests[i][1](lo - offsets[j], hi - offsets[j])
                owner[lo - start : hi - start] = i
        owner[stop - start :] = owner[stop - start - 1]
        evaluated[int(owner[-1])] += start + size - stop
        lab, cf = _classify_sets(
            problem.params, problem.coeffs, chunk_of_cell, targets, jnp.asarray(include), jnp.asarray(owner),
            apply_fn=problem.apply_fn, domain=problem.domain, grid=problem.grid, batch=min(size, batch),
            mesh=problem.mesh, axis=problem.axis,
        )
        labels[start:stop] = np.asarray(lab)[: stop - start]
        conf[start:stop] = np.asarray(cf)[: stop - start]
        start = stop
    answers = {i: (labels[offsets[j] : offsets[j + 1]], conf[offsets[j] : offsets[j + 1]]) for j, i in enumerate(clips)}
    return answers, evaluated


def _drive(
    problem: Problem, rankings: Mapping[int, Ranking], steps: Mapping[int, _Steps]
) -> tuple[dict[int, Any], np.ndarray]:
    """Run the steps of several clips in lock-step; their results and ``[N]`` model queries."""
    (num_chunks,) = {r.num_chunks for r in rankings.values()}  # one grid, one chunk size
    table = np.zeros((problem.num_clips, int(np.prod(problem.grid))), np.int32)
    for i, r in rankings.items():
        table[i] = r.chunk_of_cell
    chunk_of_cell = jnp.asarray(table)
    results: dict[int, Any] = {}
    queries = np.zeros(problem.num_clips, np.int64)
    pending: dict[int, _Request] = {}

    def resume(i: int, answer: _Answer | None) -> None:
        try:
            pending[i] = steps[i].send(answer)
        except StopIteration as done:
            results[i] = done.value
            pending.pop(i, None)

    for i in steps:
        resume(i, None)
    while pending:
        answers, evaluated = _answer(problem, chunk_of_cell, num_chunks, pending)
        for i, answer in answers.items():
            queries[i] += evaluated[i]
            resume(i, answer)
    return results, queries


def describe(
    apply_fn: ApplyFn,
    params: Any,
    domain: Domain | str,
    clips: Clips,
    config: ExtractConfig | str = ExtractConfig(),
    *,
    max_batch: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> tuple[Problem, np.ndarray]:
    """The extraction problem of clips prepared by :func:`jsuff.evaluate.prepare`: it classifies
    every clip's empty signal and full reconstruction, all clips in the same model calls.

    Returns:
        The :class:`Problem` (``config.chunk_size`` resolved, ``None`` as 10; and
        ``config.prefixes_first_call``, from the platform of ``mesh`` or JAX's default backend)
        and ``[N]`` model queries (2 per clip).
    """
    domain, config = as_domain(domain), as_extract_config(config)
    config = dataclasses.replace(
        config, chunk_size=config.resolved_chunk_size(), prefixes_first_call=config.resolved_first_call(platform_of(mesh))
    )
    n = clips.targets.shape[0]
    cells = int(np.prod(domain.grid_shape(clips.coeffs.num_samples)))
    unknown = np.full(n, -1, np.int32), np.full(n, np.nan, np.float32)  # the two calls below tell
    problem = Problem(
        apply_fn, params, domain, clips.coeffs, np.asarray(clips.targets, np.int32),
        np.asarray(clips.confidence, np.float32), *unknown, *unknown, config,
        resolve_batch(max_batch, mesh, resolve_axis(mesh, mesh_axis)), mesh, resolve_axis(mesh, mesh_axis),
    )
    nc = -(-cells // config.chunk_size)  # the extraction's call shapes, so nothing compiles twice
    ends = np.array([[False] * nc, [True] * nc])
    requests = {i: (2, lambda lo, hi: ends[lo:hi]) for i in range(n)}
    answers, evaluated = _answer(problem, jnp.zeros((n, cells), jnp.int32), nc, requests)
    labels = np.stack([answers[i][0] for i in range(n)])
    conf = np.stack([answers[i][1] for i in range(n)])
    problem = dataclasses.replace(
        problem, empty_label=labels[:, 0], empty_confidence=conf[:, 0], full_label=labels[:, 1],
        full_confidence=conf[:, 1],
    )
    return problem, np.array([evaluated[i] for i in range(n)], np.int64)


def for_clips(
    apply_fn: ApplyFn,
    params: Any,
    domain: Domain | str,
    waveforms: Any,
    config: ExtractConfig | str = ExtractConfig(),
    *,
    targets: Any = None,
    max_batch: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> tuple[Problem, np.ndarray]:
    """Classify ``waveforms`` (``[T]`` or ``[N, T]``; default targets: each clip's top-1) and
    :func:`describe` them: the problem and ``[N]`` queries (3 per clip: the clip, its empty and
    full signals)."""
    params, domain = replicate(params, mesh), as_domain(domain)
    clips = prepare(apply_fn, params, waveforms, domain=domain, targets=targets)
    problem, queries = describe(apply_fn, params, domain, clips, config, max_batch=max_batch, mesh=mesh,
                                mesh_axis=mesh_axis)
    return problem, queries + 1


# ----------------------------------------------------------------------------------------------
# The steps of one clip: generators that yield requests and receive their answers
# ----------------------------------------------------------------------------------------------


def _ask(include: np.ndarray) -> _Steps:
    include = np.asarray(include, bool)
    return (yield include.shape[0], lambda lo, hi: include[lo:hi])


def _prefixes(ks: np.ndarray, num_chunks: int) -> np.ndarray:
    return np.arange(num_chunks)[None, :] < ks[:, None]


def _mask(ranking: Ranking, include: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """The boolean grid mask of one chunk set."""
    return np.asarray(include, bool)[ranking.chunk_of_cell].reshape(grid)


class _Schedule(NamedTuple):
    """How a scan grows: its first block and its widest (``ExtractConfig.prefixes_first_call``
    and ``prefixes_per_call``)."""

    first: int
    widest: int


def _schedule(config: ExtractConfig) -> _Schedule:
    return _Schedule(config.resolved_first_call(jax.default_backend()), config.prefixes_per_call)


def _scan(judge: Callable[[np.ndarray], _Steps], start: int, stop: int, schedule: _Schedule) -> _Steps:
    """The first k in ``start..stop`` that ``judge`` accepts (None: none), asked in blocks of
    ``schedule.first``, twice that, ... up to ``schedule.widest`` candidates."""
    lo, width = start, schedule.first
    while lo <= stop:
        ks = np.arange(lo, min(lo + width, stop + 1))
        ok = yield from judge(ks)
        if ok.any():
            return int(ks[int(np.argmax(ok))])
        lo, width = lo + ks.size, min(2 * width, schedule.widest)
    return None


#: What a clip's scans learnt: prefix length -> whether that prefix is sufficient.
_Seen = dict[int, bool]


def _sufficient(c: _Clip, num_chunks: int, schedule: _Schedule, seen: _Seen | None = None) -> _Steps:
    seen = {} if seen is None else seen

    def judge(ks: np.ndarray) -> _Steps:
        ok = c.passes(*(yield from _ask(_prefixes(ks, num_chunks))))
        seen.update(zip(ks.tolist(), ok.tolist()))
        return ok

    return (yield from _scan(judge, 1, num_chunks, schedule))


def _contrastive(c: _Clip, num_chunks: int, schedule: _Schedule, seen: _Seen | None = None) -> _Steps:
    seen = {} if seen is None else seen

    def judge(ks: np.ndarray) -> _Steps:
        keep = _prefixes(ks, num_chunks)
        labels, conf = yield from _ask(np.concatenate([keep, ~keep]))
        n = len(ks)
        ok = c.passes(labels[:n], conf[:n])
        seen.update(zip(ks.tolist(), ok.tolist()))
        return ok & (labels[n:] != c.target)

    return (yield from _scan(judge, 1, num_chunks, schedule))


def _complete(c: _Clip, num_chunks: int, start: int, schedule: _Schedule, seen: _Seen | None = None) -> _Steps:
    seen = {} if seen is None else seen

    def judge(ks: np.ndarray) -> _Steps:
        labels, conf = yield from _ask(_prefixes(ks, num_chunks))
        seen.update(zip(ks.tolist(), c.passes(labels, conf).tolist()))
        return (labels == c.target) & (conf >= c.full_confidence)

    return (yield from _scan(judge, start, num_chunks, schedule))


class Certificate(NamedTuple):
    """Result of the 1-minimality check: ``minimal`` iff ``removable`` (chunk indices whose
    removal alone leaves a sufficient set) is empty."""

    minimal: bool
    removable: tuple[int, ...]


def _certify(c: _Clip, include: np.ndarray, known: Mapping[int, bool] | None = None) -> _Steps:
    """``known``: chunk -> whether S without it is sufficient, for removals already answered
    (those rows are not asked)."""
    include = np.asarray(include, bool)
    known = {} if known is None else known
    members = np.flatnonzero(include)
    ask = np.array([j for j in members.tolist() if j not in known], np.int64)
    still = {j: bool(v) for j, v in known.items() if include[j]}
    if ask.size:

        def rows(lo: int, hi: int) -> np.ndarray:
            out = np.repeat(include[None], hi - lo, axis=0)
            out[np.arange(hi - lo), ask[lo:hi]] = False
            return out

        still.update(zip(ask.tolist(), c.passes(*(yield ask.size, rows)).tolist()))
    removable = tuple(j for j in members.tolist() if still[j])
    return Certificate(not removable, removable)


def _known_removal(include: np.ndarray, seen: _Seen) -> dict[int, bool]:
    """What the scans already say about removing chunks from the prefix set ``include``: without
    its last chunk it is the previous prefix."""
    k = int(np.asarray(include).sum())
    return {k - 1: seen[k - 1]} if k >= 1 and (k - 1) in seen and bool(np.all(include[:k])) else {}


def _prune(c: _Clip, include: np.ndarray, schedule: _Schedule, known: Mapping[int, bool] | None = None) -> _Steps:
    s = np.asarray(include, bool).copy()
    while True:
        cert = yield from _certify(c, s, known)
        known = None
        if cert.minimal:
            return s, cert
        drop = np.array(sorted(cert.removable, reverse=True))

        def judge(ks: np.ndarray, s: np.ndarray = s, drop: np.ndarray = drop) -> _Steps:
            rows = np.repeat(s[None], ks.size, axis=0)
            for r, k in enumerate(ks):  # drop the first k removable chunks
                rows[r, drop[:k]] = False
            return ~c.passes(*(yield from _ask(rows)))

        # the longest run of drops that stays sufficient: up to the first that does not
        fails = yield from _scan(judge, 1, drop.size, schedule)
        run = drop.size if fails is None else fails - 1
        if run == 0:  # the single removal that was certified no longer passes: stop, report as is
            return s, cert
        s[drop[:run]] = False


class Extraction(NamedTuple):
    """What :func:`extract` found for one clip.

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
        queries: model queries of the extraction (scans, certificate, final check; not the clip
            or its empty and full signals, which :func:`describe` counts): the rows the model
            evaluated for this clip (module docstring).
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


def _extract(c: _Clip, ranking: Ranking, config: ExtractConfig, grid: tuple[int, ...]) -> _Steps:
    nc, schedule = ranking.num_chunks, _schedule(config)
    if c.empty_is_target:
        include = np.zeros(nc, bool)
        return Extraction(
            _mask(ranking, include, grid), include, True, True, False, True, (), c.empty_label,
            float(c.empty_confidence), c.full_label, True, 0,
        )
    seen: _Seen = {0: False}  # the empty signal is not sufficient (else the trivial case above)
    if config.mode == "sufficient":
        k = yield from _sufficient(c, nc, schedule, seen)
    else:
        k = yield from _contrastive(c, nc, schedule, seen)
        if k is not None and config.mode == "complete":
            k = yield from _complete(c, nc, k, schedule, seen)
    found = k is not None
    include = np.arange(nc) < (k if found else nc)
    cert: Certificate | None = None
    if config.prune and found:
        include, cert = yield from _prune(c, include, schedule, _known_removal(include, seen))
    elif config.certify and found:
        cert = yield from _certify(c, include, _known_removal(include, seen))
    # the final check asks again, whatever the scans said about this set
    labels, conf = yield from _ask(np.stack([include, ~include]))
    return Extraction(
        mask=_mask(ranking, include, grid),
        include=include,
        found=found,
        verified=bool(c.passes(labels[:1], conf[:1])[0]),
        necessary=bool(labels[1] != c.target),
        minimal=None if cert is None else cert.minimal,
        removable=() if cert is None else cert.removable,
        label=int(labels[0]),
        confidence=float(conf[0]),
        label_without=int(labels[1]),
        empty_is_target=False,
        queries=0,  # the driver counts them
    )


# ----------------------------------------------------------------------------------------------
# The public functions: (result, queries)
# ----------------------------------------------------------------------------------------------


def extract(problem: Problem, responsibility: np.ndarray) -> list[Extraction]:
    """A sufficient (or contrastive, or complete) set for every clip of ``problem`` from its
    target's responsibility map, all clips batched together (see the module docstring).

    Args:
        problem: the clips, the model and the settings (:class:`Problem`).
        responsibility: ``[N, *grid]`` each clip's target map.

    Returns:
        One :class:`Extraction` per clip, each with the model queries it spent.
    """
    maps = np.asarray(responsibility)
    n, grid = problem.num_clips, problem.grid
    if maps.shape != (n, *grid):
        raise ValueError(f"responsibility maps have shape {maps.shape}; {n} clips of the grid {grid} need {(n, *grid)}")
    rankings = {i: rank(maps[i], problem.config.chunk_size) for i in range(n)}
    steps = {i: _extract(_clip(problem, i), rankings[i], problem.config, grid) for i in range(n)}
    results, queries = _drive(problem, rankings, steps)
    return [results[i]._replace(queries=int(queries[i])) for i in range(n)]


def _one(problem: Problem, ranking: Ranking, clip: int, steps: _Steps) -> tuple[Any, int]:
    results, queries = _drive(problem, {clip: ranking}, {clip: steps})
    return results[clip], int(queries[clip])


def classify(
    problem: Problem, ranking: Ranking, include: np.ndarray, clip: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """Labels and target confidences of the chunk sets ``include[P, num_chunks]`` of one clip,
    and the queries (P)."""
    include = np.asarray(include, bool)
    if include.ndim != 2 or include.shape[1] != ranking.num_chunks:
        raise ValueError(f"include must be [P, {ranking.num_chunks}], got {include.shape}")
    return _one(problem, ranking, clip, _ask(include))


def sufficient_prefix(problem: Problem, ranking: Ranking, clip: int = 0) -> tuple[int | None, int]:
    """Global insertion: the number of chunks of the first sufficient prefix (None: none is)."""
    return _one(problem, ranking, clip, _sufficient(_clip(problem, clip), ranking.num_chunks,
                                                    _schedule(problem.config)))


def contrastive_prefix(problem: Problem, ranking: Ranking, clip: int = 0) -> tuple[int | None, int]:
    """The first prefix that is sufficient and whose removal from the clip changes the label."""
    return _one(problem, ranking, clip, _contrastive(_clip(problem, clip), ranking.num_chunks,
                                                     _schedule(problem.config)))


def complete_prefix(problem: Problem, ranking: Ranking, start: int, clip: int = 0) -> tuple[int | None, int]:
    """From prefix ``start`` on, the first prefix whose target confidence reaches the full clip's."""
    return _one(problem, ranking, clip, _complete(_clip(problem, clip), ranking.num_chunks, start,
                                                  _schedule(problem.config)))


def certify(problem: Problem, ranking: Ranking, include: np.ndarray, clip: int = 0) -> tuple[Certificate, int]:
    """Check, batched, that removing any one chunk of S breaks sufficiency."""
    return _one(problem, ranking, clip, _certify(_clip(problem, clip), include))


def prune(
    problem: Problem, ranking: Ranking, include: np.ndarray, clip: int = 0
) -> tuple[tuple[np.ndarray, Certificate], int]:
    """Greedily remove chunks while S stays sufficient, until S is certified 1-minimal.

    Each round certifies S, then drops its removable chunks least responsible first, as many as
    stay sufficient when dropped together (the first run that does not is found by a scan with
    the extraction's schedule).
    """
    return _one(problem, ranking, clip, _prune(_clip(problem, clip), include, _schedule(problem.config)))
