"""The entry point: explain a classifier's label on a clip by a minimal sufficient signal.

:func:`explain_many` explains ``N`` clips of one length in four steps, each once for all clips:

1. check, analyse and classify the clips (:func:`jsuff.evaluate.prepare`);
2. classify their empty signals and full reconstructions (:func:`jsuff.extract.describe`);
3. search the clips whose empty signal does not already have the label, batched
   (:func:`jsuff.search.responsibility_maps`);
4. extract a sufficient set from each map, batched (:func:`jsuff.extract.extract`).

Its results equal one-at-a-time calls with the same per-clip keys. :func:`explain` is one clip.
Both take ``(model, clips)`` with a :class:`jsuff.Model` or ``(apply_fn, params, clips)``, domain
and extraction-mode names, and a list of clips of different lengths (explained a length at a
time). Before a long run they say what it will cost and then report their progress
(:mod:`jsuff.cost`, :mod:`jsuff.progress`). They are host-side drivers; inside your own jitted
code, use :func:`jsuff.evaluate.candidate_labels`.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> def apply(p, x):  # class 1 iff the 20-30 bin band carries energy
    ...     e = jnp.abs(jnp.fft.rfft(x))[:, 20:30].sum(-1, keepdims=True)
    ...     return jnp.concatenate([jnp.full_like(e, 1.0), e], axis=-1)
    >>> x = np.cos(2 * np.pi * 25 * np.arange(256) / 256).astype(np.float32)
    >>> e = explain(apply, None, x, config=SearchConfig(iters=4), key=jax.random.key(0))
    >>> e.target, e.verified, e.minimal, bool(e.mask[25]), e.size_fraction < 0.2
    (1, True, True, True, True)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jsuff.audio import AudioError, validate_waveform, write_wav
from jsuff.cost import Cost, CostWarning, bounds, calibrated, clip_queries
from jsuff.domains import RFFT, Coefficients, Domain, as_domain
from jsuff.evaluate import (
    NOT_GIVEN,
    ApplyFn,
    Clips,
    ModelCall,
    analyze_and_predict,
    clip_array,
    clip_keys,
    host_only,
    is_clip_list,
    layout_hint,
    model_call,
    prepare,
    replicate,
)
from jsuff.extract import ExtractConfig, Extraction, Problem, as_extract_config, describe, extract as extract_sets
from jsuff.progress import LONG_RUN_SECONDS, RunProgress
from jsuff.search import SearchConfig, responsibility_maps

if TYPE_CHECKING:
    from jsuff.models.base import Model

__all__ = ["Explanation", "explain", "explain_many"]


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
    """One clip's explanation.

    Attributes:
        target: the label explained; target_confidence: its softmax confidence on the clip.
        mask: ``[*grid]`` bool, the cells of the sufficient set.
        responsibility: ``[*grid]`` float32, the target class's responsibility map.
        sufficient_waveform: ``[T]`` float32, the sufficient signal ``domain.synthesize(z, mask)``.
        verified: the sufficient signal was checked to keep the target (with ``tau``).
        found: the extraction mode's set was found (False: ``mask`` is the whole grid).
        necessary: removing the set from the clip changes the label.
        minimal: the 1-minimality certificate (None when not certified);
        removable_chunks: chunks whose removal alone keeps sufficiency (empty when minimal).
        queries: model queries in all (clip, empty and full signals, search, extraction);
        search_queries: those of the search alone; search_iterations: the iterations it walked
            (fewer than ``config.iters`` where it stopped early, ``SearchConfig.stop_overlap``).
        size_fraction: kept cells / grid cells; energy_fraction: kept / total coefficient energy.
        empty_label, empty_confidence: the model on the empty signal (everything removed);
        empty_is_target: the trivial case: the empty signal already passes, nothing was searched.
        sufficient_label, sufficient_confidence: the model on the sufficient signal.
        label_without: the model on the clip with the set removed.
        grid_shape, chunk_size, mode: how the set was taken; settings: domain and configs.
    """

    target: int
    target_confidence: float
    mask: np.ndarray
    responsibility: np.ndarray
    sufficient_waveform: np.ndarray
    verified: bool
    found: bool
    necessary: bool
    minimal: bool | None
    removable_chunks: tuple[int, ...]
    queries: int
    search_queries: int
    size_fraction: float
    energy_fraction: float
    empty_label: int
    empty_confidence: float
    empty_is_target: bool
    sufficient_label: int
    sufficient_confidence: float
    label_without: int
    grid_shape: tuple[int, ...]
    chunk_size: int
    mode: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    search_iterations: int = 0

    def summary(self) -> dict[str, Any]:
        """Every scalar field and the settings, JSON-serialisable."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        out["kept_cells"] = int(self.mask.sum())
        return json.loads(json.dumps(out))  # fails here, not in save(), if anything is not JSON

    def save(self, directory: str | os.PathLike, sample_rate: int) -> Path:
        """Write ``sufficient.wav`` (float32), ``arrays.npz`` (mask, responsibility, waveform) and
        ``summary.json`` into ``directory`` (created); returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_wav(d / "sufficient.wav", self.sufficient_waveform, int(sample_rate))
        np.savez(
            d / "arrays.npz",
            mask=self.mask,
            responsibility=self.responsibility,
            sufficient_waveform=self.sufficient_waveform,
        )
        summary = {**self.summary(), "sample_rate": int(sample_rate)}
        (d / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return d


def explain_many(
    apply_fn: ApplyFn | Model,
    params: Any = NOT_GIVEN,
    waveforms: Any = NOT_GIVEN,
    *,
    domain: Domain | str = RFFT(),
    config: SearchConfig = SearchConfig(),
    extract: ExtractConfig | str = ExtractConfig(),
    key: jax.Array | int | None = None,
    keys: jax.Array | None = None,
    targets: Any = None,
    sample_rate: int | None = None,
    quiet: bool | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> list[Explanation]:
    """Explain ``N`` clips, batching the analysis, the search and the extraction across them.

    Call it as ``explain_many(model, clips)`` with a :class:`jsuff.Model` (its own parameters;
    file paths are read at its rate, arrays at ``sample_rate`` are resampled to it, and every clip
    is fitted to its input length, :class:`jsuff.models.InputPolicy`) or as
    ``explain_many(apply_fn, params, clips)``.

    Args:
        apply_fn, params: the model, ``apply(params, waveforms[B, T]) -> logits[B, C]``; or a
            :class:`jsuff.Model` alone.
        waveforms: ``[N, T]`` clips at the model's rate (``[T]``: one clip), or a list of clips of
            any lengths (with a Model, file paths too): clips of one length are explained
            together, and the results come back in the order given.
        domain: a :class:`Domain` or its name with default settings (``"rfft"``, ``"stft"``,
            ``"time"``). config: :class:`SearchConfig`. extract: an :class:`ExtractConfig` or
            a mode name (``"sufficient"``, ``"contrastive"``, ``"complete"``).
        key: one key or an int seed, split into N per-clip keys (used as is when N = 1); or
            keys: ``[N]`` keys; neither: seed 0. Clip n's result equals
            ``explain(..., waveforms[n], key=<its key>)``.
        targets: ``[N]`` labels (or one) to explain (default: each clip's top-1); label names
            with a Model.
        sample_rate: with a Model, the rate of array clips (default: the model's).
        quiet: progress lines: the cost before the run (:func:`jsuff.cost.estimate_cost`), then
            the search and the extraction of each batch of clips with done/total and an ETA,
            through the ``jsuff.explain`` logger when logging is set up for INFO, else on stderr.
            ``None`` (default): when the run looks long (at least
            :data:`jsuff.progress.LONG_RUN_SECONDS`, judged from timing the model on the clips);
            ``False``: always; ``True``: never. A grid far larger than usual raises a
            :class:`jsuff.cost.CostWarning` whatever ``quiet`` says.
        mesh, mesh_axis: shard candidate batches over a mesh axis.

    Returns:
        One :class:`Explanation` per clip.

    Raises:
        AudioError: a clip is empty, non-finite, all zeros or too short for ``min_box_size``; a
            file path without a Model; an array that looks like a multi-channel clip.
        TypeError: the arguments fit neither call form, or the call is traced by ``jax.jit``,
            ``vmap`` or ``grad`` (this is a host-side driver).
    """
    host_only("explain_many", waveforms, params)
    call = model_call("explain_many", apply_fn, params, waveforms, sample_rate=sample_rate)
    return _explain_many(call, domain, config, extract, key, keys, targets, quiet, mesh, mesh_axis)


def _explain_many(call: ModelCall, domain: Domain | str, config: SearchConfig, extract: ExtractConfig | str,
                  key: Any, keys: Any, targets: Any, quiet: bool | None, mesh: Mesh | None,
                  mesh_axis: str | None) -> list[Explanation]:
    apply_fn, params, model = call.apply_fn, call.params, call.model
    domain, extract = as_domain(domain), as_extract_config(extract)
    if key is not None and keys is not None:
        raise ValueError("pass key= (one key or an int seed, split per clip) or keys= ([N] keys), not both")
    n, groups = _groups(call.waveforms)
    per_clip = clip_keys(keys if keys is not None else (0 if key is None else key), n)
    wanted = _targets(targets, n, model)
    rate = model.sample_rate if model is not None else None
    cost = bounds([np.shape(x)[-1] for idx, x in groups for _ in idx], domain, config, extract, rate)
    if cost.large_grid:
        warnings.warn(CostWarning(cost.large_grid), stacklevel=_user_stacklevel())
    replicated = replicate(params, mesh)
    run = _Run(apply_fn, replicated, domain, config, extract, mesh, mesh_axis, n)
    found: dict[int, Explanation] = {}
    for idx, x in groups:
        clips = prepare(
            apply_fn, replicated, x, domain=domain, min_box_size=config.min_box_size,
            targets=None if wanted is None else wanted[idx], allow_silence=False,
        )
        if run.progress is None:
            run.start(cost, quiet, params, clips, max(groups, key=lambda g: np.shape(g[1])[-1])[1])
        found.update(zip(idx.tolist(), run.explain(clips, per_clip[jnp.asarray(idx)], len(found)), strict=True))
    queries = sum(e.queries for e in found.values())
    run.line(f"done ({queries:,} model queries)", n, "clips")
    return [found[i] for i in range(n)]


def _user_stacklevel() -> int:
    """``warnings.warn``'s stacklevel that names the first caller outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _groups(waveforms: Any) -> tuple[int, list[tuple[np.ndarray, Any]]]:
    """How many clips, and the clips as ``(indices, [n, T] clips)`` groups of one length, checked
    (a list clip by clip, so errors name ``waveforms[i]``)."""
    if not is_clip_list(waveforms):
        x = clip_array(waveforms)
        n = x.shape[0] if x.ndim == 2 else 1
        return n, [(np.arange(n), x)]
    clips = [validate_waveform(w, name=f"waveforms[{i}]") for i, w in enumerate(waveforms)]
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        if c.ndim != 1:
            hint = layout_hint(c.shape)
            raise AudioError(f"waveforms[{i}] has shape {c.shape}; a list holds clips [T]"
                             + (f": {hint}" if hint else ""))
        if not c.any():
            raise AudioError(f"waveforms[{i}] is all zeros (silence): there is no signal to explain")
        by_length.setdefault(c.shape[0], []).append(i)
    return len(clips), [(np.array(ix), np.stack([clips[i] for i in ix])) for ix in by_length.values()]


def _targets(targets: Any, n: int, model: Model | None) -> np.ndarray | None:
    """``[N]`` label indices (names are looked up in a Model's labels), or ``None``."""
    if targets is None:
        return None
    one = isinstance(targets, (str, int, np.integer)) or np.ndim(targets) == 0
    values = [targets] * n if one else list(targets)
    if len(values) != n:
        raise ValueError(f"targets: expected one label or {n}, got {len(values)}")
    out = []
    for t in values:
        if isinstance(t, str):
            if model is None:
                raise TypeError(f"target {t!r} is a label name; names need a jsuff.Model (an apply function has no "
                                "label names): pass the label's index")
            if t not in model.labels:
                raise ValueError(f"target {t!r} is not one of the model's labels: {', '.join(model.labels)}")
            t = model.labels.index(t)
        out.append(int(t))
    return np.asarray(out, np.int32)


class _Run:
    """One explain_many call: its settings, and its progress lines (see ``quiet``)."""

    def __init__(self, apply_fn: ApplyFn, params: Any, domain: Domain, config: SearchConfig,
                 extract: ExtractConfig, mesh: Mesh | None, mesh_axis: str | None, total: int):
        self.apply_fn, self.params, self.domain, self.config, self.extract = apply_fn, params, domain, config, extract
        self.mesh, self.mesh_axis, self.total = mesh, mesh_axis, total
        self.progress: RunProgress | None = None
        self.per_query = 0.0  # estimated seconds per model query

    def start(self, cost: Cost, quiet: bool | None, params: Any, clips: Clips, longest: Any) -> None:
        """Decide whether to talk; if so, calibrate and say what the run will cost."""
        self.progress = RunProgress("explain", None, False)
        if quiet is True:
            return
        if quiet is None:  # a free look first: the model on these clips once more (already compiled)
            t0 = time.perf_counter()
            jax.block_until_ready(analyze_and_predict(
                self.params, jnp.asarray(clips.waveforms), apply_fn=self.apply_fn, domain=self.domain))
            seconds = (time.perf_counter() - t0) / clips.waveforms.shape[0] * cost.expected_queries
            if seconds < LONG_RUN_SECONDS:
                return
        clip = validate_waveform(longest[0] if np.ndim(longest) == 2 else longest)
        cost = calibrated(cost, self.apply_fn, params, clip, self.domain)
        self.per_query = (cost.seconds or 0.0) / max(cost.expected_queries, 1)
        self.progress = RunProgress("explain", cost.seconds, True)
        self.progress.say(cost.describe())

    def line(self, what: str, done: int, unit: str = "clips done") -> None:
        if self.progress is not None:
            self.progress.line(what, done, self.total, unit)

    def explain(self, clips: Clips, keys: jax.Array, done: int) -> list[Explanation]:
        """Clips of one length, prepared: describe, search, extract (the module docstring's steps)."""
        assert self.progress is not None
        domain, config, extract = self.domain, self.config, self.extract
        n, t = clips.waveforms.shape
        grid = tuple(domain.grid_shape(t))
        search_q, extract_q = clip_queries(math.prod(grid), config, extract)
        chunk = extract.resolved_chunk_size(config.min_box_size)
        problem, base_queries = describe(
            self.apply_fn, self.params, domain, clips, dataclasses.replace(extract, chunk_size=chunk),
            max_batch=config.max_batch, mesh=self.mesh, mesh_axis=self.mesh_axis,
        )
        active = ~problem.empty_is_target
        what = f"{n} clip{'s' * (n != 1)} of {t:,} samples"
        if active.any():
            trivial = int((~active).sum())
            self.line(f"searching {what}" + (f" ({trivial} trivial, not searched)" if trivial else ""), done)
            search = responsibility_maps(
                self.apply_fn, self.params, clips, domain=domain, config=config, key=keys, active=active,
                mesh=self.mesh, mesh_axis=self.mesh_axis, target_only=True,
            )
            maps, search_queries, iterations = search.maps[:, 0], search.queries, search.iterations
        else:
            maps, search_queries = np.zeros((n, *grid), np.float32), np.zeros(n, np.int64)
            iterations = np.zeros(n, np.int64)
        self.progress.advance(int(active.sum()) * search_q * self.per_query)
        self.line(f"search done ({int(search_queries.sum()):,} model queries); extracting {what}", done)
        settings = {
            "domain": domain.to_json(),
            "search": dataclasses.asdict(config),
            "extract": dataclasses.asdict(extract),
        }
        found = extract_sets(problem, maps)
        self.progress.advance(n * extract_q * self.per_query)
        if done + n < self.total:
            self.line("explained", done + n, "clips")
        return [
            _explanation(
                problem, i, maps[i], found[i], int(base_queries[i] + 1 + search_queries[i]), int(search_queries[i]),
                extract.mode, settings, int(iterations[i]),
            )
            for i in range(n)
        ]


def _explanation(
    problem: Problem,
    i: int,
    resp: np.ndarray,
    ex: Extraction,
    queries: int,
    search_queries: int,
    mode: str,
    settings: Mapping[str, Any],
    search_iterations: int,
) -> Explanation:
    coeffs: Coefficients = jax.tree_util.tree_map(lambda a: a[i], problem.coeffs)
    mask = np.asarray(ex.mask, bool)
    energy = np.asarray(problem.domain.cell_energy(coeffs), np.float64)
    wave = np.asarray(problem.domain.synthesize(coeffs, jnp.asarray(mask)), np.float32)
    return Explanation(
        target=int(problem.targets[i]),
        target_confidence=float(problem.confidence[i]),
        mask=mask,
        responsibility=np.asarray(resp, np.float32),
        sufficient_waveform=wave,
        verified=ex.verified,
        found=ex.found,
        necessary=ex.necessary,
        minimal=ex.minimal,
        removable_chunks=ex.removable,
        queries=queries + ex.queries,  # the clip, its empty and full signals, the search, the extraction
        search_queries=search_queries,
        size_fraction=float(mask.mean()),
        energy_fraction=float(energy[mask].sum() / energy.sum()),
        empty_label=int(problem.empty_label[i]),
        empty_confidence=float(problem.empty_confidence[i]),
        empty_is_target=ex.empty_is_target,
        sufficient_label=ex.label,
        sufficient_confidence=ex.confidence,
        label_without=ex.label_without,
        grid_shape=tuple(int(g) for g in mask.shape),
        chunk_size=problem.config.chunk_size,
        mode=mode,
        settings=dict(settings),
        search_iterations=search_iterations,
    )


def explain(
    apply_fn: ApplyFn | Model,
    params: Any = NOT_GIVEN,
    waveform: Any = NOT_GIVEN,
    *,
    domain: Domain | str = RFFT(),
    config: SearchConfig = SearchConfig(),
    extract: ExtractConfig | str = ExtractConfig(),
    key: jax.Array | int = 0,
    target: int | str | None = None,
    sample_rate: int | None = None,
    quiet: bool | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Explanation:
    """Explain the model's label on one clip (see :func:`explain_many` for the details).

    Two forms: ``explain(model, waveform)`` with a :class:`jsuff.Model`, which brings its own
    parameters, sample rate and input policy (``waveform`` may be a file path, read at the model's
    rate; an array at another rate says so with ``sample_rate=``), and ``explain(apply_fn, params,
    waveform)`` with any pure ``apply(params, waveforms[B, T]) -> logits[B, C]``.

    Args:
        waveform: ``[T]`` float samples at the model's rate (or a file path, with a Model).
        domain: ``RFFT()`` (default), ``STFT(...)``, ``Time(...)``, or a name: ``"rfft"``,
            ``"stft"``, ``"time"`` (default settings).
        config: :class:`SearchConfig`; extract: :class:`ExtractConfig` or a mode name
            (``"sufficient"``, ``"contrastive"``, ``"complete"``).
        key: PRNG key of the search, or an int seed (default 0); same key, same explanation.
        target: the label to explain, an index or (with a Model) a name; default: the top-1.
        sample_rate, quiet, mesh, mesh_axis: as in :func:`explain_many`.
    """
    host_only("explain", waveform, params)
    call = model_call("explain", apply_fn, params, waveform, sample_rate=sample_rate)
    if is_clip_list(call.waveforms):
        raise AudioError(f"waveform must be one clip [T], got a list of {len(call.waveforms)} clips (use explain_many)")
    x = validate_waveform(call.waveforms)
    if x.ndim != 1:
        hint = layout_hint(x.shape)
        raise AudioError(f"waveform must be one clip [T]; it has {hint}" if hint else
                         f"waveform must be one clip [T], got shape {x.shape} (for several clips use explain_many)")
    return _explain_many(call._replace(waveforms=x), domain, config, extract, key, None,
                         None if target is None else [target], quiet, mesh, mesh_axis)[0]
