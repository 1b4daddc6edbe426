"""A small log-mel CNN classifier family: the built-in demo's model and a home for users' own.

``waveforms[B, T]`` → log-mel spectrogram (in JAX, no parameters) → ``len(channels)`` blocks of
Conv2d 3×3 (padding 1) → BatchNorm → ReLU → MaxPool 2×2 (floor) → global mean or max pool →
Linear. Sized entirely by :class:`MelCnnConfig`; trainable with optax through ``flax.nnx``
(``module.train()`` makes batch norm use and update batch statistics, ``module.eval()`` freezes
them).

Front end (:func:`log_mel`), all float32:

* STFT with ``n_fft``-point frames every ``hop`` samples, a periodic Hann window of ``n_fft``
  samples, centred frames (the clip is reflect-padded by ``n_fft // 2`` on both sides, so there are
  ``1 + T // hop`` frames), power ``|X|^2``;
* a triangular HTK-mel filterbank of ``n_mels`` bands from ``fmin`` to ``fmax``, no area
  normalisation (:func:`mel_filterbank`, ``[n_fft // 2 + 1, n_mels]``);
* ``log(mel + log_eps)``.

That is ``torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True,
pad_mode="reflect", return_complex=True).abs() ** 2``, then ``fb.T @ spec``, then the log.

PyTorch key layout (what ``jsuff convert --arch melcnn`` reads; the network sees the log-mel as a
one-channel image ``[B, 1, n_mels, frames]``)::

    blocks.{i}.conv.weight         (channels[i], channels[i-1] or 1, 3, 3)
    blocks.{i}.conv.bias           (channels[i],)
    blocks.{i}.bn.weight           (channels[i],)     BatchNorm2d, eps 1e-5
    blocks.{i}.bn.bias             (channels[i],)
    blocks.{i}.bn.running_mean     (channels[i],)
    blocks.{i}.bn.running_var      (channels[i],)
    blocks.{i}.bn.num_batches_tracked                 (ignored)
    head.weight                    (num_classes, channels[-1])
    head.bias                      (num_classes,)

i.e. a ``torch.nn.Module`` with ``self.blocks = nn.ModuleList([Block(...)])`` where each ``Block``
has ``conv = nn.Conv2d(c_in, c_out, 3, padding=1)`` and ``bn = nn.BatchNorm2d(c_out)`` and runs
``max_pool2d(relu(bn(conv(x))), 2)``; then ``x.mean((2, 3))`` (or ``amax``) and ``head =
nn.Linear(channels[-1], num_classes)``. The front end has no weights. Inside jsuff the layout is
channels last, ``[B, n_mels, frames, C]``.

A module trained in JAX is saved like any other: ``save_model(Model.from_module(module,
arch="melcnn", config=cfg.to_json(), sample_rate=cfg.sample_rate, labels=labels,
input=cfg.input_policy()), dest)`` (``from_module`` switches batch norm to inference mode). Note
that ``optax.adam`` raises its decay rates to an int32 step count, which JAX's strict dtype
promotion (as in this project's tests) rejects: train under ``jax.numpy_dtype_promotion("standard")``.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = build({"num_classes": 3, "channels": [4, 8], "n_mels": 32}, nnx.Rngs(0)); m.eval()
    >>> m(jnp.zeros((2, 8000))).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models._family import FamilyConfig, init_rngs
from jsuff.models.base import Architecture, InputPolicy, register
from jsuff.models.logmel import frame_signal, mel_filter_bank, windowed

__all__ = [
    "ARCH",
    "build",
    "ConvBlock",
    "log_mel",
    "mel_filterbank",
    "MelCnn",
    "MelCnnConfig",
    "power_spectrogram",
]

ARCH = "melcnn"
_POOLINGS = ("mean", "max")


@dataclasses.dataclass(frozen=True)
class MelCnnConfig(FamilyConfig):
    """Size of a mel-CNN.

    Attributes:
        num_classes: output classes.
        sample_rate: the rate the model expects.
        n_fft: STFT frame (and window) length.
        hop: STFT hop in samples.
        n_mels: mel bands.
        fmin, fmax: the filterbank's frequency range in Hz (``fmax`` ``None``: Nyquist).
        channels: output channels of each conv block.
        pooling: global pooling over (mel, time): ``"mean"`` or ``"max"``.
        log_eps: added to the mel power before the log.
        num_samples: the clip length used in training (the input policy's length), or ``None``.
    """

    family: ClassVar[str] = ARCH

    num_classes: int
    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    channels: tuple[int, ...] = (16, 32, 64)
    pooling: str = "mean"
    log_eps: float = 1e-6
    num_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_classes", "sample_rate", "n_fft", "hop", "n_mels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.channels or not all(isinstance(c, int) and c > 0 for c in self.channels):
            raise ValueError(f"channels must be a non-empty list of positive integers, got {self.channels}")
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if not 0 <= self.fmin < self.top_hz <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.log_eps <= 0:
            raise ValueError(f"log_eps must be positive, got {self.log_eps}")

    @property
    def top_hz(self) -> float:
        return float(self.sample_rate / 2 if self.fmax is None else self.fmax)


    def input_policy(self) -> InputPolicy:
        """Zero-pad or crop from the start to ``num_samples`` (any length when it is ``None``)."""
        return InputPolicy(length=self.num_samples, pad="zero", crop="start")



# ----------------------------------------------------------------------------------------------
# Front end
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    # The FFT grid runs to sample_rate / 2 exactly (not the integer Nyquist) for odd rates too.
    fb = mel_filter_bank(n_fft // 2 + 1, n_mels, fmin, fmax, sample_rate, top_bin_hz=sample_rate / 2)
    out = fb.astype(np.float32)
    out.flags.writeable = False
    return out


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular HTK-mel filters ``[n_fft // 2 + 1, n_mels]`` (float32, peak 1, no normalisation).

    Band ``m`` rises linearly from edge ``m`` to edge ``m + 1`` and falls to edge ``m + 2``, the
    ``n_mels + 2`` edges being equally spaced in HTK mel (``2595 log10(1 + f / 700)``).

    Example:
        >>> fb = mel_filterbank(16000, 512, 40)
        >>> fb.shape, float(fb.max()) <= 1.0
        ((257, 40), True)
    """
    top = sample_rate / 2 if fmax is None else fmax
    return _filterbank(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(top))


def power_spectrogram(waveforms: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Centred, reflect-padded, Hann-windowed STFT power ``[B, 1 + T // hop, n_fft // 2 + 1]``.

    Example:
        >>> power_spectrogram(jnp.zeros((1, 1600)), 400, 160).shape
        (1, 11, 201)
    """
    pad = n_fft // 2
    if waveforms.shape[-1] <= pad:
        raise ValueError(
            f"clip of {waveforms.shape[-1]} samples is too short for n_fft={n_fft} (reflect padding)"
        )
    x = jnp.pad(waveforms, ((0, 0), (pad, pad)), mode="reflect")
    spec = jnp.fft.rfft(windowed(frame_signal(x, n_fft, hop)), axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def log_mel(waveforms: jax.Array, config: MelCnnConfig) -> jax.Array:
    """The mel-CNN front end: ``waveforms[B, T]`` -> ``log(mel power + log_eps)[B, frames, n_mels]``."""
    power = power_spectrogram(waveforms, config.n_fft, config.hop)
    fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    return jnp.log(power @ fb + config.log_eps)


# ----------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------


class ConvBlock(nnx.Module):
    """Conv 3×3 (padding 1) → BatchNorm → ReLU → MaxPool 2×2, channels last."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(c_in, c_out, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        # PyTorch BatchNorm2d defaults (eps 1e-5, momentum 0.1 = Flax 0.9), so that weights
        # trained on either side behave the same.
        self.bn = nnx.BatchNorm(c_out, epsilon=1e-5, momentum=0.9, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.max_pool(jax.nn.relu(self.bn(self.conv(x))), (2, 2), strides=(2, 2))


class MelCnn(nnx.Module):
    """``__call__(waveforms[B, T]) -> logits[B, num_classes]``."""

    def __init__(self, config: MelCnnConfig, *, rngs: nnx.Rngs):
        self.config = config
        ins = (1, *config.channels[:-1])
        self.blocks = nnx.List([ConvBlock(i, o, rngs=rngs) for i, o in zip(ins, config.channels)])
        self.head = nnx.Linear(config.channels[-1], config.num_classes, rngs=rngs)

    def features(self, waveforms: jax.Array) -> jax.Array:
        """The pooled embedding ``[B, channels[-1]]`` that the head reads."""
        if waveforms.ndim != 2:
            raise ValueError(f"melcnn expects waveforms[B, T], got shape {waveforms.shape}")
        # [B, frames, n_mels] -> image [B, n_mels, frames, 1] (torch: [B, 1, n_mels, frames]).
        x = jnp.swapaxes(log_mel(waveforms, self.config), 1, 2)[..., None]
        for block in self.blocks:
            x = block(x)
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(
                f"{len(self.blocks)} pooling stages leave no cells for a {waveforms.shape[1]}-sample clip "
                f"with n_mels={self.config.n_mels}; use a longer clip or fewer blocks"
            )
        pool = jnp.mean if self.config.pooling == "mean" else jnp.max
        return pool(x, axis=(1, 2))

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        return self.head(self.features(waveforms))


def build(config: Mapping[str, Any], rngs: nnx.Rngs) -> MelCnn:
    """Build a randomly initialised mel-CNN from its config (a JSON mapping)."""
    return MelCnn(MelCnnConfig.from_mapping(config), rngs=init_rngs(rngs))


register(Architecture(ARCH, build, "log-mel CNN (conv-BN-ReLU-pool blocks, global pool, linear)", "melcnn"))
