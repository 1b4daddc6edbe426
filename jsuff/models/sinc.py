"""Fixed mel-spaced sinc band-pass filters: the raw-waveform front end of AASIST and RawNet2.

Both clovaai/aasist models (``models/AASIST.py`` ``CONV`` and ``models/RawNet2Spoof.py``
``SincConv``) open with the same non-learned filter bank: ``out_channels`` band-pass FIR filters
whose band edges are equally spaced on the mel scale between 0 Hz and Nyquist, each the difference
of two ideal low-pass sinc responses, shaped by a Hamming window. The filters are *computed from the
config, never stored* in the checkpoint, so jsuff computes them here (once per configuration, with
NumPy, at trace time) and they never appear in a model's parameters.

The arithmetic follows the reference on purpose, dtype by dtype, so that the filters match the
PyTorch ones to the last bit or so:

* the band edges: mel values of a 257-point frequency grid (an ``NFFT = 512`` grid from 0 to
  ``sample_rate // 2``), ``out_channels + 1`` points equally spaced between the smallest and the
  largest mel value, mapped back to Hz (float64);
* the support ``n = -(K-1)/2 ... (K-1)/2`` is float32 (``torch.arange``), and the sinc argument
  ``2 f n / sr`` is formed in float32 (a torch tensor times a float64 scalar stays float32), as is
  ``np.sinc`` of it;
* the ideal response ``(2 f_hi / sr) sinc(...) - (2 f_lo / sr) sinc(...)`` is float64 (NumPy scalar
  times float32 array), then rounded to float32 and multiplied by a float32 Hamming window.

An even ``kernel_size`` is bumped to the next odd number (the reference does so to make the filters
symmetric): ``first_conv = 128`` gives 129 taps.

Example:
    >>> import jax.numpy as jnp
    >>> f = mel_sinc_filters(70, 128, 16000)
    >>> f.shape
    (129, 70)
    >>> sinc_conv(jnp.zeros((2, 1000)), f).shape
    (2, 872, 70)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jsuff.models.logmel import hz_to_mel, mel_to_hz

__all__ = ["mel_band_edges", "mel_sinc_filters", "odd_kernel_size", "sinc_conv"]

# The reference derives the band edges from the bins of a 512-point FFT grid.
_NFFT = 512


def odd_kernel_size(kernel_size: int) -> int:
    """The number of taps actually used: ``kernel_size`` bumped to odd, as in the reference."""
    return kernel_size + 1 if kernel_size % 2 == 0 else kernel_size


def mel_band_edges(out_channels: int, sample_rate: int) -> np.ndarray:
    """``out_channels + 1`` band edges in Hz, equally spaced in mel from 0 Hz to Nyquist (float64)."""
    grid = int(sample_rate / 2) * np.linspace(0.0, 1.0, _NFFT // 2 + 1)
    mel = hz_to_mel(grid, "htk")
    return mel_to_hz(np.linspace(mel.min(), mel.max(), out_channels + 1), "htk")


@functools.lru_cache(maxsize=16)
def _filters_cached(out_channels: int, kernel_size: int, sample_rate: int) -> np.ndarray:
    k = odd_kernel_size(kernel_size)
    half = (k - 1) / 2
    support = np.arange(-half, half + 1, dtype=np.float32)
    window = np.hamming(k).astype(np.float32)
    edges = mel_band_edges(out_channels, sample_rate)
    sr32 = np.float32(sample_rate)

    def lowpass(f: np.float64) -> np.ndarray:
        # float32 argument and sinc (as in the torch/NumPy mix of the reference), float64 gain.
        arg = (np.float32(2.0 * f) * support) / sr32
        return (2.0 * f / sample_rate) * np.sinc(arg).astype(np.float64)

    bank = np.empty((out_channels, k), np.float32)
    for i in range(out_channels):
        ideal = lowpass(edges[i + 1]) - lowpass(edges[i])
        bank[i] = window * ideal.astype(np.float32)
    out = np.ascontiguousarray(bank.T)  # (K, out): the conv kernel layout (width, in=1 folded, out)
    out.flags.writeable = False
    return out


def mel_sinc_filters(out_channels: int, kernel_size: int, sample_rate: int = 16000) -> np.ndarray:
    """The fixed sinc filter bank as a read-only float32 array ``[taps, out_channels]``.

    Args:
        out_channels: number of band-pass filters (AASIST ``filts[0]``, RawNet2 ``filts[0]``).
        kernel_size: the configured ``first_conv``; even sizes get one more tap.
        sample_rate: the rate the band edges refer to (16 kHz for every published model).

    Example:
        >>> mel_sinc_filters(20, 1024).shape
        (1025, 20)
    """
    if out_channels <= 0 or kernel_size <= 0 or sample_rate <= 0:
        raise ValueError(
            f"sinc filters need positive sizes, got out_channels={out_channels}, "
            f"kernel_size={kernel_size}, sample_rate={sample_rate}"
        )
    return _filters_cached(int(out_channels), int(kernel_size), int(sample_rate))


def sinc_conv(waveforms: jax.Array, filters: np.ndarray) -> jax.Array:
    """Valid (unpadded) cross-correlation of ``waveforms[B, T]`` with ``filters[K, F]``.

    Returns ``[B, T - K + 1, F]`` (channels last), like ``F.conv1d(x[:, None], w, padding=0)``
    transposed.

    Example:
        >>> sinc_conv(jnp.ones((1, 10)), np.ones((3, 2), np.float32))[0, 0].tolist()
        [3.0, 3.0]
    """
    if waveforms.ndim != 2:
        raise ValueError(f"sinc_conv expects waveforms[B, T], got shape {waveforms.shape}")
    k = filters.shape[0]
    if waveforms.shape[1] < k:
        raise ValueError(f"clip of {waveforms.shape[1]} samples is shorter than the {k}-tap sinc filters")
    kernel = jnp.asarray(filters, waveforms.dtype)[:, None, :]  # (K, I=1, O)
    return jax.lax.conv_general_dilated(
        waveforms[:, :, None],
        kernel,
        window_strides=(1,),
        padding="VALID",
        dimension_numbers=("NWC", "WIO", "NWC"),
    )
