r"""A generated five-class "music-like" task whose classes live in different places.

The built-in demo must run offline in minutes, so jsuff makes its own data: one-second, 16 kHz mono
clips from five classes whose *distinguishing* evidence sits in different parts of the signal, so
that models with different front ends (mel spectrogram, raw waveform, patch transformer, conv
feature encoder) can learn different cues, and their minimal sufficient signals can differ.

Everything is pure NumPy and deterministic: clip ``i`` of class ``c`` in split ``s`` is drawn from
``np.random.default_rng([seed, s, c, i])``, so a clip does not depend on how many others are made,
and the train, validation and test splits never share a random stream.

Generative recipe
-----------------
Notation: ``U(a, b)`` uniform, ``LU(a, b)`` log-uniform, levels in dB are amplitude ratios
(``20 log10``), ``t`` in seconds, ``sr`` the sample rate, ``D`` the duration.

Building blocks:

* *note(f0, tilt)*: a harmonic tone ``sum_k a_k sin(2 pi k f0 t + phi_k)`` over every harmonic
  ``k f0 < min(7 kHz, 0.45 sr)`` with ``a_k = k ** -tilt`` (harmonics more than 60 dB down are
  dropped), each ``a_k`` jittered by ``N(0, 1.5)`` dB, ``phi_k ~ U(0, 2 pi)`` (synthesised from an
  8192-point one-period wavetable, within -65 dB of the exact sum).
  *Mid register*: ``f0 ~ LU(160, 440)`` Hz (E3 to A4). *Dull timbre*: ``tilt ~ U(1.5, 2.2)``.
* *sustained envelope* (from the onset ``t0``): a raised-cosine attack of ``U(10, 80)`` ms, then
  ``exp(-(t - t0) / tau)`` with ``tau ~ U(0.5, 3)`` s, times a slow tremolo
  ``1 + d sin(2 pi r t + phi)`` with ``d ~ U(0, 0.15)``, ``r ~ U(0.5, 2)`` Hz. Zero before ``t0``.
* *pulse envelope*: hits at ``t0 + n / rate`` with ``rate ~ U(3, 7)`` Hz (180 to 420 per minute),
  each a 5 ms linear attack and an ``exp(-t / U(20, 60) ms)`` decay, accent ``U(0.6, 1)`` per hit,
  on a sustained floor of ``U(0, 0.15)``.
* *band noise(fc, bw)*: white Gaussian noise shaped in the rfft domain by a band around
  ``fc ~ LU(1.5, 5)`` kHz, ``bw ~ U(1/3, 1)`` octave wide, with raised-cosine skirts a third of an
  octave wide on each side.

The five classes (each *event* is normalised to unit RMS):

=====  ==========  ==============================  =================================================
index  name        where the evidence is           event
=====  ==========  ==============================  =================================================
0      ``pulse``   rhythm and tempo (envelope)     mid dull note x pulse envelope
1      ``bright``  timbre (spectral tilt)          mid note, ``tilt ~ U(0.2, 0.7)``, sustained
2      ``low``     pitch register                  dull note, ``f0 ~ LU(50, 100)`` Hz, sustained
3      ``chord``   harmony (intervals)             major (0, 4, 7) or minor (0, 3, 7) triad
                                                   (semitones) on a mid root, dull notes sharing
                                                   one tilt, each at unit RMS times a gain of
                                                   ``U(-2, 2)`` dB, sustained
4      ``hiss``    noise texture (band noise)      band noise, sustained, plus a mid dull note
                                                   ``U(-12, -6)`` dB below it, sustained
=====  ==========  ==============================  =================================================

Shared nuisance, the same for every class:

1. onset ``t0 ~ U(0, 0.25 D)``; before it the clip holds only the background;
2. random pitch within the ranges above, random timbre jitter, random envelope shape;
3. with probability 1/2 a *distractor*: the event of another class (uniform over the four others,
   drawn with its own parameters and onset) at ``U(-24, -12)`` dB relative to the event;
4. background pink noise (power ``~ 1/f`` above 20 Hz, flat below) at an SNR of ``U(10, 30)`` dB
   below the event plus distractor;
5. a random gain: the mixture's RMS is set to ``U(-32, -14)`` dBFS, then scaled down further only
   if its peak would exceed 0.99.

Example:
    >>> ds = make_dataset(seed=0, n_per_class=(4, 1, 1))
    >>> ds.waveforms.shape, ds.class_names[:2]
    ((30, 16000), ('pulse', 'bright'))
    >>> ds.subset("train").labels.shape
    (20,)
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "Dataset",
    "DatasetError",
    "MANIFEST",
    "SPLITS",
    "make_clip",
    "make_dataset",
    "read_dataset",
    "write_dataset",
]

CLASS_NAMES: tuple[str, ...] = ("pulse", "bright", "low", "chord", "hiss")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "manifest.csv"

_MID = (160.0, 440.0)
_LOW = (50.0, 100.0)
_DULL = (1.5, 2.2)
_BRIGHT = (0.2, 0.7)
_MAX_PARTIAL_HZ = 7000.0
_TRIADS = ((0, 4, 7), (0, 3, 7))
_TABLE = 8192


class DatasetError(ValueError):
    """Bad arguments to the generator or an unreadable dataset folder; the message says why."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Clips with labels and a split assignment.

    Attributes:
        waveforms: ``[N, T]`` float32 mono clips.
        labels: ``[N]`` int32 class indices into ``class_names``.
        split: ``[N]`` int8 indices into ``SPLITS`` (0 train, 1 val, 2 test).
        class_names: the class names, index order.
        sample_rate: samples per second.
        seed: the generator seed (``None`` for data read from disk).
    """

    waveforms: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: tuple[str, ...]
    sample_rate: int
    seed: int | None = None

    def __post_init__(self) -> None:
        n = self.waveforms.shape[0]
        if self.waveforms.ndim != 2 or self.labels.shape != (n,) or self.split.shape != (n,):
            raise DatasetError(
                f"waveforms must be [N, T] with labels and split [N]; got {self.waveforms.shape}, "
                f"{self.labels.shape}, {self.split.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, split: str) -> Dataset:
        """The clips of one split (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
        keep = self.split == SPLITS.index(split)
        return dataclasses.replace(
            self, waveforms=self.waveforms[keep], labels=self.labels[keep], split=self.split[keep]
        )


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _db(x: float) -> float:
    return float(10.0 ** (x / 20.0))


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _note(rng: np.random.Generator, f0: float, tilt: float, n: int, sr: int) -> np.ndarray:
    top = min(_MAX_PARTIAL_HZ, 0.45 * sr)
    k_audible = 1000.0 ** (1.0 / tilt)  # a_k = k**-tilt falls 60 dB by this harmonic
    k = np.arange(1, int(min(top / f0, k_audible)) + 1)
    amp = k**-tilt * 10.0 ** (rng.normal(0.0, 1.5, k.size) / 20.0)
    phase = rng.uniform(0.0, 2.0 * np.pi, k.size)
    # One period as a wavetable (irfft of the partials), read at phase f0 t with linear
    # interpolation: O(T) per note instead of O(K T) sines. With 8192 points the interpolation
    # error of the highest partial (k <= 140) is below -65 dB.
    spec = np.zeros(_TABLE // 2 + 1, np.complex128)
    spec[k] = (_TABLE / 2.0) * amp * -1j * np.exp(1j * phase)
    table = np.fft.irfft(spec, n=_TABLE)
    pos = np.mod(np.arange(n) * (f0 / sr), 1.0) * _TABLE
    i = pos.astype(np.int64)
    frac = pos - i
    return table[i] * (1.0 - frac) + table[(i + 1) % _TABLE] * frac


def _sustained(rng: np.random.Generator, t: np.ndarray, t0: float) -> np.ndarray:
    attack = rng.uniform(0.01, 0.08)
    tau = rng.uniform(0.5, 3.0)
    depth, rate, ph = rng.uniform(0.0, 0.15), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
    rel = t - t0
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(rel / attack, 0.0, 1.0))
    env = rise * np.exp(-np.maximum(rel, 0.0) / tau) * (1.0 + depth * np.sin(2 * np.pi * rate * t + ph))
    return np.where(rel >= 0.0, env, 0.0)


def _pulses(rng: np.random.Generator, t: np.ndarray, t0: float) -> np.ndarray:
    rate = rng.uniform(3.0, 7.0)
    decay = rng.uniform(0.02, 0.06)
    floor = rng.uniform(0.0, 0.15)
    hits = t0 + np.arange(int(np.ceil((t[-1] - t0) * rate)) + 1) / rate
    accents = rng.uniform(0.6, 1.0, hits.size)
    rel = t[None, :] - hits[:, None]
    shape = np.clip(rel / 0.005, 0.0, 1.0) * np.exp(-np.maximum(rel - 0.005, 0.0) / decay)
    env = accents @ np.where(rel >= 0.0, shape, 0.0)
    return floor * _sustained(rng, t, t0) + (1.0 - floor) * env


def _band_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    fc = _loguniform(rng, 1500.0, 5000.0)
    half = rng.uniform(1.0 / 3.0, 1.0) / 2.0  # half the bandwidth, in octaves
    skirt = 1.0 / 3.0
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    dist = np.abs(np.log2(np.maximum(freqs, 1.0) / fc))  # octaves from the centre
    gain = 0.5 + 0.5 * np.cos(np.pi * np.clip((dist - half) / skirt, 0.0, 1.0))
    spec = np.fft.rfft(rng.standard_normal(n)) * gain
    return np.fft.irfft(spec, n=n)


def _pink(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(freqs, 20.0))
    return np.fft.irfft(spec, n=n)


def _mid_dull(rng: np.random.Generator, n: int, sr: int, ratio: float = 1.0) -> np.ndarray:
    return _note(rng, _loguniform(rng, *_MID) * ratio, rng.uniform(*_DULL), n, sr)


def _event(cls: int, rng: np.random.Generator, n: int, sr: int, duration: float) -> np.ndarray:
    """One class's sound at unit RMS, with its own onset (see the module docstring)."""
    t = np.arange(n) / sr
    t0 = rng.uniform(0.0, 0.25 * duration)
    name = CLASS_NAMES[cls]
    if name == "pulse":
        x = _mid_dull(rng, n, sr) * _pulses(rng, t, t0)
    elif name == "bright":
        f0 = _loguniform(rng, *_MID)
        x = _note(rng, f0, rng.uniform(*_BRIGHT), n, sr) * _sustained(rng, t, t0)
    elif name == "low":
        f0 = _loguniform(rng, *_LOW)
        x = _note(rng, f0, rng.uniform(*_DULL), n, sr) * _sustained(rng, t, t0)
    elif name == "chord":
        root = _loguniform(rng, *_MID)
        tilt = rng.uniform(*_DULL)
        triad = _TRIADS[rng.integers(len(_TRIADS))]
        x = sum(
            _db(rng.uniform(-2.0, 2.0)) * _unit_rms(_note(rng, root * 2.0 ** (s / 12.0), tilt, n, sr))
            for s in triad
        ) * _sustained(rng, t, t0)
    else:  # hiss
        env = _sustained(rng, t, t0)
        note = _db(rng.uniform(-12.0, -6.0)) * _unit_rms(_mid_dull(rng, n, sr))
        x = (_unit_rms(_band_noise(rng, n, sr)) + note) * env
    return _unit_rms(x)


# ----------------------------------------------------------------------------------------------
# Clips and datasets
# ----------------------------------------------------------------------------------------------


def _class_index(cls: int | str) -> int:
    if isinstance(cls, str):
        if cls not in CLASS_NAMES:
            raise DatasetError(f"unknown class {cls!r}; expected one of {CLASS_NAMES}")
        return CLASS_NAMES.index(cls)
    if not 0 <= int(cls) < len(CLASS_NAMES):
        raise DatasetError(f"class index {cls} out of range 0..{len(CLASS_NAMES) - 1}")
    return int(cls)


def make_clip(
    cls: int | str, rng: np.random.Generator, *, sample_rate: int = 16000, duration: float = 1.0
) -> np.ndarray:
    """One clip of class ``cls`` (index or name) with all the shared nuisance.

    Args:
        cls: class index or name from :data:`CLASS_NAMES`.
        rng: the NumPy generator to draw from (consumed).
        sample_rate: samples per second, at least 8 kHz (partials stop at ``0.45 sr``; below
            16 kHz the top of the noise bands is cut by Nyquist).
        duration: seconds.

    Returns:
        ``[round(duration * sample_rate)]`` float32 waveform, peak at most 0.99.

    Example:
        >>> x = make_clip("chord", np.random.default_rng(0))
        >>> x.shape, x.dtype
        ((16000,), dtype('float32'))
    """
    c = _class_index(cls)
    if sample_rate < 8000 or duration <= 0.1:
        raise DatasetError(
            f"need sample_rate >= 8000 and duration > 0.1 s, got {sample_rate} Hz and {duration} s"
        )
    n = int(round(duration * sample_rate))
    mix = _event(c, rng, n, sample_rate, duration)
    if rng.uniform() < 0.5:
        other = int(rng.choice([k for k in range(len(CLASS_NAMES)) if k != c]))
        mix = mix + _db(rng.uniform(-24.0, -12.0)) * _event(other, rng, n, sample_rate, duration)
    snr = rng.uniform(10.0, 30.0)
    mix = mix + _db(-snr) * np.sqrt(np.mean(mix * mix)) * _unit_rms(_pink(rng, n, sample_rate))
    mix = _db(rng.uniform(-32.0, -14.0)) * _unit_rms(mix)
    peak = float(np.max(np.abs(mix)))
    if peak > 0.99:
        mix = mix * (0.99 / peak)
    return mix.astype(np.float32)


def _split_counts(n_per_class: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(n_per_class, int | np.integer):
        n = int(n_per_class)
        counts = (n - 2 * (n // 6), n // 6, n // 6)  # 4 : 1 : 1
    else:
        counts = tuple(int(k) for k in n_per_class)
    if len(counts) != 3 or min(counts) < 0 or counts[0] < 1:
        raise DatasetError(
            f"n_per_class must be an int or (train, val, test) counts with train >= 1; got {n_per_class!r}"
        )
    return counts  # type: ignore[return-value]


def make_dataset(
    seed: int = 0,
    n_per_class: int | Sequence[int] = (80, 20, 20),
    *,
    sample_rate: int = 16000,
    duration: float = 1.0,
) -> Dataset:
    """The generated task: every class in every split, deterministic from ``seed``.

    Args:
        seed: the dataset seed (non-negative).
        n_per_class: clips per class as ``(train, val, test)``, or one total split 4 : 1 : 1.
        sample_rate: samples per second.
        duration: seconds per clip.

    Returns:
        A :class:`Dataset` ordered by split, then clip index, then class (classes interleave).

    Example:
        >>> ds = make_dataset(seed=1, n_per_class=(2, 1, 1))
        >>> np.bincount(ds.labels).tolist(), np.bincount(ds.split).tolist()
        ([4, 4, 4, 4, 4], [10, 5, 5])
    """
    if int(seed) < 0:
        raise DatasetError(f"seed must be non-negative, got {seed}")
    counts = _split_counts(n_per_class)
    waves, labels, splits = [], [], []
    for s, count in enumerate(counts):
        for i in range(count):
            for c in range(len(CLASS_NAMES)):
                rng = np.random.default_rng([int(seed), s, c, i])
                waves.append(make_clip(c, rng, sample_rate=sample_rate, duration=duration))
                labels.append(c)
                splits.append(s)
    n = int(round(duration * sample_rate))
    return Dataset(
        waveforms=np.stack(waves) if waves else np.zeros((0, n), np.float32),
        labels=np.asarray(labels, np.int32),
        split=np.asarray(splits, np.int8),
        class_names=CLASS_NAMES,
        sample_rate=int(sample_rate),
        seed=int(seed),
    )


# ----------------------------------------------------------------------------------------------
# On disk: the GTZAN layout
# ----------------------------------------------------------------------------------------------


def write_dataset(
    directory: str | os.PathLike, dataset: Dataset, *, subtype: str = "PCM_16"
) -> Path:
    """Write ``dataset`` as WAV files in the GTZAN layout plus ``manifest.csv``.

    Layout: ``<directory>/<class>/<class>.<NNNNN>.wav`` (numbered per class, in dataset order) and
    ``<directory>/manifest.csv`` with columns ``path`` (relative, POSIX), ``label`` (class name) and
    ``split``. ``subtype`` is a soundfile subtype; the 16-bit default quantises by at most 2**-16.

    Example:
        >>> import tempfile
        >>> root = write_dataset(tempfile.mkdtemp(), make_dataset(n_per_class=(1, 0, 0)))
        >>> sorted(p.name for p in root.iterdir())[:2]
        ['bright', 'chord']
    """
    import soundfile as sf

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    counters = dict.fromkeys(dataset.class_names, 0)
    rows = []
    for wave, label, split in zip(dataset.waveforms, dataset.labels, dataset.split, strict=True):
        name = dataset.class_names[int(label)]
        rel = f"{name}/{name}.{counters[name]:05d}.wav"
        counters[name] += 1
        (root / name).mkdir(exist_ok=True)
        sf.write(root / rel, wave, dataset.sample_rate, subtype=subtype)
        rows.append((rel, name, SPLITS[int(split)]))
    with open(root / MANIFEST, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "label", "split"))
        writer.writerows(rows)
    return root


def read_dataset(directory: str | os.PathLike, class_names: Sequence[str] = CLASS_NAMES) -> Dataset:
    """Read a folder written by :func:`write_dataset` back into a :class:`Dataset`.

    Raises:
        DatasetError: no manifest, an unknown label or split, a missing file, or clips whose
            sample rates or lengths differ.
    """
    import soundfile as sf

    root = Path(directory)
    if not (root / MANIFEST).is_file():
        raise DatasetError(f"{root} has no {MANIFEST}")
    with open(root / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    waves, labels, splits, rates = [], [], [], set()
    for row in rows:
        if row.get("label") not in class_names or row.get("split") not in SPLITS:
            raise DatasetError(f"{root / MANIFEST}: bad row {row} (labels {tuple(class_names)})")
        path = root / row["path"]
        if not path.is_file():
            raise DatasetError(f"{root / MANIFEST} names {row['path']}, which does not exist")
        wave, rate = sf.read(path, dtype="float32", always_2d=False)
        waves.append(wave)
        rates.add(int(rate))
        labels.append(list(class_names).index(row["label"]))
        splits.append(SPLITS.index(row["split"]))
    if len(rates) > 1 or len({w.shape for w in waves}) > 1:
        raise DatasetError(f"{root}: clips differ in sample rate or length")
    return Dataset(
        waveforms=np.stack(waves),
        labels=np.asarray(labels, np.int32),
        split=np.asarray(splits, np.int8),
        class_names=tuple(class_names),
        sample_rate=rates.pop(),
    )
