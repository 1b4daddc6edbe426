"""The entry point: explain a classifier's label on a clip by a minimal sufficient signal.

:func:`explain_many` explains ``N`` clips of one length in four steps, each once for all clips:

1. check, analyse and classify the clips (:func:`jsuff.evaluate.prepare`);
2. classify their empty signals and full reconstructions (:func:`jsuff.extract.describe`);
3. search the clips whose empty signal does not already have the label, batched
   (:func:`jsuff.search.responsibility_maps`);
4. extract a sufficient set from each map, batched (:func:`jsuff.extract.extract`).

Its results equal one-at-a-time calls with the same per-clip keys. :func:`explain` is one clip.

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
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jsuff.audio import AudioError, write_wav
from jsuff.domains import RFFT, Coefficients, Domain
from jsuff.evaluate import ApplyFn, clip_keys, prepare, replicate
from jsuff.extract import ExtractConfig, Extraction, Problem, describe, extract as extract_sets
from jsuff.search import SearchConfig, responsibility_maps

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
        search_queries: those of the search alone.
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
    apply_fn: ApplyFn,
    params: Any,
    waveforms: Any,
    *,
    domain: Domain = RFFT(),
    config: SearchConfig = SearchConfig(),
    extract: ExtractConfig = ExtractConfig(),
    key: jax.Array | None = None,
    keys: jax.Array | None = None,
    targets: Any = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> list[Explanation]:
    """Explain ``N`` clips, batching the analysis, the search and the extraction across them.

    Args:
        apply_fn, params: the model, ``apply(params, waveforms[B, T]) -> logits[B, C]``.
        waveforms: ``[N, T]`` clips at the model's rate (``[T]``: one clip).
        domain, config, extract: the grid, the search and the extraction settings.
        key: one key, split into N per-clip keys (used as is when N = 1); or keys: ``[N]`` keys.
            Clip n's result equals ``explain(..., waveforms[n], key=<its key>)``.
        targets: ``[N]`` labels to explain (default: each clip's top-1).
        mesh, mesh_axis: shard candidate batches over a mesh axis.

    Returns:
        One :class:`Explanation` per clip.

    Raises:
        AudioError: a clip is empty, non-finite, all zeros, or too short for ``min_box_size``.
    """
    if (key is None) == (keys is None):
        raise ValueError("pass exactly one of key= (one key) or keys= ([N] keys)")
    params = replicate(params, mesh)
    clips = prepare(
        apply_fn, params, waveforms, domain=domain, min_box_size=config.min_box_size, targets=targets,
        allow_silence=False,
    )
    n = clips.targets.shape[0]
    per_clip = clip_keys(key if keys is None else keys, n)
    chunk = extract.resolved_chunk_size(config.min_box_size)
    problem, base_queries = describe(
        apply_fn, params, domain, clips, dataclasses.replace(extract, chunk_size=chunk),
        max_batch=config.max_batch, mesh=mesh, mesh_axis=mesh_axis,
    )
    active = ~problem.empty_is_target
    grid = problem.grid
    if active.any():
        search = responsibility_maps(
            apply_fn, params, clips, domain=domain, config=config, key=per_clip, active=active, mesh=mesh,
            mesh_axis=mesh_axis, target_only=True,
        )
        maps, search_queries = search.maps[:, 0], search.queries
    else:
        maps, search_queries = np.zeros((n, *grid), np.float32), np.zeros(n, np.int64)
    settings = {
        "domain": domain.to_json(),
        "search": dataclasses.asdict(config),
        "extract": dataclasses.asdict(extract),
    }
    found = extract_sets(problem, maps)
    return [
        _explanation(
            problem, i, maps[i], found[i], int(base_queries[i] + 1 + search_queries[i]), int(search_queries[i]),
            extract.mode, settings,
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
    )


def explain(
    apply_fn: ApplyFn,
    params: Any,
    waveform: Any,
    *,
    domain: Domain = RFFT(),
    config: SearchConfig = SearchConfig(),
    extract: ExtractConfig = ExtractConfig(),
    key: jax.Array,
    target: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Explanation:
    """Explain the model's label on one clip ``waveform[T]`` (see :func:`explain_many`).

    Args:
        apply_fn, params: the model, ``apply(params, waveforms[B, T]) -> logits[B, C]``.
        waveform: ``[T]`` float samples at the model's rate.
        domain: ``RFFT()`` (default), ``STFT(...)`` or ``Time(...)``.
        config: :class:`SearchConfig`; extract: :class:`ExtractConfig`.
        key: PRNG key of the search; same key, same explanation.
        target: the label to explain (default: the model's top-1).
        mesh, mesh_axis: shard candidate batches over a mesh axis.
    """
    if np.ndim(waveform) != 1:
        raise AudioError(f"waveform must be one clip [T], got shape {np.shape(waveform)} (use explain_many)")
    return explain_many(
        apply_fn, params, waveform, domain=domain, config=config, extract=extract, key=key,
        targets=None if target is None else [target], mesh=mesh, mesh_axis=mesh_axis,
    )[0]
