"""JaVAD (``javad`` package: tiny, balanced, precise), frame-level voice activity, in JAX.

Architecture ``javad``. The package's offline path (``javad.Processor.logits``), reproduced here
for a whole clip at once:

1. Whisper-style log-mel: centred STFT (reflect padding, periodic Hann of 400, hop 160, last
   frame dropped, so ``T // 160`` frames of 10 ms), power through Slaney mel filters (64 or 80),
   ``log10(max(., 1e-10))``, clamped at the clip's maximum minus 8, ``(x + 4) / 4``;
2. the clip's spectrogram standardised by its own mean and (unbiased) standard deviation;
3. cut into non-overlapping windows of ``window_frames`` frames (0.64 / 1.92 / 3.84 s), the last
   one zero-padded, each classified by the network into one output per frame;
4. outputs concatenated and cropped to the clip's frames.

Network (``javad.main.JaVAD``): conv stem of conv-ReLU-BatchNorm and "DirectionalConv2d" blocks
(conv-BN-ReLU, plus a learned per-channel alignment term, then BN) with 2x2 average pooling; the
channels then become a sequence of ``n_state``-dim tokens (flattened mel x time), plus fixed
sinusoidal embeddings, ``n_layer`` Whisper-style attention blocks, LayerNorm, a learned collapse of
each token to a scalar and an MLP head to ``window_frames`` outputs. Outputs were trained with MSE
against 0/1 speech masks, so they read as probabilities without a sigmoid.

Clip-level decision (``__call__``), following ``Processor.intervals`` with its defaults (the
model's threshold: 0.5, or 0.5768 for precise; ``min_duration`` 0.3 s; no padding, onset or offset):
the clip is *speech* when some run of at least 30 consecutive frames (0.3 s) has every output
above the threshold. Logits are ``[0, s]`` with ``s = max over 30-frame windows of the window's
minimum output - threshold``, which is positive exactly then and moves continuously with the
outputs. (The package compares run lengths in float seconds, so a run of exactly 30 frames can
fall either side of 0.3 s by rounding; here it counts as speech.)

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = JaVAD(TINY, nnx.Rngs(0)); m.eval()
    >>> m.frames(jnp.zeros((1, 10240))).shape, m(jnp.zeros((1, 10240))).shape
    ((1, 64), (1, 2))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models._detectors import mel_filters, sliding_min, speech_logits
from jsuff.models._family import FamilyConfig
from jsuff.models.logmel import frame_signal, windowed
from jsuff.models.base import Architecture, ModelError, register

__all__ = [
    "BALANCED",
    "BN_EPS",
    "FPS",
    "HOP",
    "LN_EPS",
    "N_FFT",
    "PRECISE",
    "SAMPLE_RATE",
    "TINY",
    "VARIANTS",
    "AttentionBlock",
    "ConvReluBN",
    "DirectionalConv",
    "JaVAD",
    "JavadConfig",
    "sinusoids",
]

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
FPS = SAMPLE_RATE // HOP
BN_EPS = 1e-5  # torch BatchNorm2d / LayerNorm default
LN_EPS = 1e-5

# The three released models' hyper-parameters (javad.main.MODELINFO; tests check them against it).
TINY: dict[str, Any] = {
    "n_mels": 64, "window_frames": 64, "n_state": 256, "output_dim": 64,
    "conv1": ["crb", 1, 128, [3, 7], 1, [1, 3]], "conv2": None,
    "conv3": ["dc", 128, 256, 3, 1, 1, [32, 32]],
}
BALANCED: dict[str, Any] = {
    "n_mels": 80, "window_frames": 192, "n_state": 320, "output_dim": 192,
    "conv1": ["crb", 1, 128, [3, 7], [1, 3], [1, 3]], "conv2": None,
    "conv3": ["dc", 128, 256, 3, 1, 1, [40, 32]],
}
PRECISE: dict[str, Any] = {
    "n_mels": 80, "window_frames": 384, "n_state": 320, "output_dim": 384, "n_layer": 2,
    "threshold": 0.5768,
    "conv1": ["crb", 1, 128, [3, 7], [1, 2], [1, 3]],
    "conv2": ["dc", 128, 256, [3, 7], [1, 3], [1, 3], [80, 64]],
    "conv3": ["dc", 256, 512, 3, 1, 1, [40, 32]],
}
VARIANTS = {"tiny": TINY, "balanced": BALANCED, "precise": PRECISE}


@dataclasses.dataclass(frozen=True)
class JavadConfig(FamilyConfig):
    """Hyper-parameters; ``conv*`` use the package's spelling.

    ``conv*`` are ``("crb", in, out, kernel, stride, padding)`` (conv-ReLU-BN) or ``("dc", in, out,
    kernel, stride, padding, (H, W))`` (DirectionalConv2d over an ``H x W`` map), or ``None``;
    ints stand for square pairs. Defaults are the balanced model.
    """

    family: ClassVar[str] = "javad"

    n_mels: int = 80
    window_frames: int = 192
    conv1: tuple | None = ("crb", 1, 128, (3, 7), (1, 3), (1, 3))
    conv2: tuple | None = None
    conv3: tuple | None = ("dc", 128, 256, 3, 1, 1, (40, 32))
    n_state: int = 320
    n_head: int = 4
    n_layer: int = 0
    output_dim: int = 192
    threshold: float = 0.5
    min_duration_frames: int = 30  # Processor's min_duration 0.3 s at 100 frames/s

    def __post_init__(self) -> None:
        if self.output_dim != self.window_frames:
            raise ModelError(f"javad: output_dim {self.output_dim} must equal window_frames {self.window_frames}")
        for name in ("conv1", "conv2", "conv3"):
            spec = getattr(self, name)
            if spec is not None and (spec[0], len(spec)) not in (("crb", 6), ("dc", 7)):
                raise ModelError(f"javad: {name} must be a 'crb' (6 items) or 'dc' (7 items) spec, got {spec}")


def _pair(v: int | tuple) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's fixed positional embedding ``[length, channels]`` (sin half, then cos half)."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    scaled = np.arange(length)[:, None] * np.exp(-inc * np.arange(channels // 2))[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _avg_pool2(x: jax.Array) -> jax.Array:
    # torch AvgPool2d(2, 2): floor mode, an odd last row/column is dropped.
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ConvReluBN(nnx.Module):
    """``crb``: Conv2d -> ReLU -> BatchNorm2d."""

    def __init__(self, spec: tuple, rngs: nnx.Rngs):
        _, cin, cout, kernel, stride, padding = spec
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(cin, cout, _pair(kernel), _pair(stride), padding=[(ph, ph), (pw, pw)], rngs=rngs)
        self.bn = nnx.BatchNorm(cout, epsilon=BN_EPS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(jax.nn.relu(self.conv(x)))


class DirectionalConv(nnx.Module):
    """``dc``: Conv2d -> BN -> ReLU, plus ``alignment(x)`` broadcast over time, -> BN."""

    def __init__(self, spec: tuple, rngs: nnx.Rngs):
        _, cin, cout, kernel, stride, padding, shape = spec
        ph, pw = _pair(padding)
        rows, cols = _pair(shape)
        self.conv = nnx.Conv(cin, cout, _pair(kernel), _pair(stride), padding=[(ph, ph), (pw, pw)], rngs=rngs)
        self.bn = nnx.BatchNorm(cout, epsilon=BN_EPS, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, epsilon=BN_EPS, rngs=rngs)
        self.alignment = nnx.Param(nnx.initializers.he_normal()(rngs.params(), (cout, rows, rows)))
        self.scale = 1.0 / math.sqrt(cols)  # the package divides by sqrt(shape[-1]), not by the actual width

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.bn(self.conv(x)))  # [B, H(mel), W(time), C]
        gram = jnp.einsum("bhwc,bgwc->bchg", x, x) * self.scale
        y = jnp.sum(gram * self.alignment[None], axis=-1)  # [B, C, H]
        return self.bn2(x + jnp.transpose(y, (0, 2, 1))[:, :, None, :])


class AttentionBlock(nnx.Module):
    """Whisper's pre-LN residual block: self-attention (key without bias) and a 4x GELU MLP."""

    def __init__(self, n_state: int, n_head: int, rngs: nnx.Rngs):
        self.n_head = n_head
        self.attn_ln = nnx.LayerNorm(n_state, epsilon=LN_EPS, rngs=rngs)
        self.query = nnx.Linear(n_state, n_state, rngs=rngs)
        self.key = nnx.Linear(n_state, n_state, use_bias=False, rngs=rngs)
        self.value = nnx.Linear(n_state, n_state, rngs=rngs)
        self.out = nnx.Linear(n_state, n_state, rngs=rngs)
        self.mlp_ln = nnx.LayerNorm(n_state, epsilon=LN_EPS, rngs=rngs)
        self.mlp1 = nnx.Linear(n_state, 4 * n_state, rngs=rngs)
        self.mlp2 = nnx.Linear(4 * n_state, n_state, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        h = self.attn_ln(x)
        scale = (d // self.n_head) ** -0.25  # applied to q and k separately, as Whisper does

        def heads(z: jax.Array) -> jax.Array:
            return z.reshape(b, t, self.n_head, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(h)) * scale, heads(self.key(h)) * scale, heads(self.value(h))
        w = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2), axis=-1)
        x = x + self.out((w @ v).transpose(0, 2, 1, 3).reshape(b, t, d))
        return x + self.mlp2(jax.nn.gelu(self.mlp1(self.mlp_ln(x)), approximate=False))  # torch's erf GELU


class JaVAD(nnx.Module):
    """The JaVAD network with the Processor's front end, windowing and clip rule."""

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        self.config = cfg = JavadConfig.from_mapping(config)
        kinds = {"crb": ConvReluBN, "dc": DirectionalConv}
        self.conv1, self.conv2, self.conv3 = (
            None if spec is None else kinds[spec[0]](spec, rngs) for spec in (cfg.conv1, cfg.conv2, cfg.conv3)
        )
        channels = [s[2] for s in (cfg.conv1, cfg.conv2, cfg.conv3) if s is not None][-1]
        self.positional_embedding = nnx.Variable(jnp.asarray(sinusoids(channels, cfg.n_state)))
        self.blocks = nnx.List([AttentionBlock(cfg.n_state, cfg.n_head, rngs) for _ in range(cfg.n_layer)])
        self.ln_post = nnx.LayerNorm(cfg.n_state, epsilon=LN_EPS, rngs=rngs)
        self.collapse = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (cfg.n_state, 1)))
        self.head1 = nnx.Linear(channels, cfg.n_state, rngs=rngs)
        self.head2 = nnx.Linear(cfg.n_state, cfg.output_dim, rngs=rngs)

    def network(self, spectrograms: jax.Array) -> jax.Array:
        """``[N, n_mels, window_frames]`` standardised windows -> ``[N, window_frames]`` outputs."""
        x = spectrograms[..., None]
        for conv in (self.conv1, self.conv2):
            x = x if conv is None else conv(x)
        x = _avg_pool2(x)
        x = x if self.conv3 is None else self.conv3(x)
        x = _avg_pool2(x)
        n, h, w, c = x.shape
        tokens = jnp.transpose(x, (0, 3, 1, 2)).reshape(n, c, h * w)  # torch's flatten(2) of NCHW
        embedding = self.positional_embedding[...]
        if tokens.shape[1:] != embedding.shape:
            raise ModelError(f"javad: feature map {tokens.shape[1:]} does not fit the embedding {embedding.shape}")
        x = tokens + embedding[None]
        for block in self.blocks:
            x = block(x)
        x = (self.ln_post(x) @ self.collapse[...])[..., 0]
        return self.head2(jax.nn.relu(self.head1(x)))

    def log_mel(self, waveforms: jax.Array) -> jax.Array:
        """``javad.utils.log_mel_spectrogram``: ``[B, T] -> [B, n_mels, T // 160]``."""
        t = waveforms.shape[-1]
        padded = jnp.pad(waveforms, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
        frames = windowed(frame_signal(padded, N_FFT, HOP, t // HOP))  # the last frame is dropped
        power = jnp.abs(jnp.fft.rfft(frames, axis=-1)) ** 2
        filters = mel_filters(N_FFT, self.config.n_mels, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2, scale="slaney")
        mel = jnp.swapaxes(power @ filters, -1, -2)
        log = jnp.log10(jnp.maximum(mel, 1e-10))
        log = jnp.maximum(log, jnp.max(log, axis=(-2, -1), keepdims=True) - 8.0)
        return (log + 4.0) / 4.0

    def frames(self, waveforms: jax.Array) -> jax.Array:
        """Output per 10 ms frame, as ``Processor.logits``: ``[B, T] -> [B, T // 160]``."""
        cfg = self.config
        need = cfg.window_frames * HOP
        if waveforms.ndim != 2 or waveforms.shape[-1] < need:
            raise ModelError(
                f"javad ({cfg.window_frames / FPS:.2f} s window) needs waveforms [B, T] with T >= {need} "
                f"samples, got {waveforms.shape} (the package refuses shorter input too)"
            )
        spec = self.log_mel(waveforms)
        b, _, f = spec.shape
        mean = jnp.mean(spec, axis=(1, 2), keepdims=True)
        std = jnp.std(spec, axis=(1, 2), keepdims=True, ddof=1)  # torch.std is unbiased
        spec = (spec - mean) / jnp.where(std == 0, 1e-6, std)  # the package's guard for silence
        n = -(-f // cfg.window_frames)
        spec = jnp.pad(spec, ((0, 0), (0, 0), (0, n * cfg.window_frames - f)))
        windows = spec.reshape(b, cfg.n_mels, n, cfg.window_frames).transpose(0, 2, 1, 3)
        out = self.network(windows.reshape(b * n, cfg.n_mels, cfg.window_frames))
        return out.reshape(b, n * cfg.window_frames)[:, :f]

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        """Clip logits ``[B, 2]`` over ``("no_speech", "speech")`` (rule in the module docstring)."""
        runs = sliding_min(self.frames(waveforms), self.config.min_duration_frames)
        return speech_logits(jnp.max(runs, axis=-1) - self.config.threshold)


register(
    Architecture(
        "javad",
        JaVAD,
        "JaVAD (javad): speech output per 10 ms frame; clip = a >= 0.3 s run above threshold",
        "javad",
    )
)
