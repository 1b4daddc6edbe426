"""What an explanation will cost, said before it runs: the grid, the model queries, the time.

:func:`estimate_cost` takes the same arguments as :func:`jsuff.explain_many` and returns a
:class:`Cost`:

* the **grid** of each clip in the domain, and a :class:`CostWarning` when it is far larger than
  usual (more than :data:`LARGE_GRID_FACTOR` times the cells of the default ``STFT()`` of the
  same clip, or more than :data:`LARGE_GRID_CELLS` cells): every candidate the search evaluates
  builds and synthesises a whole grid, so ``STFT(n_fft=9999)`` (5,000 bins per frame) runs for
  minutes where ``STFT()`` takes seconds;
* the **model queries**: the search's bound, ``iters x (14 + 42 x tree_depth)`` per clip (14
  mutants of the root box, then up to 3 boxes of 14 mutants per depth; SPEC §3), the expected
  count for the grid (a box shrinks about 4x per depth, so the walk cannot go deeper than
  ``log4(cells / min_box_size)``; walks that stop early, when no mutant passes, use fewer) over
  the iterations a search that stops (``SearchConfig.stop_overlap``) typically walks
  (:data:`TYPICAL_STOP_ITERATIONS`, at least two rounds), and the extraction's (the clip, its
  empty and full signals, the prefix scans of a set of :data:`TYPICAL_SET_CHUNKS` chunks in
  blocks that grow from ``prefixes_first_call``, its certificate and the final check);
* the **time**, from a calibration call: one batch of ``Cost.batch`` masked candidates of the
  longest clip is synthesised and classified twice (:func:`jsuff.evaluate.candidate_labels`); the
  first call's extra time is compilation. Time = batches of queries x seconds per batch.

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from jsuff.search import SearchConfig
    >>> apply = lambda p, x: jnp.abs(jnp.fft.rfft(x))[:, :3]
    >>> c = estimate_cost(apply, None, np.ones(4000, np.float32), config=SearchConfig(iters=4), calibrate=False)
    >>> c.grid_shape, c.max_search_queries, c.expected_search_queries
    ((2001,), 1736, 560)
    >>> estimate_cost(apply, None, np.ones(4000, np.float32), calibrate=False).expected_search_queries  # stops
    1120
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsuff.audio import validate_waveform
from jsuff.domains import STFT, Coefficients, Domain, as_domain
from jsuff.evaluate import (
    NOT_GIVEN,
    ApplyFn,
    candidate_labels,
    host_only,
    model_call,
    model_jit,
    platform_of,
    resolve_batch,
)
from jsuff.extract import ExtractConfig, as_extract_config
from jsuff.progress import duration
from jsuff.search import SUBSETS, SearchConfig

__all__ = [
    "LARGE_GRID_CELLS",
    "LARGE_GRID_FACTOR",
    "TYPICAL_SET_CHUNKS",
    "TYPICAL_STOP_ITERATIONS",
    "Cost",
    "CostWarning",
    "bounds",
    "calibrated",
    "clip_queries",
    "estimate_cost",
    "grid_warning",
]

#: A grid with more than this many times the cells of the default ``STFT()`` of the clip is "far
#: larger than usual" (the default STFT has about 2 cells per sample; rfft 0.5, time 1).
LARGE_GRID_FACTOR = 8
#: ... and so is any grid of more cells than this (about 2 minutes of 16 kHz audio in the stft).
LARGE_GRID_CELLS = 4_000_000

#: Iterations a search that may stop (``SearchConfig.stop_overlap``) typically walks: the median
#: over the trained zoo models at the default settings (benchmarks/README.md, "Fewer queries").
TYPICAL_STOP_ITERATIONS = 8
#: Chunks of a typical sufficient set: the median over the same explanations (3.5), rounded up.
TYPICAL_SET_CHUNKS = 4

_MUTANTS = len(SUBSETS)  # 14
_BOXES = 3  # a job holds up to 3 boxes below the root


class CostWarning(UserWarning):
    """An explanation that will cost far more than usual (a huge grid); the message says why."""


@dataclasses.dataclass(frozen=True)
class Cost:
    """The cost of explaining some clips (:func:`estimate_cost`).

    Attributes:
        clips: how many; num_samples: the longest clip's length; sample_rate: its rate when known
            (a :class:`jsuff.Model` was given), else ``None``.
        domain: the domain's name; grid_shape, cells: the longest clip's grid.
        max_search_queries: the search's bound over all clips (``iters x (14 + 42 x tree_depth)``
            per clip).
        expected_search_queries: the bound with the depth each clip's grid allows, over the
            iterations the search typically walks (all ``iters``, or
            :data:`TYPICAL_STOP_ITERATIONS` when it may stop).
        expected_extract_queries: about what the extraction asks (the clips, their empty and full
            signals, the prefix scans and certificate of a typical set, the final check).
        batch: candidates per model call (``SearchConfig.max_batch``, resolved for the platform).
        seconds_per_batch, compile_seconds: the calibration call (``None``: not calibrated).
        seconds: the estimated time of the model queries (``None``: not calibrated); compiling the
            search and the extraction comes on top, each about ``compile_seconds``.
        large_grid: why the grid is far larger than usual (``""``: it is not).
    """

    clips: int
    num_samples: int
    sample_rate: int | None
    domain: str
    grid_shape: tuple[int, ...]
    cells: int
    max_search_queries: int
    expected_search_queries: int
    expected_extract_queries: int
    batch: int
    seconds_per_batch: float | None = None
    compile_seconds: float | None = None
    seconds: float | None = None
    large_grid: str = ""

    @property
    def expected_queries(self) -> int:
        return self.expected_search_queries + self.expected_extract_queries

    def describe(self) -> str:
        """One line for a console or a log."""
        clip = f"{self.num_samples:,} samples"
        if self.sample_rate:
            clip = f"{self.num_samples / self.sample_rate:.2f} s ({clip})"
        grid = " x ".join(f"{g:,}" for g in self.grid_shape)
        grid = f"{grid} = {self.cells:,} cells" if len(self.grid_shape) > 1 else f"{self.cells:,} cells"
        text = (
            f"{self.clips} clip{'s' * (self.clips != 1)} of {'up to ' * (self.clips > 1)}{clip}, {self.domain} grid "
            f"{grid}; search up to {self.max_search_queries:,} model queries"
            + (f", about {self.expected_search_queries:,} for this grid"
               if self.expected_search_queries < self.max_search_queries else "")
            + f"; extraction about {self.expected_extract_queries:,}"
        )
        if self.seconds is not None:
            text += (
                f"; estimated {_seconds(self.seconds)} of model calls (a batch of {self.batch} candidates takes "
                f"{self.seconds_per_batch:.3g} s)"
            )
            if (self.compile_seconds or 0.0) >= 0.05:
                text += f" plus compilation (about {_seconds(self.compile_seconds or 0.0)} per stage)"
        return text


def _seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 10 else duration(s)


def grid_warning(domain: Domain | str, num_samples: int) -> str:
    """Why ``domain``'s grid of a clip of ``num_samples`` samples is far larger than usual, or ``""``.

    Example:
        >>> grid_warning("stft", 80000)
        ''
        >>> grid_warning(STFT(n_fft=9999), 80000)[:70]
        'STFT(n_fft=9999, hop=128) makes a grid of 5,000 x 626 = 3,130,000 cell'
    """
    domain = as_domain(domain)
    grid = tuple(int(g) for g in domain.grid_shape(int(num_samples)))
    cells = math.prod(grid)
    usual = math.prod(STFT().grid_shape(int(num_samples)))
    if cells <= LARGE_GRID_FACTOR * usual and cells <= LARGE_GRID_CELLS:
        return ""
    name = type(domain).__name__
    if isinstance(domain, STFT):
        name = f"STFT(n_fft={domain.n_fft}, hop={domain.hop})"
    shape = " x ".join(f"{g:,}" for g in grid) + (f" = {cells:,}" if len(grid) > 1 else "")
    why = (
        f"{cells / usual:.0f}x the {usual:,} cells of the default STFT(n_fft=512, hop=128)"
        if cells > LARGE_GRID_FACTOR * usual
        else f"more than {LARGE_GRID_CELLS:,} cells"
    )
    fix = "a smaller n_fft or a larger hop" if isinstance(domain, STFT) else "a shorter clip or coarser cells"
    return (
        f"{name} makes a grid of {shape} cells for a clip of {num_samples:,} samples, {why}: every candidate "
        f"of the search builds and synthesises the whole grid, so this explanation will be slow. Use {fix}, "
        "or see the estimate first: jsuff.estimate_cost(...)"
    )


def _levels(cells: int, config: SearchConfig) -> int:
    """Depths the walk can refine on a grid of ``cells``: a box shrinks about 4x per depth and is
    split only while it has ``min_box_size`` cells."""
    if cells < config.min_box_size:
        return 0
    return min(config.tree_depth, int(math.log(cells / config.min_box_size, 4))) + 1


def _search_queries(levels: int, iters: int) -> int:
    return 0 if levels == 0 else iters * _MUTANTS * (1 + _BOXES * (levels - 1))


def _walked(config: SearchConfig) -> int:
    """Iterations the search typically walks: all, or where one that may stop typically stops (in
    whole rounds, and never before the end of round 2, its first chance)."""
    size = config.round_iters
    if config.stop_overlap is None or size is None or size >= config.iters:
        return config.iters
    rounds = max(2, -(-TYPICAL_STOP_ITERATIONS // size))
    return min(config.iters, rounds * size)


def _scan_rows(k: int, chunks: int, first: int, widest: int) -> int:
    """Rows a scan over prefixes ``1..chunks`` asks to find prefix ``k``: blocks of ``first``,
    twice that, ... up to ``widest`` (the extraction's schedule)."""
    asked, width = 0, first
    while asked < min(k, chunks):
        asked, width = min(asked + width, chunks), min(2 * width, widest)
    return asked


def _extract_queries(cells: int, config: SearchConfig, extract: ExtractConfig, platform: str = "cpu") -> int:
    chunks = -(-cells // extract.resolved_chunk_size(config.min_box_size))
    k = min(TYPICAL_SET_CHUNKS, chunks)
    scan = _scan_rows(k, chunks, extract.resolved_first_call(platform), extract.prefixes_per_call)
    scans = {"sufficient": 1, "contrastive": 2, "complete": 3}[extract.mode]
    # the set's chunks removed one at a time, less the last (its scan answered it); pruning twice
    certificate = (k - 1) * (2 if extract.prune else 1) if extract.certify or extract.prune else 0
    return 3 + scans * scan + certificate + 2


def clip_queries(
    cells: int, config: SearchConfig, extract: ExtractConfig, platform: str | None = None
) -> tuple[int, int]:
    """Expected model queries of one clip whose grid has ``cells`` cells: ``(search, extraction)``,
    the extraction's scans as they run on ``platform`` (default: JAX's default backend).

    Example:
        >>> clip_queries(2001, SearchConfig(iters=4), ExtractConfig(), "cpu")
        (560, 15)
        >>> clip_queries(2001, SearchConfig(iters=4), ExtractConfig(), "gpu")  # one wide first call
        (560, 209)
    """
    platform = platform_of(None) if platform is None else platform
    return (
        _search_queries(_levels(cells, config), _walked(config)),
        _extract_queries(cells, config, extract, platform),
    )


def bounds(
    lengths: Sequence[int], domain: Domain, config: SearchConfig, extract: ExtractConfig, sample_rate: int | None
) -> Cost:
    """The cost without calibration: grids and query counts of clips of these ``lengths``."""
    cells = [math.prod(domain.grid_shape(int(t))) for t in lengths]
    longest = int(max(lengths))
    grid = tuple(int(g) for g in domain.grid_shape(longest))
    return Cost(
        clips=len(lengths),
        num_samples=longest,
        sample_rate=sample_rate,
        domain=domain.name,
        grid_shape=grid,
        cells=math.prod(grid),
        max_search_queries=sum(_search_queries(config.tree_depth + 1, config.iters) for _ in cells),
        expected_search_queries=sum(clip_queries(c, config, extract)[0] for c in cells),
        expected_extract_queries=sum(clip_queries(c, config, extract)[1] for c in cells),
        batch=resolve_batch(config.max_batch, None, None, _MUTANTS),
        large_grid=grid_warning(domain, longest),
    )


@model_jit(static_argnames=("domain", "batch"))
def _calibration_batch(
    params: Any, coeffs: Coefficients, *, apply_fn: ApplyFn, domain: Domain, batch: int
) -> jax.Array:
    """``batch`` masked candidates of one clip, synthesised and classified (masks made in place:
    about 40% of the cells kept, a different pattern per candidate)."""
    grid = domain.grid_shape(coeffs.num_samples)
    shape = (batch, math.prod(grid))
    cell = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    row = jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    masks = ((cell * 7 + row * 13) % 5 < 2).reshape((batch, *grid))
    return candidate_labels(apply_fn, params, domain, coeffs, masks)[0]


def calibrated(cost: Cost, apply_fn: ApplyFn, params: Any, clip: Any, domain: Domain) -> Cost:
    """``cost`` with the time of a batch of candidates of ``clip`` (the longest clip, ``[T]``)
    measured: a first call (compilation and a run), then a timed run."""
    coeffs = jax.device_get(domain.analyze(jnp.asarray(clip, jnp.float32)))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(_calibration_batch(params, coeffs, apply_fn=apply_fn, domain=domain, batch=cost.batch))
        times.append(time.perf_counter() - t0)
    per_batch = times[1]
    batches = -(-cost.expected_queries // cost.batch)
    return dataclasses.replace(
        cost, seconds_per_batch=per_batch, compile_seconds=max(times[0] - per_batch, 0.0), seconds=batches * per_batch
    )


def estimate_cost(
    apply_fn: Any,
    params: Any = NOT_GIVEN,
    waveforms: Any = NOT_GIVEN,
    *,
    domain: Domain | str = "rfft",
    config: SearchConfig = SearchConfig(),
    extract: ExtractConfig | str = ExtractConfig(),
    sample_rate: int | None = None,
    calibrate: bool = True,
) -> Cost:
    """What explaining ``waveforms`` will cost (see the module docstring); nothing is searched.

    Called like :func:`jsuff.explain_many`: ``estimate_cost(model, clips)`` or
    ``estimate_cost(apply_fn, params, clips)``, with the same ``domain``, ``config`` and
    ``extract``. A grid far larger than usual raises a :class:`CostWarning` (the message says
    what to change).

    Args:
        calibrate: time one batch of ``Cost.batch`` candidates of the longest clip (it
            compiles one function; later calls with the same model, domain and length reuse it)
            to estimate the seconds; False: the counts alone.

    Returns:
        A :class:`Cost`; ``cost.describe()`` is one line to print.
    """
    host_only("estimate_cost", waveforms, params)
    call = model_call("estimate_cost", apply_fn, params, waveforms, sample_rate=sample_rate)
    domain, extract = as_domain(domain), as_extract_config(extract)
    clips = call.waveforms
    if isinstance(clips, (list, tuple)):
        clips = [validate_waveform(c, name=f"waveforms[{i}]") for i, c in enumerate(clips)]
        lengths = [c.shape[-1] for c in clips]
        longest = clips[int(np.argmax(lengths))]
    else:
        x = validate_waveform(clips, name="waveforms")
        lengths = [x.shape[-1]] * (x.shape[0] if x.ndim == 2 else 1)
        longest = x[0] if x.ndim == 2 else x
    rate = call.model.sample_rate if call.model is not None else None
    cost = bounds(lengths, domain, config, extract, rate)
    if cost.large_grid:
        warnings.warn(CostWarning(cost.large_grid), stacklevel=2)
    if calibrate:
        cost = calibrated(cost, call.apply_fn, call.params, longest, domain)
    return cost
