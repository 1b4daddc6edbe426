"""Audio in and out: files to float32 mono arrays at a chosen rate, with one clear error type.

Everything that reads or checks audio raises :class:`AudioError` (a ``ValueError``) whose message
names the file or array and the problem: missing, unreadable (permissions), empty, truncated,
undecodable, zero-length, non-finite.

* :func:`load_audio` reads wav/flac/ogg/mp3 with ``soundfile`` (integer PCM is scaled to [-1, 1)
  by the decoder), downmixes to mono by averaging channels and resamples on request. A WAV file
  whose data chunk is shorter than its header declares (a cut-short copy or download) is refused:
  libsndfile would silently return the samples that are there, and a study would analyse a clip
  that is not the recording.
* :func:`validate_waveform` checks an in-memory array the same way and returns it as float32.
* :func:`resample` changes the rate along the last axis (``soxr``, librosa's resampler, called
  directly: importing librosa costs seconds).
* :func:`write_wav` writes float32 WAV, so a sufficient signal round-trips without clipping.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
    >>> _ = write_wav(path, np.sin(np.arange(800, dtype=np.float32) / 5), 8000)
    >>> x, sr = load_audio(path, sample_rate=16000)
    >>> x.dtype, x.shape, sr
    (dtype('float32'), (1600,), 16000)
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np

from jsuff._files import atomic_write

__all__ = ["AudioError", "load_audio", "resample", "validate_waveform", "write_wav"]


class AudioError(ValueError):
    """Audio that jsuff cannot use; the message names the file or array and the problem."""


def _is_path(x: object) -> bool:
    """A file name given where samples go: a string, bytes, a path, or a list/array of strings."""
    if isinstance(x, (str, bytes, os.PathLike)):
        return True
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (str, bytes, os.PathLike)) for v in x):
        return True
    return isinstance(x, np.ndarray) and x.dtype.kind in "USO" and x.size > 0 and isinstance(
        x.reshape(-1)[0], (str, bytes, os.PathLike))


def _finite_or_raise(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        kinds = [k for k, hit in (("NaN", np.isnan(x).any()), ("Inf", np.isinf(x).any())) if hit]
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AudioError(
            f"{name} contains non-finite values ({' and '.join(kinds)}; {int(bad.sum())} of "
            f"{x.size} samples, first at index {first if len(first) > 1 else first[0]})"
        )


def validate_waveform(x: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Check a waveform (``[T]`` or ``[B, T]``) and return it as contiguous float32.

    Integer arrays are read as PCM and scaled to [-1, 1) (``uint8`` is offset-binary, as in WAV).

    Args:
        x: the samples; anything ``np.asarray`` accepts (JAX arrays included).
        name: what to call it in error messages (a file name, ``"clip 3"``...).

    Returns:
        ``np.float32`` array of the same shape.

    Raises:
        AudioError: not numeric (a file path is named as one, with the way to read it), not 1-D
            or 2-D, zero-length, or with NaN/Inf samples.

    Example:
        >>> validate_waveform(np.array([0, 16384, -32768], dtype=np.int16)).tolist()
        [0.0, 0.5, -1.0]
        >>> validate_waveform("clip.wav")
        Traceback (most recent call last):
        ...
        jsuff.audio.AudioError: waveform is a file path ('clip.wav'), not samples: read it with jsuff.load_audio(path, sample_rate=<the model's rate>), or pass a jsuff.Model, which reads files at its own rate
    """
    if _is_path(x):
        first = x if isinstance(x, (str, bytes, os.PathLike)) else np.asarray(x, dtype=object).reshape(-1)[0]
        more = "" if first is x else f" and {np.size(x) - 1} more" if np.size(x) > 1 else ""
        raise AudioError(
            f"{name} is a file path ({os.fsdecode(first)!r:.200}{more}), not samples: read it with "
            "jsuff.load_audio(path, sample_rate=<the model's rate>), or pass a jsuff.Model, which reads "
            "files at its own rate"
        )
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise AudioError(f"{name} is not an array of samples: {e}") from None
    if a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1))
    elif not np.issubdtype(a.dtype, np.floating):
        raise AudioError(f"{name} has dtype {a.dtype}; expected real floating-point or integer PCM samples")
    if a.ndim not in (1, 2):
        raise AudioError(f"{name} has shape {a.shape}; expected [T] (one clip) or [B, T] (a batch)")
    if a.shape[-1] == 0 or a.size == 0:
        raise AudioError(f"{name} is zero-length (shape {a.shape})")
    a = np.ascontiguousarray(a, dtype=np.float32)
    _finite_or_raise(a, name)
    return a


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality, librosa's ``soxr_hq``); float32 out.

    Example:
        >>> resample(np.zeros(16000, np.float32), 16000, 8000).shape
        (8000,)
    """
    import soxr

    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    a = np.asarray(x, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return a
    if a.ndim not in (1, 2):
        raise AudioError(f"resample takes [T] or [B, T], got shape {a.shape}")
    # soxr wants time first ([T] or [T, channels]); rows of a batch are channels to it
    y = soxr.resample(a.T, int(sr_in), int(sr_out), quality="HQ").T
    return np.ascontiguousarray(y, dtype=np.float32)


def _wav_shortfall(f, size: int) -> str | None:
    """Why a RIFF/RIFX/RF64 WAV file is truncated (its data chunk runs past the end), else ``None``.

    Other formats, and WAVs whose data size is a streaming placeholder (0 or 0xFFFFFFFF), give
    ``None``: libsndfile judges those.
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return None
    endian = ">" if head[:4] == b"RIFX" else "<"
    pos, block_align, ds64_size = 12, 0, None
    while pos + 8 <= size:
        f.seek(pos)
        cid, csize = struct.unpack(endian + "4sI", f.read(8))
        body = f.read(16)  # the start of the chunk; shorter at the end of the file
        if cid == b"ds64" and len(body) == 16:  # RF64: the real sizes are 64-bit, here
            ds64_size = struct.unpack("<QQ", body)[1]
        elif cid == b"fmt " and len(body) >= 14:
            block_align = struct.unpack(endian + "HHIIH", body[:14])[4]
        elif cid == b"data":
            declared = ds64_size if (head[:4] == b"RF64" and csize == 0xFFFFFFFF and ds64_size) else csize
            present = size - (pos + 8)
            if declared in (0, 0xFFFFFFFF) or declared <= present:
                return None
            if block_align:
                return (
                    f"its header declares {declared // block_align} frames ({declared} bytes) of audio but the "
                    f"file holds only {present // block_align}"
                )
            return f"its header declares {declared} bytes of audio but the file holds only {present}"
        pos += 8 + csize + (csize & 1)  # chunks are padded to an even size
    return None


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 mono, resampled to ``sample_rate`` when given.

    Args:
        path: a wav, flac, ogg or mp3 file (anything libsndfile decodes).
        sample_rate: the rate wanted; ``None`` keeps the file's.

    Returns:
        ``(waveform[T], rate)``.

    Raises:
        AudioError: the file is missing, unreadable, empty, truncated (a WAV whose data chunk is
            shorter than its header says), cannot be decoded, has no samples or has non-finite
            samples. The message names the file.

    Example:
        >>> try:
        ...     load_audio("/no/such.wav")
        ... except AudioError as e:
        ...     print(e)
        /no/such.wav: file not found
    """
    import soundfile as sf

    p = Path(path)
    try:
        info = p.stat()
        if not stat.S_ISREG(info.st_mode):
            raise AudioError(f"{p}: not a regular file")
        if info.st_size == 0:
            raise AudioError(f"{p}: file is empty (0 bytes)")
        with open(p, "rb") as f:  # opened here so that an unreadable file is reported as such
            short = _wav_shortfall(f, info.st_size)
    except FileNotFoundError:
        raise AudioError(f"{p}: file not found") from None
    except PermissionError:
        raise AudioError(f"{p}: permission denied (this user may not read the file or a folder above it)") from None
    except OSError as e:
        raise AudioError(f"{p}: cannot read the file ({e.strerror or e})") from None
    if short is not None:
        raise AudioError(f"{p}: truncated WAV file: {short}; the file was cut short (re-copy or re-export it)")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports many kinds of failure; the user needs the reason
        raise AudioError(f"{p}: cannot decode audio ({type(e).__name__}: {e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{p}: decodes to zero samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    mono = validate_waveform(mono, name=str(p))
    if sample_rate is not None and int(sample_rate) != int(sr):
        mono = resample(mono, int(sr), int(sample_rate))
        sr = int(sample_rate)
    return mono, int(sr)


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int) -> Path:
    """Write a mono (``[T]``) or multi-channel (``[T, ch]``) float32 WAV file; returns the path.

    Float WAV keeps the exact samples (a sufficient signal may exceed [-1, 1]). The file is written
    atomically (:func:`jsuff._files.atomic_write`; a failure raises ``WriteError`` naming it).
    """
    import soundfile as sf

    a = np.asarray(x, dtype=np.float32)
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise AudioError(f"cannot write {path}: expected a non-empty [T] or [T, ch] array, got {a.shape}")
    _finite_or_raise(a, f"audio for {path}")
    p = Path(path)
    # atomically: a full disk or a kill leaves the old file or none, never half a WAV
    atomic_write(p, lambda f: sf.write(f, a, int(sr), subtype="FLOAT", format="WAV"))
    return p
