"""Kaldi-compatible log mel filter-bank features in JAX (``torchaudio.compliance.kaldi.fbank``).

This is the front end of the Audio Spectrogram Transformer. ``transformers.ASTFeatureExtractor``
computes it with torchaudio when torchaudio imports, and otherwise with its NumPy path
(``transformers.audio_utils.spectrogram`` with Kaldi settings). Both paths are the same algorithm,
and :func:`kaldi_fbank` reproduces it (tests check it against the NumPy path, which is the one that
runs where torchaudio is absent):

* frames of 25 ms every 10 ms, only whole frames (``snip_edges``): ``1 + (T - 400) // 160`` frames
  at 16 kHz, none when the clip is shorter than one frame;
* per frame: no dither; remove the DC offset (subtract the frame mean); pre-emphasis 0.97 with the
  first sample scaled by ``1 - 0.97`` (Kaldi's ``x[-1] = x[0]``); the window (AST uses Kaldi's
  ``"hanning"``, a symmetric Hann; Kaldi's default is ``"povey"``); zero-pad to the next power of
  two (512);
* power spectrum, mel filters triangular on the Kaldi mel axis (``1127 ln(1 + f / 700)``) from
  20 Hz to Nyquist, unnormalised, the Nyquist bin weighted 0;
* natural log of ``max(mel energy, float32 epsilon)``; no energy coefficient.

The waveform is used as given: AST's extractor does not rescale to the 16-bit integer range.

Precision: float32 throughout (torchaudio's path is float32 too; the NumPy path float64). Log
energies match the NumPy path to ~1e-6 typically; bands that hold ~1e-6 of a frame's energy (a
loud tone over faint noise, the lowest bands after pre-emphasis) move by up to ~1e-3, because
rounding the windowed frame to float32 already perturbs them that much.

Example:
    >>> import jax.numpy as jnp
    >>> kaldi_fbank(jnp.zeros((2, 16000)), FbankConfig(num_mel_bins=16)).shape
    (2, 98, 16)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jsuff.models.base import ModelError
from jsuff.models.logmel import frame_signal, mel_filter_bank, power_spectrum, window

__all__ = ["FbankConfig", "kaldi_fbank"]

# Kaldi's log floor: float32 machine epsilon (torchaudio's EPSILON, HF's mel_floor for AST).
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class FbankConfig:
    """Settings of :func:`kaldi_fbank` (names follow ``torchaudio.compliance.kaldi.fbank``).

    Attributes:
        sample_rate: Hz.
        num_mel_bins: mel filters.
        frame_length_ms: analysis window, ms.
        frame_shift_ms: hop, ms.
        window_type: ``"hanning"``, ``"povey"``, ``"hamming"`` or ``"rectangular"``.
        preemphasis: pre-emphasis coefficient.
        remove_dc_offset: subtract each frame's mean first.
        low_freq: lowest mel edge, Hz.
        high_freq: highest mel edge, Hz; ``<= 0`` means Nyquist plus this offset (Kaldi).
        round_to_power_of_two: pad each frame to the next power of two for the FFT.
        log_floor: energies are clamped here before the log.
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    round_to_power_of_two: bool = True
    log_floor: float = FLOAT32_EPS

    def __post_init__(self) -> None:
        window(self.window_type, 4, periodic=False)  # an unknown name fails here, not when traced
        if not 0.0 <= self.low_freq < self.nyquist_high_freq <= self.sample_rate / 2:
            raise ModelError(
                f"fbank needs 0 <= low_freq < high_freq <= Nyquist, got {self.low_freq}, {self.high_freq}"
            )

    @property
    def frame_length(self) -> int:
        """Samples per frame (400 at 16 kHz)."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def frame_shift(self) -> int:
        """Samples per hop (160 at 16 kHz)."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def n_fft(self) -> int:
        """FFT size: the frame length, or the next power of two (512 at 16 kHz)."""
        n = self.frame_length
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    @property
    def nyquist_high_freq(self) -> float:
        return self.high_freq if self.high_freq > 0 else self.sample_rate / 2 + self.high_freq

    def num_frames(self, num_samples: int) -> int:
        """Frames :func:`kaldi_fbank` gives for a clip of ``num_samples``.

        Example:
            >>> FbankConfig().num_frames(16000)
            98
        """
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_shift


def kaldi_fbank(waveforms: jax.Array, config: FbankConfig = FbankConfig()) -> jax.Array:
    """Log mel filter-bank energies ``[B, frames, num_mel_bins]`` of ``waveforms[B, T]``.

    See the module docstring for the steps; ``frames = config.num_frames(T)`` (possibly 0).

    Example:
        >>> import jax.numpy as jnp
        >>> kaldi_fbank(jnp.ones((1, 560)), FbankConfig(num_mel_bins=8)).shape
        (1, 2, 8)
    """
    x = waveforms.astype(jnp.float32)
    frames = frame_signal(x, config.frame_length, config.frame_shift)  # [B, F, L]
    if config.remove_dc_offset:
        frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    if config.preemphasis:
        # Kaldi pre-emphasis treats the sample before the frame as the frame's first sample.
        previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
        frames = frames - config.preemphasis * previous
    win = jnp.asarray(window(config.window_type, config.frame_length, periodic=False), jnp.float32)
    frames = frames * win.reshape((1,) * (frames.ndim - 1) + (-1,))
    power = power_spectrum(frames, config.n_fft)  # [B, F, n_fft // 2 + 1]
    filters = mel_filter_bank(
        config.n_fft // 2 + 1, config.num_mel_bins, config.low_freq, config.nyquist_high_freq,
        config.sample_rate, mel_scale="kaldi", triangularize_in_mel_space=True,
    )
    mel = power @ jnp.asarray(filters, jnp.float32)
    return jnp.log(jnp.maximum(mel, config.log_floor))
