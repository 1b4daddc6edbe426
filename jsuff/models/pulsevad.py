"""PulseVAD (``pulsevad`` package), a 2.1k-parameter speech/non-speech CNN, in JAX.

Architecture ``pulsevad``: the package's BatchNorm-folded network (``pulsevad.quantize.
FoldedPulseVAD``), whose ``dims`` cover both the shipped 2.1k model and the unpruned 81k teacher
(the converter folds the teacher's BatchNorms the way the package does).

Per 200 ms window (3200 samples at 16 kHz), the package's NumPy front end
(``pulsevad.frontend_np``, used by ``predict_window``): pre-emphasis 0.97 (first sample kept),
standardise the window (population std + 1e-5), reflect-pad 256, 21 frames of a 400-sample periodic
Hann window at hop 160 inside a 512-point FFT, power through 64 HTK-scale Slaney-normalised mel
filters, ``log(mel + 1e-5)``, then standardise each mel bin over its 21 frames. The CNN (1x1
adapter, depthwise/pointwise convolutions, a residual block, a dilated depthwise convolution,
global average pooling) gives logits ``[non_speech, speech]``; the window's speech probability is
``sigmoid(speech - non_speech)``.

Windows follow ``pulsevad.get_speech_timestamps``: 3200 samples every 1600 (100 ms); a clip
shorter than one window is zero-padded to one window; samples after the last full window are not
seen.

Clip-level decision (``__call__``), following ``get_speech_timestamps`` with its defaults
(threshold 0.5, min speech 100 ms, min silence 100 ms): every segment it finds spans at least one
whole 200 ms window, so the clip is *speech* exactly when some window has probability >= 0.5.
Logits are ``[0, s]`` with ``s = max window probability - threshold`` (a probability exactly at
the threshold, a tie, reads as no speech here).

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> m = PulseVAD({}, nnx.Rngs(0)); m.eval()
    >>> m.frames(jnp.zeros((2, 8000))).shape, m(jnp.zeros((2, 8000))).shape
    ((2, 4), (2, 2))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._detectors import mel_filters, speech_logits
from jsuff.models._family import FamilyConfig
from jsuff.models.logmel import frame_signal, windowed
from jsuff.models.base import Architecture, ModelError, register

__all__ = [
    "EPS",
    "HOP",
    "N_FFT",
    "N_FRAMES",
    "N_MELS",
    "PREEMPHASIS",
    "SAMPLE_RATE",
    "TEACHER",
    "WIN_LENGTH",
    "WINDOW",
    "PulseConfig",
    "PulseVAD",
]

SAMPLE_RATE = 16000
WINDOW = 3200  # samples per decision (200 ms)
N_FFT = 512
WIN_LENGTH = 400
HOP = 160
N_MELS = 64
N_FRAMES = 1 + WINDOW // HOP  # 21 centred frames
PREEMPHASIS = 0.97
EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class PulseConfig(FamilyConfig):
    """Channel widths (``FoldedPulseVAD``'s ``dims``; defaults: the shipped 2.1k model) and clip rule.

    Attributes:
        adapter, conv0_pw, b1, b2, b3, c4, p4, c5: output channels of the layers of those names.
        threshold: a window with speech probability >= this is speech.
        hop: samples between windows (``get_speech_timestamps``'s ``hop_size_samples``).
    """

    family: ClassVar[str] = "pulsevad"

    adapter: int = 12
    conv0_pw: int = 8
    b1: int = 8
    b2: int = 8
    b3: int = 8
    c4: int = 8
    p4: int = 8
    c5: int = 8
    threshold: float = 0.5
    hop: int = 1600


TEACHER = {"adapter": 128, "conv0_pw": 128, "b1": 64, "b2": 64, "b3": 64, "c4": 64, "p4": 128, "c5": 128}


def _conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, *, dilation: int = 1, depthwise: bool = False) -> nnx.Conv:
    pad = dilation * (k - 1) // 2  # the package's symmetric "same" padding
    return nnx.Conv(
        cin, cout, k, padding=[(pad, pad)], kernel_dilation=dilation,
        feature_group_count=cin if depthwise else 1, use_bias=not depthwise, rngs=rngs,
    )


class PulseVAD(nnx.Module):
    """``FoldedPulseVAD`` with the package's front end and sliding windows."""

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        self.config = d = PulseConfig.from_mapping(config)
        self.adapter = _conv(N_MELS, d.adapter, 1, rngs)
        self.conv0_dw = _conv(d.adapter, d.adapter, 11, rngs, depthwise=True)
        self.conv0_pw = _conv(d.adapter, d.conv0_pw, 1, rngs)
        self.block1 = _conv(d.conv0_pw, d.b1, 1, rngs)
        self.block2 = _conv(d.b1, d.b2, 1, rngs)
        self.subA_dw = _conv(d.b2, d.b3, 17, rngs, depthwise=True)
        self.subA_pw = _conv(d.b3, d.b3, 1, rngs)
        self.subC_dw = _conv(d.b3, d.b3, 17, rngs, depthwise=True)
        self.subC_pw = _conv(d.b3, d.b3, 1, rngs)
        self.skip = _conv(d.b2, d.b3, 1, rngs)
        self.conv4_dw = _conv(d.b3, d.c4, 29, rngs, dilation=2, depthwise=True)
        self.conv4_pw = _conv(d.c4, d.p4, 1, rngs)
        self.conv5 = _conv(d.p4, d.c5, 1, rngs)
        self.classifier = nnx.Linear(d.c5, 2, rngs=rngs)

    def network(self, features: jax.Array) -> jax.Array:
        """``[N, 21, 64]`` normalised log-mel (time, mel) -> logits ``[N, 2]``."""
        relu = jax.nn.relu
        x = self.conv0_dw(relu(self.adapter(features)))
        x = relu(self.block2(relu(self.block1(relu(self.conv0_pw(x))))))
        main = self.subC_pw(self.subC_dw(relu(self.subA_pw(self.subA_dw(x)))))
        x = relu(main + self.skip(x))
        x = relu(self.conv5(relu(self.conv4_pw(self.conv4_dw(x)))))
        return self.classifier(jnp.mean(x, axis=1))

    def features(self, windows: jax.Array) -> jax.Array:
        """``pulsevad.frontend_np.extract_log_mel_np``: ``[N, 3200] -> [N, 21, 64]`` (time, mel)."""
        x = jnp.concatenate([windows[:, :1], windows[:, 1:] - PREEMPHASIS * windows[:, :-1]], axis=-1)
        x = (x - jnp.mean(x, axis=-1, keepdims=True)) / (jnp.std(x, axis=-1, keepdims=True) + EPS)
        padded = jnp.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
        # The 400-sample window sits in the middle of each 512-sample frame; the zeros around it
        # only shift the phase, so the power spectrum of the bare 400 samples at n=512 is the same.
        offset = (N_FFT - WIN_LENGTH) // 2
        frames = windowed(frame_signal(padded[:, offset:], WIN_LENGTH, HOP, N_FRAMES))
        power = jnp.abs(jnp.fft.rfft(frames, n=N_FFT, axis=-1)) ** 2
        log_mel = jnp.log(power @ mel_filters(N_FFT, N_MELS, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2, scale="htk") + EPS)
        mean = jnp.mean(log_mel, axis=1, keepdims=True)
        return (log_mel - mean) / (jnp.std(log_mel, axis=1, keepdims=True) + EPS)

    def frames(self, waveforms: jax.Array) -> jax.Array:
        """Speech probability per 200 ms window every ``hop`` samples: ``[B, T] -> [B, W]``."""
        if waveforms.ndim != 2 or waveforms.shape[-1] == 0:
            raise ModelError(f"pulsevad expects waveforms [B, T] with T > 0, got {waveforms.shape}")
        b, t = waveforms.shape
        hop = self.config.hop
        n = 1 if t < WINDOW else (t - WINDOW) // hop + 1
        windows = frame_signal(waveforms, WINDOW, hop, n).reshape(b * n, WINDOW)
        logits = self.network(self.features(windows))
        return jax.nn.sigmoid(logits[:, 1] - logits[:, 0]).reshape(b, n)

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        """Clip logits ``[B, 2]`` over ``("no_speech", "speech")`` (rule in the module docstring)."""
        return speech_logits(jnp.max(self.frames(waveforms), axis=-1) - self.config.threshold)


register(
    Architecture(
        "pulsevad",
        PulseVAD,
        "PulseVAD (pulsevad): speech per 200 ms window every 100 ms; clip = any window >= 0.5",
        "pulsevad",
    )
)
