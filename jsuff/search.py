"""Causal responsibility over a domain's grid: ReX's random partition walk, run as batched arrays.

One *iteration* walks down a random partition tree of the grid (SPEC §3):

1. A box with at least ``min_box_size`` cells is split into 4 non-empty children: on a 1-D grid
   by 3 distinct cut points drawn uniformly from the box's interior, on a 2-D grid by one point
   drawn uniformly from the interior into quadrants (a 2-D box needs >= 2 rows and >= 2 columns).
2. Refining a box builds 14 *mutants*, one per non-empty proper subset A of its 4 children.
3. A mutant *passes* when the model's top-1 label on it is the target (and its target confidence
   is at least ``confidence_filter`` x the confidence on the clip).
4. If any mutant of a refinement passes, every mutant of that refinement adds 1/|A| to the map of
   its *predicted* class over each of its kept children.
5. The next job is the passing mutant with the smallest kept area (queue length 1; ties go to the
   first in (box, subset) order); its kept children are the boxes refined next. The walk stops when
   nothing passes, no box of the job can be split, or the box depth exceeds ``tree_depth`` (boxes
   at depths 0..tree_depth are refined, as ReX's ``depth <= tree_depth``).

**Static boxes, batched, queue length 1.** Each iteration carries a *parent* mask: the cells the
last chosen (passing) mutant kept, all True at the root. A job is up to 3 boxes (the chosen
mutant's kept children) lying inside the parent. Refining box b of the job, a mutant keeps
``(parent \\ b) | chosen children of b``: the other boxes of the job *and* everything the earlier
passing mutants kept (their static boxes) stay. So every mutant is its passing parent minus some
children of one box, and the parent of the next depth is exactly the mutant that passed. Unlike
the ReX code, static boxes survive to later depths, the passing mutants of *all* refinements of a
depth compete for the next job, and 1-D children are the box's own cells (not a prefix).
docs/statistics.md lists every deviation from ReX; ``SearchConfig.map_combination`` and
``SearchConfig.cut_rule`` offer ReX's multiplicative maps and cut rule.

**Batching.** All clips x iterations advance in lock-step, one depth at a time, and the whole
walk is one jit-compiled function (``_walk``, compiled once per model, grid, clips and settings):
a ``lax.while_loop`` over depths that stops on the device once no iteration is alive, so nothing
waits for the device between depths. A depth splits every job box, sorts the valid candidates
(alive iteration, real and splittable box) first, and inside an inner ``lax.while_loop`` that runs
only as many model calls as there are valid candidates takes them ``max_batch`` at a time (at most
clips x iterations x 3 boxes x 14 mutants), builds their masks from box bounds with iota compares,
synthesises them with ``vmap(domain.synthesize)`` and classifies them with one
``apply(params, waveforms[B, T])`` per chunk (the padding of the last chunk is computed and thrown
away). With ``linear_synthesis`` (the default, ``max_batch >= 14``) a chunk is whole refinements:
synthesis is affine in the mask, so a refinement's 14 mutants are sums of 5 syntheses (the box's
surroundings and its 4 children), which cuts the inverse transforms per candidate from 1 to 5/14.
With a mesh, each chunk is split over one mesh axis and every device synthesises and classifies
its own share under ``jax.shard_map`` (:func:`jsuff.evaluate.on_shards`); only labels and
confidences cross devices. Nothing is quadratic in the grid: a chunk costs
``max_batch x grid``. Credits are integers (6/|A| in units of 1/6) added at the corners of each
child box in a per-clip 2-D difference array and integrated once at the end, so maps are exact,
cost O(grid) per depth, and do not depend on chunking, batching or devices. Randomness: every
word a clip's walks draw comes up front from that clip's key alone, so batched clips equal
one-at-a-time, and the same key gives the same trees.

**Rounds that stop.** With ``SearchConfig.round_iters`` and ``stop_overlap`` set (the defaults)
the iterations are walked in rounds (:func:`walk_rounds`, a ``lax.while_loop`` over rounds in the
same compiled call) and a clip stops once the top cells of its target map are the ones it had
with half the iterations (``SearchConfig`` gives the rule, docs/statistics.md what it changes).

**Embedding.** :func:`responsibility_maps` is traceable: inside a caller's ``jax.jit`` or
``jax.vmap`` (over clips, keys, targets) it becomes part of the caller's program.
:func:`walk` runs any subset of the iterations (a slice of :func:`iteration_draws`), and
:func:`merge_walks` joins such parts into the walk of all of them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> def apply(p, x):  # class 1 iff the 30-40 bin band carries energy
    ...     e = jnp.abs(jnp.fft.rfft(x))[:, 30:40].sum(-1, keepdims=True)
    ...     return jnp.concatenate([jnp.ones_like(e), e], axis=-1)
    >>> x = jnp.cos(2 * jnp.pi * 35 * jnp.arange(256.0) / 256)
    >>> r = responsibility_maps(apply, None, x, config=SearchConfig(iters=4), key=jax.random.key(0))
    >>> r.maps.shape, int(r.targets[0])
    ((1, 2, 129), 1)
    >>> int(r.maps[0, 1].argmax()) in range(30, 40)
    True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jsuff.domains import RFFT, Coefficients, Domain, as_domain
from jsuff.evaluate import (
    COMPUTE_DTYPES,
    NOT_GIVEN,
    ApplyFn,
    Clips,
    cast_params,
    clip_keys,
    device_batch,
    masked_logits,
    model_call,
    model_jit,
    model_logits,
    on_shards,
    prepare,
    replicate,
    resolve_axis,
    resolve_batch,
    top1_and_confidence,
)

__all__ = [
    "CUT_RULES",
    "MAP_COMBINATIONS",
    "SUBSETS",
    "SearchConfig",
    "SearchResult",
    "Walk",
    "combine_maps",
    "iteration_draws",
    "maps_of",
    "merge_walks",
    "responsibility_loop",
    "responsibility_maps",
    "walk",
    "walk_rounds",
]

#: The 14 non-empty proper subsets of a box's 4 children, by size then lexicographically.
SUBSETS: tuple[tuple[int, ...], ...] = tuple(
    s for k in (1, 2, 3) for s in itertools.combinations(range(4), k)
)
_BITS = np.array([[j in s for j in range(4)] for s in SUBSETS], bool)  # [14, 4]
#: Credit unit: 1/|A| is stored as 6/|A| (an integer for |A| in 1..3), so sums are exact.
CREDIT_UNIT = 6
_CREDIT = (_BITS * (CREDIT_UNIT // _BITS.sum(1, keepdims=True))).astype(np.int32)  # [14, 4]
_SLOTS = 3  # a passing mutant keeps at most 3 children: a job has at most 3 boxes
#: The k-th child of each subset ([14, 3]; the first again where the subset has fewer) and
#: whether it exists.
_KTH = np.array([[s[min(k, len(s) - 1)] for k in range(3)] for s in SUBSETS], np.int32)
_KTH_ON = np.array([[k < len(s) for k in range(3)] for s in SUBSETS], bool)

#: How the iterations' maps are combined (``SearchConfig.map_combination``).
MAP_COMBINATIONS = ("additive", "multiplicative")
#: Where a 1-D box may be cut, and how a 2-D box's corner point is drawn (``SearchConfig.cut_rule``).
CUT_RULES = ("interior", "rex")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings of the responsibility search (frozen: a static jit argument).

    Attributes:
        iters: independent random partition trees per clip (maps are summed).
        tree_depth: deepest box depth that is refined (root = 0).
        min_box_size: a box with fewer cells is not split.
        confidence_filter: a mutant passes only if its target confidence is at least this
            fraction of the clip's (0 = label only).
        max_batch: candidates per model call (bounds memory: ``max_batch x grid`` masks).
            ``None`` (default): one refinement (14 mutants) per device on a CPU, 64 elsewhere
            (:func:`jsuff.evaluate.resolve_batch`).
        compute_dtype: ``"float32"`` (default) or ``"bfloat16"``: the dtype of the search's
            candidate evaluation. With ``"bfloat16"`` the synthesised waveforms and the floating
            parameters are cast to bfloat16 for the model call (logits back to float32 for the
            label and softmax); see :func:`jsuff.evaluate.model_logits`. Extraction and
            verification stay float32.
        linear_synthesis: synthesise the 14 mutants of a refinement from 5 syntheses (the box's
            surroundings and its 4 children) and their sums, which the domain's synthesis allows
            because it is affine in the mask (``Domain.affine``). Same candidates up to float32
            round-off, a third of the inverse transforms. Used when ``max_batch >= 14``; False
            synthesises every candidate on its own.
        map_combination: how the ``iters`` maps are combined. ``"additive"`` (default): summed.
            ``"multiplicative"``: ReX's default (``responsibility_style``): each iteration's map
            starts at 1 everywhere and adds its credits, the combined map is the elementwise
            product over iterations, rescaled to a maximum of 1 per class (a class that never
            got credit keeps a zero map). Needs one map per iteration during the walk
            (``iters`` x the memory of the maps).
        cut_rule: ``"interior"`` (default): a 1-D box is cut at 3 distinct interior points, so
            its 4 children are non-empty; a 2-D box at a uniform interior point. ``"rex"``: as
            ReX's uniform distribution draws them: 3 distinct offsets in ``[0, width)``, so
            offset 0 (probability 3/width) leaves the first child empty; a 2-D corner is a flat
            position uniform in ``[1, height x width)``, which can leave the top or left
            quadrants empty. An empty child is kept by mutants and counted in their ``|A|``, as
            in ReX, but holds no cells to credit.
        round_iters: walk the iterations in rounds of this many (the last round may be
            smaller) so that a clip can stop once it has its answer (``stop_overlap``).
            ``None``: one round of all ``iters``. Without stopping, rounds give exactly the maps,
            queries and depths of one round (:func:`walk_rounds`).
        stop_cells: the size of the *top set*: the first ``stop_cells`` cells of the ranking of
            the target's map (ties: the lower cell first, as the extraction ranks them).
        stop_overlap: the stopping rule. After round r >= 2 (never after the last round), a
            clip stops when at least this fraction of its top set was also in its top set after
            round ``r // 2`` (half the evidence or less) and its target map has credit: doubling
            the iterations no longer changes what the extraction ranks first. A stopped clip
            walks no more iterations; its maps are the sum (or product) of the iterations it
            walked, so they are the maps of a smaller ``iters``. ``None``: never stop, walk all
            ``iters``. docs/statistics.md ("Where jsuff's search departs from ReX") gives the
            rule and benchmarks/README.md the measurements behind the defaults.
    """

    iters: int = 20
    tree_depth: int = 10
    min_box_size: int = 10
    confidence_filter: float = 0.0
    max_batch: int | None = None
    compute_dtype: str = "float32"
    linear_synthesis: bool = True
    map_combination: str = "additive"
    cut_rule: str = "interior"
    round_iters: int | None = 2
    stop_cells: int = 200
    stop_overlap: float | None = 0.7

    def __post_init__(self) -> None:
        if self.map_combination not in MAP_COMBINATIONS:
            raise ValueError(
                f"SearchConfig.map_combination must be one of {MAP_COMBINATIONS}, got {self.map_combination!r}"
            )
        if self.cut_rule not in CUT_RULES:
            raise ValueError(f"SearchConfig.cut_rule must be one of {CUT_RULES}, got {self.cut_rule!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"SearchConfig.compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}"
            )
        for name in ("iters", "max_batch", "stop_cells"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"SearchConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.round_iters is not None and self.round_iters < 1:
            raise ValueError(f"SearchConfig.round_iters must be >= 1 or None, got {self.round_iters}")
        if self.stop_overlap is not None and not 0.0 < self.stop_overlap <= 1.0:
            raise ValueError(f"SearchConfig.stop_overlap must be in (0, 1] or None, got {self.stop_overlap}")
        if self.tree_depth < 0:
            raise ValueError(f"SearchConfig.tree_depth must be >= 0, got {self.tree_depth}")
        if self.min_box_size < 4:
            raise ValueError(
                f"SearchConfig.min_box_size must be >= 4 (a box splits into 4 non-empty children), "
                f"got {self.min_box_size}"
            )
        if not 0.0 <= self.confidence_filter <= 1.0:
            raise ValueError(f"SearchConfig.confidence_filter must be in [0, 1], got {self.confidence_filter}")


class SearchResult(NamedTuple):
    """Responsibility maps of N clips.

    Attributes:
        maps: ``[N, C, *grid]`` float32; ``maps[n, c]`` is the credit mutants predicted as class
            ``c`` earned over the grid (summed over iterations). ``[N, 1, *grid]``, the target's
            map, when searched with ``target_only``.
        targets: ``[N]`` the label each clip was searched for.
        target_confidence: ``[N]`` softmax confidence of the target on the clip.
        queries: ``[N]`` model evaluations of mutants (padding excluded).
        depth: ``[N]`` deepest refinement at which some mutant passed, over iterations (-1: none).
        iterations: ``[N]`` iterations walked (fewer than ``iters`` where the search stopped,
            ``SearchConfig.stop_overlap``; 0 for inactive clips).
    """

    maps: np.ndarray
    targets: np.ndarray
    target_confidence: np.ndarray
    queries: np.ndarray
    depth: np.ndarray
    iterations: np.ndarray


# ----------------------------------------------------------------------------------------------
# Boxes: (r0, r1, c0, c1) half-open; 1-D grids are one row.
# ----------------------------------------------------------------------------------------------


def _split(u: jax.Array, box: jax.Array, two_d: bool, rex_cuts: bool = False) -> jax.Array:
    """The 4 children ``[4, 4]`` of one box from 3 random words ``u`` (meaningless for boxes that
    cannot be split). A draw in ``[0, n)`` is ``u % n``: uniform up to a bias below n / 2**32.
    ``rex_cuts``: ReX's cut rule (``SearchConfig.cut_rule``), which allows empty children."""
    r0, r1, c0, c1 = box[0], box[1], box[2], box[3]

    def below(word: jax.Array, n: jax.Array) -> jax.Array:
        return (word % jnp.maximum(n, 1).astype(jnp.uint32)).astype(jnp.int32)

    if two_d:
        if rex_cuts:  # a flat position uniform in [1, h * w), as ReX draws the corner
            w = jnp.maximum(c1 - c0, 1)
            pos = 1 + below(u[0], (r1 - r0) * w - 1)
            row, col = r0 + pos // w, c0 + pos % w
        else:
            row = r0 + 1 + below(u[0], r1 - r0 - 1)
            col = c0 + 1 + below(u[1], c1 - c0 - 1)
        return jnp.stack([
            jnp.stack([r0, row, c0, col]),
            jnp.stack([r0, row, col, c1]),
            jnp.stack([row, r1, c0, col]),
            jnp.stack([row, r1, col, c1]),
        ])
    # 3 distinct cut points uniformly among the m = width - 1 interior positions (ReX: the width
    # offsets 0..width-1): draw them one at a time from what is left (shifting past the ones
    # already taken).
    m = c1 - c0 - (0 if rex_cuts else 1)
    a = below(u[0], m)
    b = below(u[1], m - 1)
    b = b + (b >= a).astype(jnp.int32)
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    c = below(u[2], m - 2)
    c = c + (c >= lo).astype(jnp.int32)
    c = c + (c >= hi).astype(jnp.int32)
    p = jnp.sort(jnp.stack([a, b, c])) + c0 + (0 if rex_cuts else 1)
    edges = jnp.stack([c0, p[0], p[1], p[2], c1])
    return jnp.stack([jnp.stack([r0, r1, edges[j], edges[j + 1]]) for j in range(4)])


def _area(box: jax.Array) -> jax.Array:
    return (box[..., 1] - box[..., 0]) * (box[..., 3] - box[..., 2])


def _splittable(box: jax.Array, min_box_size: int, two_d: bool) -> jax.Array:
    h, w = box[..., 1] - box[..., 0], box[..., 3] - box[..., 2]
    shape_ok = (h >= 2) & (w >= 2) if two_d else w >= 4
    return shape_ok & (h * w >= min_box_size)


def _in_box(box: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """``[R, W]`` bool: the cells of one box."""
    rows = jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    return (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])


def _mutant(parent: jax.Array, box: jax.Array, kids: jax.Array, bits: jax.Array) -> jax.Array:
    """Keep the parent outside ``box`` and the children of ``box`` selected by ``bits[4]``."""
    shape = parent.shape
    keep = parent & ~_in_box(box, shape)
    for j in range(4):
        keep = keep | (bits[j] & _in_box(kids[j], shape))
    return keep


@functools.partial(jax.jit, static_argnames=("iters", "tree_depth"))
def iteration_draws(keys: jax.Array, iters: int, tree_depth: int) -> jax.Array:
    """``[N, iters, tree_depth + 1, 3, 3]`` uint32: every random word the walks of N clips draw
    (iteration, depth, job slot, cut), made up front from each clip's key (a flat draw:
    multi-dimensional ``random.bits`` compiles slowly).

    Iteration ``i``'s words do not depend on how many iterations follow it, as long as they are
    drawn together: draw all iterations once and hand :func:`walk` a slice ``draws[:, a:b]`` to
    run iterations ``a..b-1`` alone (what the full walk does for them).

    Example:
        >>> d = iteration_draws(jax.random.split(jax.random.key(0), 2), iters=5, tree_depth=3)
        >>> d.shape, d.dtype
        ((2, 5, 4, 3, 3), dtype('uint32'))
    """
    shape = (iters, tree_depth + 1, _SLOTS, 3)
    bits = jax.vmap(lambda k: jax.random.bits(k, (int(np.prod(shape)),), jnp.uint32))(keys)
    return bits.reshape((keys.shape[0], *shape))


# ----------------------------------------------------------------------------------------------
# The batched search
# ----------------------------------------------------------------------------------------------


class Walk(NamedTuple):
    """What :func:`walk` returns for N clips (device arrays, traceable).

    Attributes:
        credits: ``[N, L, R, W, C]`` int32 credit in units of ``1 / CREDIT_UNIT`` over the grid
            (a 1-D grid is one row, ``R = 1``), per class (``C = 1``, the target, with
            ``target_only``). ``L = 1`` (the iterations summed) for the additive combination of
            maps, ``L`` = the iterations walked for the multiplicative one.
        queries: ``[N]`` int32 mutants evaluated.
        depth: ``[N]`` int32 deepest refinement at which some mutant passed (-1: none).
        iterations: ``[N]`` int32 iterations walked (0 for an inactive clip).
    """

    credits: jax.Array
    queries: jax.Array
    depth: jax.Array
    iterations: jax.Array


class _State(NamedTuple):
    depth: jax.Array  # () int32: tree depth of the boxes refined next
    parent: jax.Array  # [N, I, R, W] bool: cells kept by the last passing mutant
    boxes: jax.Array  # [N, I, 3, 4] int32: the job's boxes
    slot_ok: jax.Array  # [N, I, 3] bool: which job slots hold a box
    alive: jax.Array  # [N, I] bool
    diff: jax.Array  # [N, L, R + 1, W + 1, C] int32: 2-D difference arrays of the credits, one per
    # iteration (L = iters) for the multiplicative combination of maps, else one in all (L = 1)
    queries: jax.Array  # [N] int32
    deepest: jax.Array  # [N] int32


class _Proposal(NamedTuple):
    kids: jax.Array  # [N, I, 3, 4, 4] int32: children of each job box
    valid: jax.Array  # [N, I, 3, 14] bool: candidates that are evaluated


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the compiled walk is specialised on (a static jit argument): the settings that change
    shapes or code, never data (the confidence threshold is traced, so changing it does not
    recompile)."""

    domain: Domain
    grid: tuple[int, ...]
    classes: int  # maps kept: the model's classes, or 1 (target_only)
    batch: int  # candidates per model call
    tree_depth: int
    min_box_size: int
    compute_dtype: str
    linear: bool
    rex_cuts: bool
    per_iteration: bool  # one credit map per iteration (the multiplicative combination)
    target_only: bool
    mesh: Mesh | None
    axis: str | None

    @property
    def two_d(self) -> bool:
        return len(self.grid) == 2


def _grid2(grid: tuple[int, ...]) -> tuple[int, int]:
    return (1, grid[0]) if len(grid) == 1 else (grid[0], grid[1])


# The walk is one jitted function (``_walk``, compiled and cached per model by
# :func:`jsuff.evaluate.model_jit`): a ``lax.while_loop`` over depths whose body evaluates a level
# (``_level``, the only part that sees the model) and credits it (``_advance``).


def _initial_state(active: jax.Array, iters: int, plan: _Plan) -> _State:
    """Every iteration at the root: one job, the whole grid."""
    n = active.shape[0]
    r, w = _grid2(plan.grid)
    boxes = jnp.zeros((n, iters, _SLOTS, 4), jnp.int32).at[:, :, 0].set(jnp.array([0, r, 0, w], jnp.int32))
    return _State(
        depth=jnp.int32(0),
        parent=jnp.ones((n, iters, r, w), bool),
        boxes=boxes,
        slot_ok=jnp.broadcast_to(jnp.arange(_SLOTS) == 0, (n, iters, _SLOTS)),
        alive=jnp.broadcast_to(active[:, None], (n, iters)),
        diff=jnp.zeros((n, iters if plan.per_iteration else 1, r + 1, w + 1, plan.classes), jnp.int32),
        queries=jnp.zeros(n, jnp.int32),
        deepest=jnp.full(n, -1, jnp.int32),
    )


def _propose(state: _State, draws: jax.Array, plan: _Plan) -> _Proposal:
    u = jax.lax.dynamic_index_in_dim(draws, state.depth, axis=2, keepdims=False)  # [N, I, 3, 3]
    split = functools.partial(_split, two_d=plan.two_d, rex_cuts=plan.rex_cuts)
    kids = jax.vmap(jax.vmap(jax.vmap(split)))(u, state.boxes)
    can = state.slot_ok & state.alive[:, :, None] & _splittable(state.boxes, plan.min_box_size, plan.two_d)
    return _Proposal(kids, jnp.broadcast_to(can[..., None], (*can.shape, len(SUBSETS))))


def _in_chunks(
    valid: jax.Array,
    size: int,
    width: int,
    classify: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
) -> tuple[jax.Array, jax.Array]:
    """Labels and confidences ``[len(valid) * width]`` of the units where ``valid[units]`` is
    True, ``size`` units per ``classify(ids[size])`` call in a ``lax.while_loop`` that runs only
    as many calls as there are valid units; unit ``i`` owns outputs ``i * width .. i * width +
    width - 1`` (traced). Units never evaluated keep label 0 and confidence 0."""
    # compaction: the valid units first, in order (a stable sort, not nonzero's scan)
    order = jnp.argsort(~valid, stable=True).astype(jnp.int32)
    count = valid.sum(dtype=jnp.int32)
    units = order.shape[0]
    total = units * width
    chunks = -(-units // size)
    order = jnp.concatenate([order, jnp.zeros(chunks * size - units, jnp.int32)])

    def chunk(carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        k, pred, conf = carry
        ids = jax.lax.dynamic_slice(order, (k * size,), (size,))
        real = k * size + jnp.arange(size, dtype=jnp.int32) < count
        p, q = classify(ids)
        slot = ids[:, None] * width + jnp.arange(width, dtype=jnp.int32)[None, :]
        pos = jnp.where(real[:, None], slot, total).reshape(-1)  # padding writes to a discarded slot
        return k + 1, pred.at[pos].set(p), conf.at[pos].set(q)

    init = (jnp.int32(0), jnp.zeros(total + 1, jnp.int32), jnp.zeros(total + 1, jnp.float32))
    _, pred, conf = jax.lax.while_loop(lambda cr: cr[0] * size < count, chunk, init)
    return pred[:total], conf[:total]


def _refinements_per_call(plan: _Plan) -> int:
    """Whole refinements per model call with linear synthesis (0: synthesise each mutant), a
    multiple of the device count so every device gets a share."""
    if not plan.linear:
        return 0
    per_device = 1 if plan.mesh is None else plan.mesh.shape[plan.axis]
    return plan.batch // len(SUBSETS) // per_device * per_device


def _level(
    params: Any,
    coeffs: Coefficients,
    silence: jax.Array | None,
    targets: jax.Array,
    state: _State,
    draws: jax.Array,
    *,
    apply_fn: ApplyFn,
    plan: _Plan,
) -> tuple[_Proposal, jax.Array, jax.Array]:
    """Split the job boxes of one depth, then the top-1 label and target confidence of every valid
    candidate, ``plan.batch`` per model call (whole refinements of 14 per call with linear
    synthesis). ``params`` are already in the compute dtype."""
    prop = _propose(state, draws, plan)
    n, iters, slots, m = prop.valid.shape
    if silence is not None:
        pred, conf = _evaluate_by_refinement(
            params, coeffs, silence, targets, state.parent, state.boxes, prop, apply_fn=apply_fn, plan=plan
        )
        return prop, pred, conf
    bits_table = jnp.asarray(_BITS)
    grid, batch = plan.grid, plan.batch

    def classify(ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        ci, rest = jnp.divmod(ids, iters * slots * m)
        ii, rest = jnp.divmod(rest, slots * m)
        bi, si = jnp.divmod(rest, m)
        masks = jax.vmap(_mutant)(
            state.parent[ci, ii], state.boxes[ci, ii, bi], prop.kids[ci, ii, bi], bits_table[si]
        )
        logits = masked_logits(
            apply_fn, params, plan.domain, coeffs, ci, masks.reshape((batch, *grid)), plan.mesh, plan.axis,
            plan.compute_dtype,
        )
        return top1_and_confidence(logits, targets[ci])

    pred, conf = _in_chunks(prop.valid.reshape(-1), batch, 1, classify)
    return prop, pred.reshape(n, iters, slots, m), conf.reshape(n, iters, slots, m)


def _evaluate_by_refinement(
    params: Any,
    coeffs: Coefficients,
    silence: jax.Array,
    targets: jax.Array,
    parent: jax.Array,
    boxes: jax.Array,
    prop: _Proposal,
    *,
    apply_fn: ApplyFn,
    plan: _Plan,
) -> tuple[jax.Array, jax.Array]:
    """Like the candidate loop of :func:`_level`, whole refinements per model call, their mutants
    synthesised from 5 waveforms each; ``silence[N, T]`` is ``s(0)`` of each clip.

    A mutant keeps ``base | kids_A`` with ``base = parent \\ box`` and the children of ``box``
    disjoint from ``base`` and from each other. Synthesis is affine in the mask
    (``s(M) = s(0) + L(M)``, ``L`` linear), so ``s(base | kids_A) = s(base) + sum_{j in A}
    (s(kid_j) - s(0))``: 5 syntheses per refinement instead of 14, and the 14 sums are elementwise
    adds.
    """
    n, iters, slots, m = prop.valid.shape
    grid, domain = plan.grid, plan.domain
    r, w = _grid2(grid)
    rb = _refinements_per_call(plan)
    in_box = jax.vmap(functools.partial(_in_box, shape=(r, w)))

    def local(params: Any, coeffs: Coefficients, silence: jax.Array, ci: jax.Array, masks: jax.Array,
              targets: jax.Array) -> tuple[jax.Array, jax.Array]:
        """pred/conf ``[b * 14]`` of ``b`` refinements, ``masks[b, 5, *grid]`` (one device's share)."""
        b = ci.shape[0]
        picked = jax.tree_util.tree_map(lambda a: a[jnp.repeat(ci, 5)], coeffs)
        parts = jax.vmap(domain.synthesize)(picked, masks.reshape((b * 5, *grid))).reshape(b, 5, -1)
        deltas = parts[:, 1:] - silence[ci][:, None]  # [b, 4, T]: what each child adds
        # the 14 sums as 3 gathers of children (the k-th child of each subset, masked where the
        # subset has fewer): one elementwise fusion; XLA's CPU dot for the [14, 4] x [4, T]
        # contraction, or a stack of 14 sums, costs as much as the syntheses themselves
        waves = parts[:, :1] + sum(
            jnp.where(_KTH_ON[None, :, k, None], deltas[:, _KTH[:, k]], 0.0) for k in range(3)
        )  # [b, 14, T]
        logits = model_logits(apply_fn, params, waves.reshape(b * m, -1), plan.compute_dtype)
        return top1_and_confidence(logits, jnp.repeat(targets, m))

    def classify(ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        ci, rest = jnp.divmod(ids, iters * slots)
        ii, bi = jnp.divmod(rest, slots)
        base = parent[ci, ii] & ~in_box(boxes[ci, ii, bi])  # [rb, R, W]
        kids = in_box(prop.kids[ci, ii, bi].reshape(rb * 4, 4)).reshape(rb, 4, r, w)
        masks = jnp.concatenate([base[:, None], kids], axis=1).reshape((rb, 5, *grid))
        return on_shards(local, plan.mesh, plan.axis, (params, coeffs, silence), (ci, masks, targets[ci]))

    # a refinement's 14 mutants are valid together: its first one stands for all
    pred, conf = _in_chunks(prop.valid[..., 0].reshape(-1), rb, m, classify)
    return pred.reshape(n, iters, slots, m), conf.reshape(n, iters, slots, m)


def _advance(
    state: _State,
    prop: _Proposal,
    pred: jax.Array,
    conf: jax.Array,
    targets: jax.Array,
    thresholds: jax.Array,
    *,
    target_only: bool = False,
) -> _State:
    """Credit the refinements that had a pass and move each iteration to its next job."""
    n, iters, slots, m = prop.valid.shape
    c = state.diff.shape[-1]
    kids, valid = prop.kids, prop.valid
    bits_table = jnp.asarray(_BITS)
    passes = valid & (pred == targets[:, None, None, None]) & (conf >= thresholds[:, None, None, None])
    refinement_passed = passes.any(-1)  # [N, I, 3]

    # credit: each mutant of a refinement with a pass gives 6/|A| to its predicted class over
    # each kept child -> weights [N, I, 3, child, class], added at the children's 4 corners of
    # the difference array (+ at (r0, c0) and (r1, c1), - at (r0, c1) and (r1, c0)), one scatter.
    if target_only:  # one map, the target's: the credit of mutants predicted as the target
        classes = targets.reshape(n, 1, 1, 1, 1)
    else:
        classes = jnp.arange(c, dtype=jnp.int32).reshape(1, 1, 1, 1, c)
    votes = (pred[..., None] == classes) & (valid & refinement_passed[..., None])[..., None]
    weight = jnp.sum(
        votes.astype(jnp.int32)[:, :, :, :, None, :] * jnp.asarray(_CREDIT).reshape(1, 1, 1, m, 4, 1), axis=3
    )  # [N, I, 3, 4, C]
    rows = jnp.stack([kids[..., 0], kids[..., 0], kids[..., 1], kids[..., 1]], axis=-1)
    cols = jnp.stack([kids[..., 2], kids[..., 3], kids[..., 2], kids[..., 3]], axis=-1)
    clip = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32).reshape(n, 1, 1, 1, 1), rows.shape)
    # which of the difference arrays: the iteration's own, or the one shared by all
    per_iteration = state.diff.shape[1] == iters and iters > 1
    it = jnp.arange(iters, dtype=jnp.int32) if per_iteration else jnp.zeros(iters, jnp.int32)
    layer = jnp.broadcast_to(it.reshape(1, iters, 1, 1, 1), rows.shape)
    sign = jnp.array([1, -1, -1, 1], jnp.int32).reshape(1, 1, 1, 1, 4, 1)
    diff = state.diff.at[clip, layer, rows, cols].add(weight[:, :, :, :, None, :] * sign)

    # next job: the passing mutant with the smallest kept area (the first on ties); all mutants of
    # an iteration share its parent, so comparing the change of area is enough
    kept_change = jnp.sum(
        bits_table.astype(jnp.int32).reshape(1, 1, 1, m, 4) * _area(kids)[:, :, :, None, :], axis=-1
    ) - _area(state.boxes)[..., None]
    score = jnp.where(passes, kept_change, jnp.iinfo(jnp.int32).max).reshape(n, iters, slots * m)
    choice = jnp.argmin(score, axis=-1)
    any_pass = passes.reshape(n, iters, -1).any(-1)
    cb, cs = jnp.divmod(choice, m)
    box_star = jnp.take_along_axis(state.boxes, cb[:, :, None, None], axis=2)[:, :, 0]
    kids_star = jnp.take_along_axis(kids, cb[:, :, None, None, None], axis=2)[:, :, 0]
    bits_star = bits_table[cs]  # [N, I, 4]
    chosen = jax.vmap(jax.vmap(_mutant))(state.parent, box_star, kids_star, bits_star)
    # the kept children, packed into the job's slots in order
    before = jnp.asarray(np.tril(np.ones((4, 4), np.int32), -1))  # before[j, j'] = j' < j
    slot_of = jnp.sum(bits_star.astype(jnp.int32)[:, :, None, :] * before.reshape(1, 1, 4, 4), axis=-1)
    place = bits_star[..., None] & (slot_of[..., None] == jnp.arange(slots).reshape(1, 1, 1, slots))
    new_boxes = jnp.sum(place.astype(jnp.int32)[..., None] * kids_star[:, :, :, None, :], axis=2)
    new_ok = jnp.arange(slots).reshape(1, 1, slots) < bits_star.sum(-1, dtype=jnp.int32)[..., None]
    keep = any_pass[:, :, None, None]
    return _State(
        depth=state.depth + 1,
        parent=jnp.where(keep, chosen, state.parent),
        boxes=jnp.where(keep, new_boxes, state.boxes),
        slot_ok=new_ok,
        alive=state.alive & any_pass,
        diff=diff,
        queries=state.queries + valid.sum((1, 2, 3), dtype=jnp.int32),
        deepest=jnp.where(refinement_passed.any((1, 2)), state.depth, state.deepest),
    )


def _walk_body(
    params: Any,
    coeffs: Coefficients,
    targets: jax.Array,
    thresholds: jax.Array,
    active: jax.Array,
    draws: jax.Array,
    *,
    apply_fn: ApplyFn,
    plan: _Plan,
) -> Walk:
    """All iterations of all clips, depth by depth in lock-step, as one ``lax.while_loop`` that
    stops once no iteration is alive (or past ``tree_depth``); credits integrated at the end."""
    params = cast_params(params, plan.compute_dtype)  # once, outside the loops
    n, iters = draws.shape[:2]
    silence = None
    if _refinements_per_call(plan) > 0:  # s(0) per clip, for linear synthesis
        silence = jax.vmap(plan.domain.synthesize)(coeffs, jnp.zeros((n, *plan.grid), bool))

    def level(state: _State) -> _State:
        prop, pred, conf = _level(params, coeffs, silence, targets, state, draws, apply_fn=apply_fn, plan=plan)
        return _advance(state, prop, pred, conf, targets, thresholds, target_only=plan.target_only)

    def going(state: _State) -> jax.Array:
        return (state.depth <= plan.tree_depth) & state.alive.any()

    state = jax.lax.while_loop(going, level, _initial_state(active, iters, plan))
    r, w = _grid2(plan.grid)
    credits = jnp.cumsum(jnp.cumsum(state.diff, axis=2), axis=3)[:, :, :r, :w, :]
    return Walk(credits, state.queries, state.deepest, jnp.where(active, jnp.int32(iters), 0))


_walk = model_jit(static_argnames=("plan",))(_walk_body)


def walk(
    apply_fn: ApplyFn,
    params: Any,
    clips: Clips,
    draws: jax.Array,
    *,
    domain: Domain = RFFT(),
    config: SearchConfig = SearchConfig(),
    active: Any = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    target_only: bool = False,
) -> Walk:
    """The batched walk of prepared clips over the iterations whose random words are ``draws``:
    one compiled call (traceable: it runs inside ``jax.jit`` and ``jax.vmap`` too).

    :func:`responsibility_maps` is ``walk`` over ``iteration_draws(keys, config.iters, ...)``
    followed by :func:`maps_of`. Iterations are independent, so walking ``draws[:, a:b]`` and
    ``draws[:, b:c]`` and merging them (:func:`merge_walks`) equals walking ``draws[:, a:c]``:
    a caller can run the iterations in rounds and stop early.

    Args:
        apply_fn, params: the model (its identity keys the compilation cache).
        clips: :class:`jsuff.evaluate.Clips` from :func:`jsuff.evaluate.prepare`.
        draws: ``[N, I, config.tree_depth + 1, 3, 3]`` uint32 from :func:`iteration_draws` (or a
            slice of it over iterations). ``config.iters`` is not used: ``I`` is.
        domain, config, active, mesh, mesh_axis, target_only: as :func:`responsibility_maps`.

    Returns:
        :class:`Walk`: credits, queries and depth, on the device.

    Example:
        >>> import jax.numpy as jnp
        >>> from jsuff.evaluate import prepare
        >>> from jsuff.domains import Time
        >>> apply = lambda p, x: jnp.stack([x[:, :4].sum(-1), x[:, 4:].sum(-1)], axis=-1)
        >>> clips = prepare(apply, None, jnp.ones((1, 64)), domain=Time())
        >>> cfg = SearchConfig(iters=4)
        >>> draws = iteration_draws(jax.random.key(0)[None], iters=cfg.iters, tree_depth=cfg.tree_depth)
        >>> rounds = [walk(apply, None, clips, draws[:, i : i + 2], domain=Time(), config=cfg) for i in (0, 2)]
        >>> r = maps_of(merge_walks(rounds, cfg.map_combination), clips, (64,), cfg.map_combination)
        >>> r.maps.shape  # equal to responsibility_maps(..., config=cfg, key=jax.random.key(0))
        (1, 2, 64)
    """
    params, plan, act, thresholds = _walk_args(
        params, clips, draws, domain, config, active, mesh, mesh_axis, target_only, draws.shape[1]
    )
    return _walk(params, clips.coeffs, clips.targets, thresholds, act, draws, apply_fn=apply_fn, plan=plan)


def _walk_args(
    params: Any,
    clips: Clips,
    draws: jax.Array,
    domain: Domain,
    config: SearchConfig,
    active: Any,
    mesh: Mesh | None,
    mesh_axis: str | None,
    target_only: bool,
    iters: int,
) -> tuple[Any, _Plan, jax.Array, jax.Array]:
    """What :func:`walk` and :func:`walk_rounds` hand the compiled walk: the parameters (replicated
    over the mesh), the plan of a walk of ``iters`` iterations at once, the active clips and the
    confidence thresholds; ``draws`` is checked."""
    axis = resolve_axis(mesh, mesh_axis)
    params = replicate(params, mesh)
    n = clips.waveforms.shape[0]
    expected = (n, config.tree_depth + 1, _SLOTS, 3)
    if draws.ndim != 5 or (draws.shape[0], *draws.shape[2:]) != expected:
        raise ValueError(
            f"draws must be [N, iterations, tree_depth + 1, 3, 3] = [{n}, I, {config.tree_depth + 1}, 3, 3] "
            f"(iteration_draws), got shape {draws.shape}"
        )
    plan = _plan(clips, domain, config, mesh, axis, target_only, iters)
    act = jnp.ones(n, bool) if active is None else jnp.broadcast_to(jnp.asarray(active, bool), (n,))
    return params, plan, act, clips.confidence * jnp.float32(config.confidence_filter)


def _plan(
    clips: Clips, domain: Domain, config: SearchConfig, mesh: Mesh | None, axis: str | None, target_only: bool,
    iters: int,
) -> _Plan:
    """The static plan of a compiled walk of ``iters`` iterations of ``clips`` at once."""
    n, t = clips.waveforms.shape
    batch = resolve_batch(config.max_batch, mesh, axis, len(SUBSETS))
    return _Plan(
        domain=domain,
        grid=tuple(domain.grid_shape(t)),
        classes=1 if target_only else int(clips.logits.shape[1]),
        batch=device_batch(batch, n * iters * _SLOTS * len(SUBSETS), mesh, axis),
        tree_depth=config.tree_depth,
        min_box_size=config.min_box_size,
        compute_dtype=config.compute_dtype,
        linear=config.linear_synthesis and domain.affine,
        rex_cuts=config.cut_rule == "rex",
        per_iteration=config.map_combination == "multiplicative" and iters > 1,
        target_only=target_only,
        mesh=mesh,
        axis=axis,
    )


# ----------------------------------------------------------------------------------------------
# Rounds: the iterations walked a few at a time, each clip stopping once its top set is stable
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rule:
    """The rounds and the stopping rule (a static jit argument; ``SearchConfig.round_iters``,
    ``stop_cells``, ``stop_overlap``)."""

    size: int  # iterations per round (the last round may have fewer)
    cells: int  # the top set's size (at most the grid's cells)
    overlap: float | None  # None: never stop
    multiplicative: bool


def _top_set(credits: jax.Array, rule: _Rule) -> tuple[jax.Array, jax.Array]:
    """The top set ``[N, cells]`` of the target maps ``credits[N, L, R, W]`` (integer credit) and
    whether each map has credit ``[N]``. The ranking is the combined map's: the summed credit
    (additive, exact integers) or the sum over iterations of ``log1p(credit)`` (multiplicative:
    the logarithm of ReX's product, whose rescaling does not change the order); ties go to the
    lower cell."""
    n = credits.shape[0]
    if rule.multiplicative:
        scores = jnp.log1p(credits.astype(jnp.float32) / CREDIT_UNIT).sum(axis=1).reshape(n, -1)
    else:
        scores = credits.sum(axis=1).reshape(n, -1)
    top = jnp.argsort(-scores, axis=1, stable=True)[:, : rule.cells].astype(jnp.int32)
    return top, scores.max(axis=1) > 0


def _walk_rounds_body(
    params: Any,
    coeffs: Coefficients,
    targets: jax.Array,
    thresholds: jax.Array,
    active: jax.Array,
    draws: jax.Array,
    *,
    apply_fn: ApplyFn,
    plan: _Plan,
    last_plan: _Plan | None,
    rule: _Rule,
) -> Walk:
    """The iterations of ``draws[N, I, ...]`` in rounds of ``rule.size``: a ``lax.while_loop``
    over the whole rounds that ends once no clip is active, each round one walk (``plan``), then
    the smaller last round if any (``last_plan``). After each round but the last, a clip whose top
    set is stable (``SearchConfig.stop_overlap``) is made inactive."""
    n, iters = draws.shape[:2]
    size = rule.size
    whole, rounds = iters // size, -(-iters // size)
    layers = iters if rule.multiplicative and iters > 1 else 1  # as walk() over all of them
    r, w = _grid2(plan.grid)
    credits = jnp.zeros((n, layers, r, w, plan.classes), jnp.int32)
    tops = jnp.zeros((rounds, n, rule.cells), jnp.int32)
    zero = jnp.zeros(n, jnp.int32)
    target_class = jnp.zeros(n, jnp.int32) if plan.target_only else targets

    def add(total: tuple, part: Walk, start: Any) -> tuple:
        """``(credits, queries, depth, walked)`` with the walk of iterations ``start..`` added."""
        credits, queries, depth, walked = total
        if layers == 1:
            credits = credits + part.credits
        else:
            credits = jax.lax.dynamic_update_slice_in_dim(credits, part.credits, start, axis=1)
        return credits, queries + part.queries, jnp.maximum(depth, part.depth), walked + part.iterations

    def stop(k: jax.Array, credits: jax.Array, tops: jax.Array, active: jax.Array) -> tuple[jax.Array, jax.Array]:
        """After round ``k + 1`` (1-based r): record its top set; stop the stable clips."""
        mine = jnp.take_along_axis(credits, target_class.reshape(n, 1, 1, 1, 1), axis=4)[..., 0]
        top, credited = _top_set(mine, rule)
        tops = tops.at[k].set(top)
        earlier = tops[jnp.maximum((k + 1) // 2 - 1, 0)]
        shared = (top[:, :, None] == earlier[:, None, :]).any(-1).sum(-1)
        stable = (k >= 1) & credited & (shared >= math.ceil(rule.overlap * rule.cells))  # ints: exact
        return tops, active & ~stable

    def one_round(carry: tuple) -> tuple:
        k, credits, queries, depth, walked, tops, act = carry
        part = _walk_body(
            params, coeffs, targets, thresholds, act, jax.lax.dynamic_slice_in_dim(draws, k * size, size, axis=1),
            apply_fn=apply_fn, plan=plan,
        )
        credits, queries, depth, walked = add((credits, queries, depth, walked), part, k * size)
        if rule.overlap is not None:
            tops, stopped = stop(k, credits, tops, act)
            act = jnp.where(k + 1 < rounds, stopped, act)  # never after the last round
        return k + 1, credits, queries, depth, walked, tops, act

    init = (jnp.int32(0), credits, zero, zero - 1, zero, tops, active)
    _, credits, queries, depth, walked, _, act = jax.lax.while_loop(
        lambda c: (c[0] < whole) & c[-1].any(), one_round, init
    )
    if last_plan is not None:
        part = _walk_body(
            params, coeffs, targets, thresholds, act, draws[:, whole * size :], apply_fn=apply_fn, plan=last_plan
        )
        credits, queries, depth, walked = add((credits, queries, depth, walked), part, whole * size)
    return Walk(credits, queries, depth, walked)


_walk_rounds = model_jit(static_argnames=("plan", "last_plan", "rule"))(_walk_rounds_body)


def walk_rounds(
    apply_fn: ApplyFn,
    params: Any,
    clips: Clips,
    draws: jax.Array,
    *,
    domain: Domain = RFFT(),
    config: SearchConfig = SearchConfig(),
    active: Any = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    target_only: bool = False,
) -> Walk:
    """:func:`walk` in rounds of ``config.round_iters`` iterations, each clip stopping after the
    round where its top set is stable (``config.stop_overlap``; see :class:`SearchConfig`).

    One compiled call, traceable like :func:`walk`: a ``lax.while_loop`` over rounds (each round a
    walk of ``round_iters`` iterations, the stopping rule evaluated on the device) that ends once
    every clip has stopped. Without stopping (``stop_overlap=None``) it equals :func:`walk` over
    all the draws: the same credits, queries and depths. A stopped clip's :class:`Walk` is that of
    the iterations it walked (``Walk.iterations``), its later iterations' credit zero.

    Example:
        >>> import jax.numpy as jnp
        >>> from jsuff.evaluate import prepare
        >>> from jsuff.domains import Time
        >>> apply = lambda p, x: jnp.stack([x[:, :4].sum(-1), x[:, 4:].sum(-1)], axis=-1)
        >>> clips = prepare(apply, None, jnp.ones((1, 64)), domain=Time())
        >>> cfg = SearchConfig(iters=8, round_iters=2, stop_cells=4, stop_overlap=0.5)
        >>> draws = iteration_draws(jax.random.key(0)[None], iters=cfg.iters, tree_depth=cfg.tree_depth)
        >>> w = walk_rounds(apply, None, clips, draws, domain=Time(), config=cfg)
        >>> int(w.iterations[0]) in (4, 6, 8)  # it may stop after round 2 or 3
        True
    """
    iters = draws.shape[1]
    size = iters if config.round_iters is None else min(config.round_iters, iters)
    params, plan, act, thresholds = _walk_args(
        params, clips, draws, domain, config, active, mesh, mesh_axis, target_only, size
    )
    last_plan = None
    if iters % size:  # the last, shorter round: the same walk with another plan
        last_plan = _plan(clips, domain, config, plan.mesh, plan.axis, target_only, iters % size)
    cells = int(np.prod(plan.grid))
    rule = _Rule(size, min(config.stop_cells, cells), config.stop_overlap,
                 config.map_combination == "multiplicative")
    return _walk_rounds(
        params, clips.coeffs, clips.targets, thresholds, act, draws, apply_fn=apply_fn, plan=plan,
        last_plan=last_plan, rule=rule,
    )


def merge_walks(parts: Iterable[Walk], combination: str = "additive") -> Walk:
    """One :class:`Walk` from walks of the same clips over disjoint iterations, in order (see
    :func:`walk`): credits summed (additive) or their iterations side by side (multiplicative),
    queries and iterations summed, the deepest depth kept."""
    parts = list(parts)
    if combination == "multiplicative":
        credits = jnp.concatenate([p.credits for p in parts], axis=1)
    else:
        credits = functools.reduce(jnp.add, [p.credits for p in parts])
    return Walk(
        credits,
        functools.reduce(jnp.add, [p.queries for p in parts]),
        functools.reduce(jnp.maximum, [p.depth for p in parts]),
        functools.reduce(jnp.add, [p.iterations for p in parts]),
    )


def maps_of(w: Walk, clips: Clips, grid: tuple[int, ...], combination: str = "additive") -> SearchResult:
    """The :class:`SearchResult` of a walk: credits combined into maps (:func:`combine_maps`).

    Concrete credits are combined on the host (in float64, NumPy arrays out); traced ones (inside
    ``jax.jit``/``jax.vmap``) on the device in float32, where XLA's division of the integer
    credits by ``CREDIT_UNIT`` may round a map value one float32 step away from the host's (the
    order of cells is the same)."""
    n = w.credits.shape[0]
    traced = isinstance(w.credits, jax.core.Tracer)
    credits = w.credits if traced else np.asarray(w.credits, np.int64)
    xp = jnp if traced else np
    combined = combine_maps(credits / CREDIT_UNIT, combination)  # [N, R, W, C]
    maps = xp.moveaxis(combined, -1, 1).reshape((n, combined.shape[-1], *grid))
    if traced:
        return SearchResult(
            maps.astype(jnp.float32), clips.targets, clips.confidence.astype(jnp.float32), w.queries, w.depth,
            w.iterations,
        )
    return SearchResult(
        maps=maps.astype(np.float32),
        targets=np.asarray(clips.targets),
        target_confidence=np.asarray(clips.confidence, np.float32),
        queries=np.asarray(w.queries, np.int64),
        depth=np.asarray(w.depth),
        iterations=np.asarray(w.iterations, np.int64),
    )


def responsibility_maps(
    apply_fn: ApplyFn,
    params: Any = NOT_GIVEN,
    waveforms: Any = NOT_GIVEN,
    *,
    domain: Domain | str = RFFT(),
    config: SearchConfig = SearchConfig(),
    key: jax.Array,
    targets: Any = None,
    active: Any = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    target_only: bool = False,
) -> SearchResult:
    """Causal responsibility maps of one or several clips (see the module docstring).

    The walk is one compiled call per (model, grid, clips, settings); nothing waits for the
    device until it returns. With ``config.round_iters`` and ``config.stop_overlap`` set (the
    default) the iterations are walked in rounds and each clip stops once its top set is stable
    (:func:`walk_rounds`, inside the same compiled call); else :func:`walk` over all ``iters``. Called with traced arguments (inside the caller's ``jax.jit`` or
    ``jax.vmap``: over clips, keys, targets or parameters) it is traced into the caller's
    program and returns the :class:`SearchResult` as traced arrays, equal to the host call's up
    to float32 rounding of the maps (see :func:`maps_of`); traced clips are checked for their
    shape only, traced targets are not range-checked. ``apply_fn``, ``domain``, ``config``,
    ``mesh``, ``target_only`` and the clips' shape are static (compile-time) settings; the
    clips, keys, targets, ``active`` and parameters are data. To search many clips, prefer one
    ``[N, T]`` call to a ``vmap`` over clips: the call packs the live candidates of all clips
    into its model calls, while under ``vmap`` every clip runs as many model calls per depth
    as the busiest one.

    Args:
        apply_fn: ``apply(params, waveforms[B, T]) -> logits[B, C]``, pure and jittable. Its
            identity keys the compilation cache: pass the same function object to reuse it. Or a
            :class:`jsuff.Model`, called as ``responsibility_maps(model, waveforms, ...)``.
        params: the model's parameters (any pytree).
        waveforms: ``[T]`` or ``[N, T]`` float clips at the model's rate, or
            :class:`jsuff.evaluate.Clips` already prepared by :func:`jsuff.evaluate.prepare`
            (validated, analysed and classified; their targets are the ones searched).
        domain: the grid to search (``RFFT()``, ``STFT(...)``, ``Time(...)``, or a name).
        config: :class:`SearchConfig`.
        key: one PRNG key (see :func:`jsuff.evaluate.clip_keys` for how it is shared among clips)
            or ``[N]`` keys.
        targets: ``[N]`` labels to explain; default: the model's top-1 on each clip.
        active: ``[N]`` bool; clips marked False are not searched (zero maps, no queries).
        mesh: shard each chunk of candidates over the devices of one mesh axis.
        mesh_axis: that axis (default: the mesh's first).
        target_only: keep only the target's map (``[N, 1, *grid]``): memory O(grid) instead of
            O(classes x grid), which matters for many-class models on long clips.

    Returns:
        :class:`SearchResult` with ``[N, C, *grid]`` maps (``[N, 1, *grid]`` with ``target_only``).

    Raises:
        AudioError: a clip is empty or non-finite, or its grid has fewer than ``min_box_size`` cells.
        ValueError: ``targets`` out of range or given with prepared clips, or ``mesh_axis`` is
            not an axis of ``mesh``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jsuff.domains import Time
        >>> apply = lambda p, x: jnp.stack([x[:, :4].sum(-1), x[:, 4:].sum(-1)], axis=-1)
        >>> r = responsibility_maps(apply, None, jnp.ones(64), domain=Time(), key=jax.random.key(0),
        ...                         config=SearchConfig(iters=2))
        >>> r.maps.shape
        (1, 2, 64)

        Inside the caller's own ``jax.jit(jax.vmap(...))``, e.g. over a batch of keys::

            maps = jax.jit(jax.vmap(lambda k: responsibility_maps(apply, None, x, key=k).maps))(keys)
    """
    call = model_call("responsibility_maps", apply_fn, params, waveforms)
    apply_fn, params, waveforms, domain = call.apply_fn, call.params, call.waveforms, as_domain(domain)
    axis = resolve_axis(mesh, mesh_axis)
    params = replicate(params, mesh)
    if isinstance(waveforms, Clips):
        if targets is not None:
            raise ValueError("prepared clips carry their targets: pass targets= to prepare(), not here")
        clips = waveforms
    else:
        clips = prepare(apply_fn, params, waveforms, domain=domain, min_box_size=config.min_box_size, targets=targets)
    n, t = clips.waveforms.shape
    draws = iteration_draws(clip_keys(key, n), iters=config.iters, tree_depth=config.tree_depth)
    stops = config.stop_overlap is not None and config.round_iters is not None and config.round_iters < config.iters
    w = (walk_rounds if stops else walk)(
        apply_fn, params, clips, draws, domain=domain, config=config, active=active, mesh=mesh, mesh_axis=axis,
        target_only=target_only,
    )
    return maps_of(w, clips, tuple(domain.grid_shape(t)), config.map_combination)


def combine_maps(credits: Any, combination: str = "additive") -> Any:
    """Combine the iterations' credit maps ``credits[N, L, *grid, C]`` into ``[N, *grid, C]``.

    ``"additive"``: the sum over the L iterations. ``"multiplicative"`` (ReX's default
    ``responsibility_style``): the product over iterations of ``1 + credit``, divided by its
    maximum over the grid per clip and class (ReX rescales to a maximum of 1 after each product,
    which ends the same); computed as sums of ``log1p`` in float64 (NumPy arrays) or in the
    array's own float dtype (JAX arrays, traceable). A class with no credit in any iteration keeps
    a zero map.

    Example:
        >>> credits = np.array([[[1.0, 0.0], [1.0, 1.0]]])[..., None]  # 1 clip, 2 iterations, 2 cells
        >>> combine_maps(credits, "multiplicative")[..., 0]  # (2 x 2, 1 x 2) / 4
        array([[1. , 0.5]])
    """
    xp = jnp if isinstance(credits, jax.Array) else np
    if combination == "additive":
        return credits.sum(axis=1)
    if combination != "multiplicative":
        raise ValueError(f"unknown map combination {combination!r}; expected one of {MAP_COMBINATIONS}")
    logs = xp.log1p(credits if xp is jnp else np.asarray(credits, np.float64)).sum(axis=1)  # [N, *grid, C]
    grid_axes = tuple(range(1, logs.ndim - 1))
    top = logs.max(axis=grid_axes, keepdims=True)
    credited = (credits != 0).any(axis=(1, *(a + 1 for a in grid_axes)))  # [N, C]
    out = xp.exp(logs - top)
    return xp.where(credited.reshape(credited.shape[0], *(1,) * len(grid_axes), -1), out, 0.0)


# ----------------------------------------------------------------------------------------------


def responsibility_loop(
    apply_fn: ApplyFn,
    params: Any,
    waveform: Any,
    *,
    domain: Domain = RFFT(),
    config: SearchConfig = SearchConfig(),
    key: jax.Array,
    target: int | None = None,
) -> SearchResult:
    """The same walk as :func:`responsibility_maps`, written as plain loops that query the jitted
    model one candidate per call (the way ReX queries 1-D data).

    It shares only the random split of a box with the batched search; masks, credit (float64
    ``1/|A|``), the choice of the next job and the rule that stops the search after a round
    (``SearchConfig.stop_overlap``) are independent NumPy code. It is the reference the batched
    search is tested against and the baseline of ``benchmarks/search_throughput.py``.
    """
    clips = prepare(apply_fn, params, waveform, domain=domain, targets=target)
    if clips.waveforms.shape[0] != 1:
        raise ValueError("responsibility_loop takes one clip")
    grid = tuple(domain.grid_shape(clips.waveforms.shape[1]))
    two_d = len(grid) == 2
    r, w = _grid2(grid)
    one = jax.tree_util.tree_map(lambda a: a[0], clips.coeffs)
    tgt, conf = int(clips.targets[0]), np.float32(clips.confidence[0])
    threshold = conf * np.float32(config.confidence_filter)
    split = _loop_splitter(two_d, config.cut_rule == "rex")
    num_classes = clips.logits.shape[1]
    per_iteration: list[np.ndarray] = []
    queries, deepest = 0, -1

    def merged() -> np.ndarray:
        if config.map_combination == "additive":
            return np.sum(per_iteration, axis=0)
        # as ReX merges: start at 1, multiply by each iteration's 1 + credit, rescale to max 1
        out = np.ones((num_classes, r, w), np.float64)
        for credit in per_iteration:
            out *= 1.0 + credit
            out /= out.max(axis=(1, 2), keepdims=True)
        out[~np.any(per_iteration, axis=(0, 2, 3))] = 0.0  # ReX has no map for a class never credited
        return out

    round_iters = config.round_iters or config.iters
    tops: list[set[int]] = []  # the target's top set after each round
    draws = np.asarray(iteration_draws(clip_keys(key, 1), iters=config.iters, tree_depth=config.tree_depth))[0]
    for i, words in enumerate(draws):
        if config.stop_overlap is not None and i > 0 and i % round_iters == 0:
            # the rule, after each round but the last; additive credits are multiples of 1/6,
            # rounded back to them so that float sums tie where the exact credits do
            score = merged()[tgt].reshape(-1)
            score = np.rint(score * CREDIT_UNIT) if config.map_combination == "additive" else score
            tops.append(set(np.lexsort((np.arange(score.size), -score))[: config.stop_cells].tolist()))
            done = len(tops)  # compare with the top set after round done // 2
            if done >= 2 and score.max() > 0 and (
                len(tops[-1] & tops[done // 2 - 1]) >= config.stop_overlap * len(tops[-1])
            ):
                break
        maps = np.zeros((num_classes, r, w), np.float64)
        per_iteration.append(maps)
        parent = np.ones((r, w), bool)
        job = [(0, r, 0, w)]
        for depth in range(config.tree_depth + 1):
            best = None  # (kept area, mask, kids)
            for slot, box in enumerate(job):
                h, wd = box[1] - box[0], box[3] - box[2]
                ok = (h >= 2 and wd >= 2) if two_d else wd >= 4
                if not (ok and h * wd >= config.min_box_size):
                    continue
                kids = [tuple(int(v) for v in k) for k in np.asarray(split(words[depth, slot], jnp.asarray(box)))]
                outcome = []
                for subset in SUBSETS:
                    mask = parent.copy()
                    mask[box[0] : box[1], box[2] : box[3]] = False
                    for j in subset:
                        k = kids[j]
                        mask[k[0] : k[1], k[2] : k[3]] = True
                    p = np.asarray(_classify_one(
                        params, one, jnp.asarray(mask.reshape(grid)), apply_fn=apply_fn, domain=domain,
                        compute_dtype=config.compute_dtype,
                    ))
                    queries += 1
                    label = int(np.argmax(p))
                    outcome.append((subset, mask, label, label == tgt and p[tgt] >= threshold))
                if not any(o[3] for o in outcome):
                    continue
                deepest = max(deepest, depth)
                for subset, mask, label, passed in outcome:
                    for j in subset:
                        k = kids[j]
                        maps[label, k[0] : k[1], k[2] : k[3]] += 1.0 / len(subset)
                    area = int(mask.sum())
                    if passed and (best is None or area < best[0]):
                        best = (area, mask, [kids[j] for j in subset])
            if best is None:
                break
            _, parent, job = best
    maps = merged()
    return SearchResult(
        maps=maps.reshape((maps.shape[0], *grid))[None].astype(np.float32),
        targets=np.array([tgt]),
        target_confidence=np.array([conf], np.float32),
        queries=np.array([queries]),
        depth=np.array([deepest]),
        iterations=np.array([len(per_iteration)]),
    )


@model_jit(static_argnames=("domain", "compute_dtype"))
def _classify_one(
    params: Any, coeffs: Coefficients, mask: jax.Array, *, apply_fn: ApplyFn, domain: Domain, compute_dtype: str
) -> jax.Array:
    """Softmax ``[C]`` of one candidate: the loop's one-candidate-per-call model query."""
    waves = domain.synthesize(coeffs, mask)[None]
    return jax.nn.softmax(model_logits(apply_fn, params, waves, compute_dtype)[0])


@functools.lru_cache(maxsize=4)
def _loop_splitter(two_d: bool, rex_cuts: bool = False) -> Callable:
    return jax.jit(lambda u, box: _split(u, box, two_d, rex_cuts))
