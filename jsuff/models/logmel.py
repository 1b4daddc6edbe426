"""Whisper's log-mel front end in JAX, and the mel filter banks and framing other front ends reuse.

:func:`whisper_log_mel` reproduces ``transformers.WhisperFeatureExtractor`` (its torch path, which
is what runs wherever torch is installed, and which its NumPy path matches to about 1e-5):

1. pad with zeros or trim the clip to ``n_samples`` (``chunk_length * sampling_rate``);
2. centred STFT: reflect-pad ``n_fft // 2`` on both sides, periodic Hann window of ``n_fft``,
   hop ``hop_length``; drop the last frame, so 30 s give exactly 3000 frames;
3. power spectrum through Slaney-normalised, Slaney-scale mel filters from 0 to 8 kHz
   (80 or 128 of them);
4. ``log10(max(mel, 1e-10))``, then clamp each clip at its own maximum minus 8, then
   ``(x + 4) / 4``.

:func:`mel_filter_bank` builds the filter matrices in NumPy float64 (HTK, Slaney or Kaldi mel
scales; triangles in Hz or in mel space; optional Slaney area normalisation); they are constants of
the traced computation, not parameters. :func:`frame_signal` cuts overlapping frames with static
slices and reshapes, so no gather index table is baked into the compiled program; :func:`windowed`
applies a periodic Hann window to them.

Example:
    >>> import jax.numpy as jnp
    >>> cfg = LogMelConfig(n_samples=16000)
    >>> whisper_log_mel(jnp.zeros((2, 8000)), cfg).shape
    (2, 80, 100)
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jsuff.models.base import ModelError

__all__ = [
    "LogMelConfig",
    "frame_signal",
    "hz_to_mel",
    "mel_filter_bank",
    "mel_to_hz",
    "pad_or_trim",
    "power_spectrum",
    "whisper_log_mel",
    "window",
    "windowed",
]

_MEL_SCALES = ("htk", "slaney", "kaldi")

# The Slaney scale is linear below 1 kHz (3 mels per 200 Hz) and logarithmic above.
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = 15.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    """Hertz to mels on the ``htk``, ``slaney`` or ``kaldi`` scale (NumPy, float64).

    Example:
        >>> round(float(hz_to_mel(1000.0, "slaney")), 6)
        15.0
    """
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "kaldi":
        return 1127.0 * np.log(1.0 + f / 700.0)
    if scale == "slaney":
        linear = f * 3.0 / 200.0
        safe = np.maximum(f, _SLANEY_BREAK_HZ)  # keeps log() finite where the linear branch wins
        log = _SLANEY_BREAK_MEL + np.log(safe / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
        return np.where(f >= _SLANEY_BREAK_HZ, log, linear)
    raise ModelError(f"unknown mel scale {scale!r}; one of {_MEL_SCALES}")


def mel_to_hz(mel: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`.

    Example:
        >>> round(float(mel_to_hz(hz_to_mel(440.0, "kaldi"), "kaldi")), 6)
        440.0
    """
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * (np.exp(m / 1127.0) - 1.0)
    if scale == "slaney":
        linear = m * 200.0 / 3.0
        log = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (m - _SLANEY_BREAK_MEL))
        return np.where(m >= _SLANEY_BREAK_MEL, log, linear)
    raise ModelError(f"unknown mel scale {scale!r}; one of {_MEL_SCALES}")


@functools.lru_cache(maxsize=32)
def mel_filter_bank(
    num_frequency_bins: int,
    num_mel_filters: int,
    min_frequency: float,
    max_frequency: float,
    sample_rate: int,
    *,
    norm: str | None = None,
    mel_scale: str = "htk",
    triangularize_in_mel_space: bool = False,
    top_bin_hz: float | None = None,
) -> np.ndarray:
    """Triangular mel filters as a ``[num_frequency_bins, num_mel_filters]`` float64 matrix.

    Filter ``m`` rises from centre ``m - 1`` to centre ``m`` and falls to centre ``m + 1``, with
    ``num_mel_filters + 2`` centres equally spaced in mel between ``min_frequency`` and
    ``max_frequency``. The FFT bins are ``k * sample_rate / (2 * (num_frequency_bins - 1))`` Hz.

    Args:
        num_frequency_bins: ``n_fft // 2 + 1``.
        num_mel_filters: filters to build.
        min_frequency: lowest edge, Hz.
        max_frequency: highest edge, Hz.
        sample_rate: the signal's rate, Hz.
        norm: ``"slaney"`` divides each triangle by half its width in Hz (constant energy per
            filter, librosa's and Whisper's choice); ``None`` keeps peak 1.
        mel_scale: ``"htk"``, ``"slaney"`` or ``"kaldi"``.
        triangularize_in_mel_space: build the triangles on the mel axis (Kaldi / torchaudio's
            ``compliance.kaldi``) instead of the Hz axis (librosa, Whisper).
        top_bin_hz: for triangles on the Hz axis, the frequency of the last FFT bin; ``None`` is
            ``sample_rate // 2`` as transformers lays the grid out (melcnn and the detector ports
            use ``sample_rate / 2``; the two differ only for odd rates).

    Returns:
        A read-only float64 array; cast it to the compute dtype at the point of use.

    Example:
        >>> fb = mel_filter_bank(201, 80, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
        >>> fb.shape
        (201, 80)
    """
    if norm not in (None, "slaney"):
        raise ModelError(f"mel filter norm must be None or 'slaney', got {norm!r}")
    if num_frequency_bins < 2 or num_mel_filters < 1:
        raise ModelError(
            f"need >= 2 frequency bins and >= 1 filter, got {num_frequency_bins}, {num_mel_filters}"
        )
    if not 0.0 <= min_frequency <= max_frequency:
        raise ModelError(f"need 0 <= min_frequency <= max_frequency, got {min_frequency}, {max_frequency}")
    lowest, highest = hz_to_mel(min_frequency, mel_scale), hz_to_mel(max_frequency, mel_scale)
    edges_mel = np.linspace(lowest, highest, num_mel_filters + 2)
    edges_hz = mel_to_hz(edges_mel, mel_scale)
    bins_hz = np.arange(num_frequency_bins) * (sample_rate / (2.0 * (num_frequency_bins - 1)))
    if triangularize_in_mel_space:
        points, edges = hz_to_mel(bins_hz, mel_scale), edges_mel
    else:
        # The Hz grid as HF lays it out: evenly from 0 to the integer Nyquist (unless told otherwise).
        top = sample_rate // 2 if top_bin_hz is None else top_bin_hz
        points, edges = np.linspace(0.0, top, num_frequency_bins), edges_hz
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (points[:, None] - lower) / (centre - lower)
    falling = (upper - points[:, None]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        # Divides by the width on the axis the triangles live on (Hz, unless built in mel space),
        # as transformers.audio_utils.mel_filter_bank does.
        fb = fb * (2.0 / (edges[2:] - edges[:-2]))
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=32)
def window(name: str, length: int, *, periodic: bool) -> np.ndarray:
    """A window as float64 NumPy: ``hann``/``hanning``, ``hamming``, ``povey`` or ``rectangular``.

    ``periodic=True`` is the DFT-even form (``torch.hann_window`` default); ``False`` the
    symmetric one (Kaldi, ``np.hanning``). Povey is Kaldi's symmetric Hann raised to 0.85.

    Example:
        >>> window("hann", 4, periodic=True).round(6).tolist()
        [0.0, 0.5, 1.0, 0.5]
    """
    denom = length if periodic else length - 1
    n = np.arange(length, dtype=np.float64)
    cos = np.cos(2.0 * np.pi * n / max(denom, 1))
    if name in ("hann", "hanning"):
        w = 0.5 - 0.5 * cos
    elif name == "hamming":
        w = 0.54 - 0.46 * cos
    elif name == "povey":
        w = (0.5 - 0.5 * cos) ** 0.85
    elif name == "rectangular":
        w = np.ones(length)
    else:
        raise ModelError(f"unknown window {name!r}; one of hann, hanning, hamming, povey, rectangular")
    w.setflags(write=False)
    return w


def frame_signal(x: jax.Array, frame_length: int, hop: int, num_frames: int | None = None) -> jax.Array:
    """Overlapping frames ``x[..., i * hop : i * hop + frame_length]``, ``[..., n, frame_length]``.

    By default only whole frames are kept (Kaldi's ``snip_edges``): ``n = 1 + (T - frame_length)
    // hop``. With ``num_frames`` there are exactly that many, and ``x`` is zero-padded at the end
    where the last ones run past it. Built from ``ceil(frame_length / hop)`` shifted reshapes
    instead of a gather, so the compiled program holds no index table however long the clip.

    Example:
        >>> frame_signal(jnp.arange(7.0), 4, 2).tolist()
        [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]]
        >>> frame_signal(jnp.arange(7.0), 3, 2, 3).tolist()
        [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]]
    """
    t = x.shape[-1]
    if num_frames is None:
        num_frames = 1 + (t - frame_length) // hop if t >= frame_length else 0
    n = num_frames
    if n == 0:
        return jnp.zeros((*x.shape[:-1], 0, frame_length), x.dtype)
    shifts = -(-frame_length // hop)
    need = (n + shifts - 1) * hop
    pad = [(0, 0)] * (x.ndim - 1) + [(0, max(0, need - t))]
    chunks = jnp.pad(x, pad)[..., :need].reshape(*x.shape[:-1], n + shifts - 1, hop)
    frames = jnp.concatenate([chunks[..., j : j + n, :] for j in range(shifts)], axis=-1)
    return frames[..., :frame_length]


def windowed(frames: jax.Array) -> jax.Array:
    """``frames[..., n]`` times a periodic Hann window of ``n`` (``torch.hann_window(n)``), float32.

    Example:
        >>> windowed(jnp.ones((1, 4))).tolist()
        [[0.0, 0.5, 1.0, 0.5]]
    """
    n = frames.shape[-1]
    hann = window("hann", n, periodic=True).astype(np.float32)
    return frames * hann.reshape((1,) * (frames.ndim - 1) + (n,))  # explicit broadcast: strict ranks


def power_spectrum(frames: jax.Array, n_fft: int) -> jax.Array:
    """``|rfft(frames, n_fft)|**2`` over the last axis (frames are zero-padded to ``n_fft``)."""
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)
    return jnp.square(jnp.abs(spec))


def pad_or_trim(x: jax.Array, length: int) -> jax.Array:
    """Zero-pad the end of ``x[..., T]`` or keep its first ``length`` samples.

    Example:
        >>> pad_or_trim(jnp.ones(3), 5).tolist()
        [1.0, 1.0, 1.0, 0.0, 0.0]
    """
    t = x.shape[-1]
    if t >= length:
        return x[..., :length]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - t)])


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    """``WhisperFeatureExtractor``'s settings (the fields of its ``preprocessor_config.json``).

    Attributes:
        sample_rate: ``sampling_rate``.
        n_fft: STFT size and Hann window length.
        hop_length: STFT hop.
        n_mels: ``feature_size``: 80, or 128 for large-v3.
        n_samples: ``chunk_length * sampling_rate``: every clip is padded or trimmed to this.
        f_max: top of the mel filters; the extractor fixes it at 8 kHz.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    n_samples: int = 480000
    f_max: float = 8000.0

    def __post_init__(self) -> None:
        if self.n_samples <= self.n_fft // 2:
            raise ModelError(f"n_samples ({self.n_samples}) must exceed n_fft // 2 for reflect padding")

    @property
    def n_frames(self) -> int:
        """Frames per clip (``nb_max_frames``): 3000 for 30 s at 16 kHz."""
        return self.n_samples // self.hop_length


def whisper_log_mel(waveforms: jax.Array, config: LogMelConfig = LogMelConfig()) -> jax.Array:
    """Whisper's log-mel spectrogram ``[B, n_mels, n_frames]`` of ``waveforms[B, T]``.

    Any ``T`` is padded or trimmed to ``config.n_samples`` first, as the extractor does.

    Example:
        >>> whisper_log_mel(jnp.zeros((1, 16000)), LogMelConfig(n_samples=16000)).shape
        (1, 80, 100)
    """
    x = pad_or_trim(waveforms.astype(jnp.float32), config.n_samples)
    half = config.n_fft // 2
    x = jnp.pad(x, [(0, 0), (half, half)], mode="reflect")  # torch.stft(center=True)
    frames = frame_signal(x, config.n_fft, config.hop_length)[:, :-1]  # the extractor drops the last
    win = jnp.asarray(window("hann", config.n_fft, periodic=True), jnp.float32)
    power = power_spectrum(frames * win[None, None], config.n_fft)  # [B, F, n_fft // 2 + 1]
    filters = mel_filter_bank(
        config.n_fft // 2 + 1, config.n_mels, 0.0, config.f_max, config.sample_rate,
        norm="slaney", mel_scale="slaney",
    )
    mel = power @ jnp.asarray(filters, jnp.float32)  # [B, F, n_mels]
    log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
    peak = jnp.max(log_spec, axis=(1, 2), keepdims=True)
    log_spec = jnp.maximum(log_spec, peak - 8.0)
    return ((log_spec + 4.0) / 4.0).transpose(0, 2, 1)
