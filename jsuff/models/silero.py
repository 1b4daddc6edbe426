"""Silero VAD (16 kHz), the ``silero-vad`` package's voice activity detector, in JAX.

Architecture ``silero_vad``. The package runs its model as a stream of 512-sample (32 ms) chunks,
each prefixed with the previous chunk's last 64 samples (zeros before the first) and carrying an
LSTM state. Per chunk of 576 samples:

1. reflect-pad 64 samples on the right; an STFT as a strided convolution with a stored basis
   (256 taps, hop 128, 129 real + 129 imaginary rows) -> magnitude ``[4, 129]``;
2. four convolutions (kernel 3, padding 1, strides 1, 2, 2, 1) with ReLU -> ``[1, 128]``;
3. one step of an LSTM cell (128 units; state carried to the next chunk);
4. ReLU, a 1x1 convolution to one channel, sigmoid: the chunk's speech probability.

Here the clip is cut into all its chunks at once (the last one zero-padded, as the package's
``audio_forward`` and ``get_speech_timestamps`` do), steps 1-2 run on every chunk in parallel and
only the LSTM runs as a ``lax.scan`` over chunks, so the whole clip is one jittable call.

Clip-level decision (``__call__``), following ``silero_vad.get_speech_timestamps`` with its
defaults (threshold 0.5, ``neg_threshold = max(threshold - 0.15, 0.01)``, min speech 250 ms, min
silence 100 ms, no maximum speech duration): the clip is *speech* when that function would return
at least one segment. Its hysteresis state machine is replayed exactly as a second ``lax.scan``.
Logits are ``[0, s]`` over ``("no_speech", "speech")``; ``|s|`` is how far the clip's highest
chunk probability lies from the threshold (at least 1e-6, so a tie cannot flip the argmax) and
its sign is the decision.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = SileroVAD({}, nnx.Rngs(0)); m.eval()
    >>> m.frames(jnp.zeros((2, 1600))).shape, m(jnp.zeros((2, 1600))).shape
    ((2, 4), (2, 2))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._detectors import speech_logits
from jsuff.models._family import FamilyConfig
from jsuff.models.base import Architecture, ModelError, register

__all__ = [
    "CHUNK",
    "CONTEXT",
    "ENCODER",
    "HIDDEN",
    "HOP",
    "N_FFT",
    "RIGHT_PAD",
    "SAMPLE_RATE",
    "SileroConfig",
    "SileroVAD",
    "timestamps_found",
]

SAMPLE_RATE = 16000
CHUNK = 512  # samples per probability (32 ms)
CONTEXT = 64  # samples of the previous chunk prepended to each chunk
N_FFT = 256
HOP = 128
RIGHT_PAD = 64  # reflect padding after the context + chunk
HIDDEN = 128
# (in, out, stride) of the four encoder convolutions; kernel 3, padding 1.
ENCODER = ((N_FFT // 2 + 1, 128, 1), (128, 64, 2), (64, 64, 2), (64, HIDDEN, 1))
_TIE = 1e-6


@dataclasses.dataclass(frozen=True)
class SileroConfig(FamilyConfig):
    """The clip rule's parameters (the network itself has one fixed shape).

    Attributes:
        threshold: a chunk with probability >= this starts speech.
        neg_threshold: probability below which speech may end; ``None`` means the package's
            default ``max(threshold - 0.15, 0.01)``.
        min_speech_duration_ms: segments this short or shorter are dropped.
        min_silence_duration_ms: silence needed to end a segment.
    """

    family: ClassVar[str] = "silero_vad"

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: float = 250.0
    min_silence_duration_ms: float = 100.0

    @property
    def exit_threshold(self) -> float:
        if self.neg_threshold is not None:
            return float(self.neg_threshold)
        return max(self.threshold - 0.15, 0.01)


class SileroVAD(nnx.Module):
    """Silero VAD v5/v6 16 kHz network with the package's chunked streaming unrolled."""

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        self.config = SileroConfig.from_mapping(config)
        self.stft = nnx.Conv(1, 2 * (N_FFT // 2 + 1), N_FFT, HOP, padding="VALID", use_bias=False, rngs=rngs)
        self.encoder = nnx.List(
            [nnx.Conv(i, o, 3, s, padding=[(1, 1)], rngs=rngs) for i, o, s in ENCODER]
        )
        # torch's LSTMCell has two biases per gate; the converter folds them into lstm_ih.
        self.lstm_ih = nnx.Linear(HIDDEN, 4 * HIDDEN, rngs=rngs)
        self.lstm_hh = nnx.Linear(HIDDEN, 4 * HIDDEN, use_bias=False, rngs=rngs)
        self.head = nnx.Linear(HIDDEN, 1, rngs=rngs)

    def frames(self, waveforms: jax.Array) -> jax.Array:
        """Speech probability of every 512-sample chunk: ``[B, T] -> [B, ceil(T / 512)]``."""
        if waveforms.ndim != 2 or waveforms.shape[-1] == 0:
            raise ModelError(f"silero_vad expects waveforms [B, T] with T > 0, got {waveforms.shape}")
        b, t = waveforms.shape
        n = -(-t // CHUNK)
        main = jnp.pad(waveforms, ((0, 0), (0, n * CHUNK - t))).reshape(b, n, CHUNK)
        context = jnp.concatenate(
            [jnp.zeros((b, 1, CONTEXT), main.dtype), main[:, :-1, -CONTEXT:]], axis=1
        )
        chunks = jnp.concatenate([context, main], axis=-1)
        # torch's "reflect" padding, like NumPy's, does not repeat the edge sample.
        chunks = jnp.pad(chunks, ((0, 0), (0, 0), (0, RIGHT_PAD)), mode="reflect")
        spec = self.stft(chunks.reshape(b * n, -1, 1))
        half = N_FFT // 2 + 1
        h = jnp.sqrt(spec[..., :half] ** 2 + spec[..., half:] ** 2)
        for conv in self.encoder:
            h = jax.nn.relu(conv(h))
        feats = h.reshape(b, n, HIDDEN)  # one encoder step per chunk
        gates_x = jnp.swapaxes(self.lstm_ih(feats), 0, 1)  # [n, B, 4H], input part of all steps
        w_hh = self.lstm_hh.kernel[...]

        def step(carry: tuple[jax.Array, jax.Array], gx: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
            hid, cell = carry
            i, f, g, o = jnp.split(gx + hid @ w_hh, 4, axis=-1)  # torch's gate order
            cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
            hid = jax.nn.sigmoid(o) * jnp.tanh(cell)
            return (hid, cell), hid

        zeros = jnp.zeros((b, HIDDEN), gates_x.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), gates_x)
        logits = self.head(jax.nn.relu(jnp.swapaxes(hs, 0, 1)))[..., 0]
        return jax.nn.sigmoid(logits)

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        """Clip logits ``[B, 2]`` over ``("no_speech", "speech")`` (rule in the module docstring)."""
        probs = self.frames(waveforms)
        found = timestamps_found(probs, waveforms.shape[-1], self.config)
        margin = jnp.maximum(jnp.abs(jnp.max(probs, axis=-1) - self.config.threshold), _TIE)
        return speech_logits(jnp.where(found, margin, -margin))


def timestamps_found(probs: jax.Array, num_samples: int, config: SileroConfig) -> jax.Array:
    """Would ``get_speech_timestamps`` return any segment? ``[B, N] -> bool[B]``.

    Replays the package's state machine (``get_speech_timestamps_from_probs`` with an infinite
    maximum speech duration, where its ``possible_ends`` bookkeeping never matters) chunk by
    chunk; sample positions are ``512 * i`` and the clip ends at ``num_samples``.

    Example:
        >>> cfg = SileroConfig()
        >>> timestamps_found(jnp.array([[0.9] * 9 + [0.0] * 4]), 13 * 512, cfg).tolist()
        [True]
        >>> timestamps_found(jnp.array([[0.9] * 7 + [0.0] * 6]), 13 * 512, cfg).tolist()
        [False]
    """
    thr, neg = config.threshold, config.exit_threshold
    min_speech = SAMPLE_RATE * config.min_speech_duration_ms / 1000.0
    min_silence = SAMPLE_RATE * config.min_silence_duration_ms / 1000.0
    b, n = probs.shape
    positions = jnp.arange(n, dtype=jnp.int32) * CHUNK

    def step(carry: tuple[jax.Array, ...], xs: tuple[jax.Array, jax.Array]) -> tuple[tuple[jax.Array, ...], None]:
        triggered, start, temp_end, found = carry  # temp_end == 0 means unset, as in the package
        p, cur = xs
        speech = p >= thr
        temp_end = jnp.where(speech & (temp_end != 0), 0, temp_end)
        begins = speech & ~triggered
        start = jnp.where(begins, cur, start)
        silent = (p < neg) & triggered  # a chunk that begins speech skips the rest ("continue")
        temp_end = jnp.where(silent & (temp_end == 0), cur, temp_end)
        ends = silent & ((cur - temp_end).astype(jnp.float32) >= min_silence)
        found = found | (ends & ((temp_end - start).astype(jnp.float32) > min_speech))
        triggered = (triggered | begins) & ~ends
        temp_end = jnp.where(ends, 0, temp_end)
        return (triggered, start, temp_end, found), None

    false = jnp.zeros((b,), bool)
    zero = jnp.zeros((b,), jnp.int32)
    (triggered, start, _, found), _ = jax.lax.scan(
        step, (false, zero, zero, false), (jnp.swapaxes(probs, 0, 1), positions)
    )
    tail = (num_samples - start).astype(jnp.float32) > min_speech
    return found | (triggered & tail)


register(
    Architecture(
        "silero_vad",
        SileroVAD,
        "Silero VAD 16 kHz (silero-vad): speech per 32 ms chunk; clip = get_speech_timestamps non-empty",
        "silero",
    )
)
