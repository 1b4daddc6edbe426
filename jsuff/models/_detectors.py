"""Pieces shared by the ports of real pretrained detectors (silero, javad, pulsevad, crepe).

* :func:`mel_filters`: the detectors' float32 mel filters (framing, windowing and the filter
  maths are :mod:`jsuff.models.logmel`'s);
* :func:`speech_logits`: the 2-class clip logits of a frame-level voice activity detector;
* :func:`module_of`, :func:`frames_fn`: reach a converted model's ``frames`` method (the
  frame-level outputs that parity tests compare) as a pure, jittable function.

Clip-level logits of the VAD ports are ``[0, s]`` over labels ``("no_speech", "speech")``: the
argmax is ``speech`` exactly when ``s > 0``, and ``s`` is a score in the units of the package's
frame outputs (each family's docstring says which rule gives ``s``).

Example:
    >>> import jax.numpy as jnp
    >>> speech_logits(jnp.array([0.25, -0.5])).tolist()
    [[0.0, 0.25], [0.0, -0.5]]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models.base import Model, ModelError, get_architecture
from jsuff.models.logmel import mel_filter_bank

__all__ = ["VAD_LABELS", "frames_fn", "mel_filters", "module_of", "sliding_min", "speech_logits"]

VAD_LABELS = ("no_speech", "speech")


# ----------------------------------------------------------------------------------------------
# Front-end DSP
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def mel_filters(
    n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float, *, scale: str
) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``[n_fft // 2 + 1, n_mels]`` (float32).

    ``scale="slaney"`` is ``librosa.filters.mel``'s default (javad's ``mel_filters.npz``);
    ``scale="htk"`` with Slaney norm is torchaudio's ``melscale_fbanks(norm="slaney",
    mel_scale="htk")`` (pulsevad's ``mel_filterbank.npy``). Computed in float64; cached, so the
    returned array is read-only.

    Example:
        >>> mel_filters(400, 80, 16000, 0.0, 8000.0, scale="slaney").shape
        (201, 80)
    """
    if scale not in ("htk", "slaney"):
        raise ModelError(f"mel scale must be 'htk' or 'slaney', got {scale!r}")
    fb = mel_filter_bank(
        n_fft // 2 + 1, n_mels, float(fmin), float(fmax), sample_rate,
        norm="slaney", mel_scale=scale, top_bin_hz=sample_rate / 2.0,
    )
    out = fb.astype(np.float32)
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------------------------------
# Clip-level decisions of frame-level detectors
# ----------------------------------------------------------------------------------------------


def speech_logits(score: jax.Array) -> jax.Array:
    """``[B] -> [B, 2]`` logits ``[0, score]`` over ``("no_speech", "speech")``."""
    return jnp.stack([jnp.zeros_like(score), score], axis=-1)


def sliding_min(values: jax.Array, width: int) -> jax.Array:
    """``[B, N] -> [B, N - width + 1]``: the minimum of every ``width`` consecutive values."""
    if values.shape[-1] < width:
        raise ModelError(f"need at least {width} frames for the clip rule, got {values.shape[-1]}")
    return jax.lax.reduce_window(values, jnp.inf, jax.lax.min, (1, width), (1, 1), "VALID")


# ----------------------------------------------------------------------------------------------
# Frame-level outputs of a converted model
# ----------------------------------------------------------------------------------------------


def module_of(model: Model) -> nnx.Module:
    """The nnx module of a registered-architecture ``model`` (inference mode, its parameters)."""
    spec = get_architecture(model.arch)
    module = nnx.eval_shape(lambda: spec.build(model.config, nnx.Rngs(0)))
    graphdef, state = nnx.split(module)
    nnx.replace_by_pure_dict(state, nnx.to_pure_dict(model.params))
    module = nnx.merge(graphdef, state)
    module.eval()
    return module


def frames_fn(model: Model) -> Callable[[Any, jax.Array], jax.Array]:
    """A pure ``fn(params, waveforms[B, T]) -> module.frames(waveforms)`` for jit and vmap.

    Example:
        >>> # fn = frames_fn(model); jax.jit(fn)(model.params, x)  # frame-level outputs
    """
    graphdef, _ = nnx.split(module_of(model))

    def fn(params: Any, waveforms: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params).frames(waveforms)

    return fn
