"""Real recorded music for genre studies: excerpts of free soundtracks that Debian packages ship.

:func:`build_excerpts` cuts short excerpts from the music files of installed Debian packages
(OGG Vorbis, OGG Opus and MP3, decoded by libsndfile), mixes them to mono, resamples them to
16 kHz, normalises their level for the musicnn taggers (below) and writes them with a manifest::

    OUT/manifest.csv          one row per excerpt: path,label,package,version,licence,source,...
    OUT/clips/*.wav           float32 WAV, 16 kHz mono
    OUT/licences/<pkg>.txt    each package's /usr/share/doc/<pkg>/copyright, for attribution

The manifest's ``path`` and ``label`` columns are what a study reads (``[data] path =
"OUT/manifest.csv"``). :data:`SOURCES` is the recipe: which packages, which of their files, the
licence and the genre label of each (``None`` where none can honestly be given), and how that label
was assigned. Labels are per package, never per excerpt or from any model's output.

**Level rule.** The musicnn package casts its mel energies to float16 before ``log10(10000 x + 1)``,
so an energy above about 6.55 becomes ``+inf`` and both musicnn models return one constant logit
vector for the patch (docs/real_models.md). Ordinary mastered music overflows: at -20 dBFS RMS the
soundtracks here have a :func:`jsuff.models.musicnn.headroom` of 0.3 to 0.8. All four taggers
share that front end, so one rule covers them: every excerpt is scaled so that its headroom is
exactly ``margin`` (default 1.25: its largest mel energy is 1/1.56 of the overflow point), and
scaled down further if its sample peak would exceed 0.99. The margin is for the signals a study
derives from the excerpt: keeping a subset of rfft bins raised the largest mel energy by at most
1.08x for unions of contiguous boxes (what the search keeps) and 1.40x for random scattered bins
(docs/music_study.md). The written file is read back and checked (:func:`check_excerpt`): finite
log-mel everywhere and headroom at least ``margin``. The RMS levels come out at -24 to -31 dBFS;
the manifest records each excerpt's gain, RMS level, peak and headroom.

**Excerpts.** Per genre, ``per_genre`` excerpts are taken round-robin over the tracks of that
genre's packages (sorted by package and path, visited in bisection order: middle, quarters, ...),
at offsets spread evenly over the middle 80% of each track (intros and fades are skipped), never
overlapping, again in bisection order; an excerpt quieter than -50 dBFS RMS before normalisation
is skipped for the track's next offset. Everything is deterministic: the same installed packages give
the same excerpts. Frets on Fire songs are stored as stems (``song.ogg`` plus ``guitar.ogg`` and
sometimes ``rhythm.ogg``), which the game plays together; they are summed before the mix to mono.

Command line (the ``jsuff`` CLI will wrap these)::

    python -m jsuff.app.musicdata sources                 # the recipe, what is installed, apt-get line
    python -m jsuff.app.musicdata build OUT [--per-genre 10] [--seconds 3.2] [--packages a,b]
    python -m jsuff.app.musicdata check OUT --model MTT_musicnn=models/mtt_musicnn ...

``check`` runs converted models on the excerpts through :func:`genre_view` and prints each
model's accuracy against the manifest's labels and its confusion matrix.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import functools
import io
import json
import math
import re
import shutil
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jsuff._files import write_text
from jsuff.audio import AudioError, load_audio, resample, write_wav
from jsuff.labels import LabelView, resolve_views

__all__ = [
    "DEFAULT_PACKAGES",
    "DOC_ROOT",
    "DPKG_ROOT",
    "GENRE_CLASSES",
    "GENRE_MODELS",
    "GENRE_TAGS",
    "GenreCheck",
    "MANIFEST_FIELDS",
    "MusicDataError",
    "PEAK_LIMIT",
    "SAMPLE_RATE",
    "SILENCE_DBFS",
    "SOURCES",
    "Source",
    "Track",
    "build_excerpts",
    "check_excerpt",
    "check_models",
    "describe_sources",
    "find_tracks",
    "genre_view",
    "genre_view_toml",
    "installed_packages",
    "main",
    "normalise",
    "package_files",
    "plan_offsets",
    "read_excerpt",
    "read_manifest",
    "rms_dbfs",
]

SAMPLE_RATE = 16000
DPKG_ROOT = Path("/var/lib/dpkg")
DOC_ROOT = Path("/usr/share/doc")
SILENCE_DBFS = -50.0
PEAK_LIMIT = 0.99
MANIFEST_FIELDS = (
    "path", "label", "package", "version", "licence", "source", "offset_s", "duration_s",
    "gain", "rms_dbfs", "peak", "headroom", "label_basis",
)  # fmt: skip


class MusicDataError(ValueError):
    """A package that is missing, has no usable music, or an excerpt that fails its check."""


class _TooShort(MusicDataError):
    """A track that ends before the excerpt does (its header overstated its length)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One Debian package of the recipe.

    Attributes:
        package: the Debian package name.
        licence: SPDX identifier of the music's licence, from the package's copyright file.
        pattern: ``fnmatch`` pattern over the package's installed files: the tracks.
        genre: the label every excerpt of this package gets, or ``None``.
        basis: how that label was assigned (shown in the manifest and the docs).
        stems: names of sibling files mixed into each track when present (Frets on Fire stems).
        size_mb: the .deb's download size (Debian 12), for planning CI.
    """

    package: str
    licence: str
    pattern: str
    genre: str | None
    basis: str
    stems: tuple[str, ...] = ()
    size_mb: float = 0.0


_FOF = "Frets on Fire song pack: each song is a folder of stems (song.ogg + guitar.ogg) played together"
_CHO = (
    "Kenta Cho's shoot-'em-up soundtrack: loop-based, synthesised techno tracks with a steady beat (the "
    "files' comment names Sonic Foundry ACID 3); assigned per package by the recipe, the package states "
    "no genre"
)
SOURCES: tuple[Source, ...] = (
    Source("fretsonfire-songs-muldjord", "CC-BY-SA-3.0", "*/songs/muldjord/*/song.ogg", "metal",
           "every file's own GENRE tag is 'Death Metal'; the copyright file calls Muldjord 'a danish metal "
           "band'. " + _FOF, ("guitar.ogg", "rhythm.ogg"), 29.3),
    Source("fretsonfire-songs-sectoid", "Expat", "*/songs/sectoid/*/song.ogg", "rock",
           "instrumental guitar rock (distorted lead guitar, bass, drums) written for the guitar game; "
           "assigned per package by the recipe, the files carry no genre tag (one title is 'Metal "
           "madness'). " + _FOF, ("guitar.ogg", "rhythm.ogg"), 29.1),
    Source("gunroar-data", "BSD-2-Clause", "*/gunroar/sounds/musics/*.ogg", "electronic", _CHO, size_mb=4.9),
    Source("mu-cade-data", "BSD-2-Clause", "*/mu-cade/sounds/musics/*.ogg", "electronic", _CHO, size_mb=4.9),
    Source("tumiki-fighters-data", "BSD-2-Clause", "*/tumiki-fighters/sounds/*.ogg", "electronic", _CHO,
           size_mb=4.3),
    Source("wesnoth-1.16-music", "GPL-2.0-or-later", "*/wesnoth/*/music/*.ogg", "classical",
           "Battle for Wesnoth's orchestral soundtrack (strings, brass, woodwinds, choir, timpani); "
           "assigned per package by the recipe", size_mb=153.2),
    # Installed on request only (--packages): their style varies from track to track, so no label.
    Source("singularity-music", "CC-BY-SA-3.0", "*/singularity/music/*.ogg", None,
           "made with the Psycle and Renoise trackers (README); tracks range from beat-driven to ambient",
           size_mb=51.6),
    Source("warzone2100-music", "GPL-2.0-or-later", "*/warzone2100/music/albums/*/*.opus", None,
           "the package describes it as 'abstract, atmospheric and post-apocalyptic beats' (OGG Opus)",
           size_mb=85.7),
    Source("hyperrogue-music", "GPL-2.0-or-later", "*/hyperrogue/music/*.ogg", None,
           "several composers and styles", size_mb=63.8),
)
DEFAULT_PACKAGES = tuple(s.package for s in SOURCES if s.genre is not None)

GENRE_CLASSES = ("rock", "metal", "electronic", "ambient", "pop")
# Per tag set, the classes whose tags are not just the tag of the same name (see genre_view).
GENRE_TAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "MTT": {
        "electronic": ("electronic", "techno", "dance"),
        "ambient": ("ambient", "new age"),
    },
    "MSD": {
        "rock": ("rock", "alternative rock", "classic rock", "indie rock", "hard rock", "Progressive rock", "punk"),
        "metal": ("metal", "heavy metal"),
        "electronic": ("electronic", "electronica", "electro", "House", "dance"),
        "ambient": ("ambient", "chillout", "chill"),
        "pop": ("pop", "indie pop"),
    },
}
GENRE_MODELS = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")


def genre_view_toml(models: Sequence[str] = GENRE_MODELS) -> str:
    """The ``[labels]`` TOML of :func:`genre_view` for models named ``<tag set>_...`` (as in a study)."""

    def strings(xs: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(x) for x in xs) + "]"

    parts = [f"[labels]\nclasses = {strings(GENRE_CLASSES)}\n"]
    for m in models:
        tag_set = m.split("_")[0]
        if tag_set not in GENRE_TAGS or not re.fullmatch(r"[A-Za-z0-9_-]+", m):
            raise MusicDataError(
                f"model name {m!r}: the genre view needs names of letters, digits, '_' and '-' that start "
                f"with the tag set, {' or '.join(t + '_' for t in GENRE_TAGS)}"
            )
        table = GENRE_TAGS[tag_set]
        parts.append(f"[labels.map.{m}]\n" + "".join(f"{c} = {strings(t)}\n" for c, t in table.items()))
    return "\n".join(parts)


def genre_view(models: Sequence[str] = GENRE_MODELS) -> LabelView:
    """The five-class genre view over the MTT and MSD tag sets (its TOML: :func:`genre_view_toml`).

    Classes both tag sets can name: ``rock``, ``metal``, ``electronic`` (with techno, dance, house,
    electro), ``ambient`` (with new age, chillout) and ``pop``. MTT's ``classical`` has no MSD
    counterpart, so excerpts labelled ``classical`` have no true label in this view.
    """
    return LabelView.from_toml(tomllib.loads(genre_view_toml(models))["labels"])


# ----------------------------------------------------------------------------------------------
# Installed packages
# ----------------------------------------------------------------------------------------------


def installed_packages(dpkg_root: Path = DPKG_ROOT) -> dict[str, str]:
    """``{package: version}`` of every installed package (``dpkg_root/status``; empty without it)."""
    status = Path(dpkg_root) / "status"
    if not status.is_file():
        return {}
    out = {}
    for para in status.read_text(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, flags=re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out[fields["Package"]] = fields.get("Version", "")
    return out


def package_files(package: str, dpkg_root: Path = DPKG_ROOT) -> list[Path]:
    """The files dpkg installed for ``package`` (from ``info/<package>[:arch].list``), sorted."""
    info = Path(dpkg_root) / "info"
    lists = sorted(info.glob(f"{_glob_escape(package)}.list")) + sorted(info.glob(f"{_glob_escape(package)}:*.list"))
    files = set()
    for lst in lists:
        for line in lst.read_text(errors="replace").splitlines():
            p = Path(line)
            if line and p.is_file():
                files.add(p)
    return sorted(files)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclasses.dataclass(frozen=True)
class Track:
    source: Source
    version: str
    files: tuple[Path, ...]  # the main file first, then its stems
    sample_rate: int
    seconds: float


def find_tracks(source: Source, dpkg_root: Path = DPKG_ROOT) -> list[Track]:
    """The tracks of an installed package, sorted by path.

    Raises:
        MusicDataError: the package is not installed, or none of its files match.
    """
    import soundfile as sf

    versions = installed_packages(dpkg_root)
    if source.package not in versions:
        raise MusicDataError(
            f"package {source.package!r} is not installed (apt-get install {source.package}, about "
            f"{source.size_mb:.0f} MB)"
        )
    tracks = []
    for f in package_files(source.package, dpkg_root):
        if not fnmatch.fnmatchcase(str(f), source.pattern):
            continue
        files = (f, *(f.parent / s for s in source.stems if (f.parent / s).is_file()))
        try:
            infos = [sf.info(str(p)) for p in files]
        except Exception as e:  # libsndfile's errors vary; the file and reason are what matter
            raise MusicDataError(f"{f}: cannot read ({type(e).__name__}: {e})") from None
        if len({i.samplerate for i in infos}) != 1:
            raise MusicDataError(f"{f}: its stems have different sample rates")
        seconds = min(i.frames for i in infos) / infos[0].samplerate
        tracks.append(Track(source, versions[source.package], files, infos[0].samplerate, seconds))
    if not tracks:
        raise MusicDataError(f"package {source.package!r} has no files matching {source.pattern!r}")
    return tracks


# ----------------------------------------------------------------------------------------------
# Excerpts
# ----------------------------------------------------------------------------------------------


def read_excerpt(track: Track, offset: float, seconds: float) -> np.ndarray:
    """``seconds`` of ``track`` from ``offset``: stems summed, channels averaged, at 16 kHz, float32.

    A little more is decoded on both sides and trimmed after resampling, so the resampler's edges
    fall outside the excerpt.
    """
    import soundfile as sf

    sr = track.sample_rate
    pad = int(0.05 * sr)
    start = max(0, int(round(offset * sr)) - pad)
    lead = int(round(offset * sr)) - start
    frames = lead + int(round(seconds * sr)) + pad
    mono = None
    for p in track.files:
        try:
            with sf.SoundFile(str(p)) as f:
                f.seek(start)
                x = f.read(frames, dtype="float32", always_2d=True).mean(axis=1, dtype=np.float32)
        except Exception as e:  # libsndfile's errors vary; the file and reason are what matter
            raise MusicDataError(f"{p}: cannot decode at {offset:.2f} s ({type(e).__name__}: {e})") from None
        mono = x if mono is None else mono[: len(x)] + x[: len(mono)]
    y = resample(mono, sr, SAMPLE_RATE)
    first = int(round(lead * SAMPLE_RATE / sr))
    n = int(round(seconds * SAMPLE_RATE))
    if len(y) < first + n:
        raise _TooShort(f"{track.files[0]}: fewer than {seconds} s after {offset:.2f} s")
    return np.ascontiguousarray(y[first : first + n])


def rms_dbfs(x: np.ndarray) -> float:
    r = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return -math.inf if r == 0 else 20 * math.log10(r)


@functools.cache
def _headroom_fn() -> Callable[[Any], Any]:
    import jax

    from jsuff.models.musicnn import headroom

    return jax.jit(headroom)


def _headroom(x: np.ndarray) -> float:
    import jax.numpy as jnp

    return float(_headroom_fn()(jnp.asarray(x, jnp.float32)[None])[0])


def normalise(x: np.ndarray, margin: float = 1.25) -> tuple[np.ndarray, float]:
    """Scale ``x`` so its musicnn headroom is ``margin`` (sample peak at most 0.99); ``(y, gain)``.

    Raises:
        MusicDataError: ``x`` is silent (nothing to normalise).
    """
    if margin < 1:
        raise MusicDataError(f"margin must be at least 1 (1 = at the overflow), got {margin}")
    h = _headroom(x)
    peak = float(np.max(np.abs(x)))
    if not math.isfinite(h) or peak == 0:
        raise MusicDataError("cannot normalise a silent excerpt")
    gain = min(h / margin, PEAK_LIMIT / peak)
    return (x * np.float32(gain)).astype(np.float32), gain


def check_excerpt(x: np.ndarray, margin: float = 1.25) -> float:
    """The level rule's check: finite musicnn log-mel and headroom >= ``margin``; returns the headroom.

    Raises:
        MusicDataError: the excerpt would overflow, or has less headroom than ``margin``.
    """
    import jax.numpy as jnp

    from jsuff.models.musicnn import MIN_SAMPLES, log_mel

    if x.shape[-1] < MIN_SAMPLES:
        raise MusicDataError(f"an excerpt of {x.shape[-1]} samples is shorter than one musicnn patch ({MIN_SAMPLES})")
    if not bool(jnp.all(jnp.isfinite(log_mel(jnp.asarray(x, jnp.float32)[None])))):
        raise MusicDataError("the excerpt's musicnn log-mel holds +inf (float16 overflow)")
    h = _headroom(x)
    if h < margin * (1 - 1e-4):  # float32 rounding of the gain
        raise MusicDataError(f"the excerpt's headroom is {h:.4f}, below the margin {margin}")
    return h


def plan_offsets(seconds_total: float, seconds: float, count: int) -> list[float]:
    """Up to ``count`` offsets spread evenly over the middle 80% of a track, never overlapping:
    fewer when the track is short, none when not even one excerpt fits."""
    lo, hi = 0.1 * seconds_total, 0.9 * seconds_total - seconds
    if hi < lo or count <= 0:
        return []
    count = min(count, max(1, int((hi - lo) / seconds)))  # consecutive offsets (hi - lo) / count apart
    return [lo + (hi - lo) * (j + 0.5) / count for j in range(count)]


def _slug(s: str, n: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")[:n] or "x"


def build_excerpts(
    out: str | Path,
    *,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    per_genre: int = 10,
    seconds: float = 3.2,
    margin: float = 1.25,
    overwrite: bool = False,
    sources: Sequence[Source] = SOURCES,
    dpkg_root: Path = DPKG_ROOT,
    doc_root: Path = DOC_ROOT,
) -> Path:
    """Cut excerpts from installed soundtrack packages into ``out``; returns the manifest's path.

    Args:
        out: the folder to write (created; must be empty unless ``overwrite``).
        packages: names from ``sources``; every one must be installed.
        per_genre: excerpts per genre label (packages without a label count as one group each).
        seconds: excerpt length; at least 2.976 s, one musicnn patch (47,616 samples at 16 kHz).
        margin: the level rule's headroom (see the module docstring).
        sources: the recipe (default :data:`SOURCES`).

    Raises:
        MusicDataError: an unknown or missing package, a group without enough usable excerpts, an
            excerpt that fails its level check, or a non-empty ``out`` without ``overwrite``.
    """
    from jsuff.models.musicnn import MIN_SAMPLES

    if int(round(seconds * SAMPLE_RATE)) < MIN_SAMPLES:
        raise MusicDataError(f"excerpts must be at least {MIN_SAMPLES / SAMPLE_RATE:.3f} s (one musicnn patch)")
    if per_genre < 1:
        raise MusicDataError(f"per_genre must be at least 1, got {per_genre}")
    known = {s.package: s for s in sources}
    unknown = [p for p in packages if p not in known]
    if unknown:
        raise MusicDataError(f"not in the recipe: {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MusicDataError(f"{out} is not empty; choose another folder or pass overwrite")

    groups: dict[str, list[Track]] = {}
    for p in sorted(set(packages)):
        src = known[p]
        group = src.genre if src.genre is not None else f"package:{p}"
        groups.setdefault(group, []).extend(find_tracks(src, dpkg_root))

    clips = out / "clips"
    if clips.exists():
        shutil.rmtree(clips)
    rows = []
    for group, tracks in sorted(groups.items()):
        taken = _take(tracks, per_genre, seconds)
        if len(taken) < per_genre:
            raise MusicDataError(
                f"{group}: only {len(taken)} usable excerpts of {seconds} s in {len(tracks)} tracks, "
                f"{per_genre} wanted"
            )
        for track, offset, x in taken:
            y, gain = normalise(x, margin)
            where = _slug(f"{track.files[0].parent.name}-{track.files[0].stem}")
            name = f"{len(rows):03d}_{_slug(track.source.package)}_{where}_{int(offset * 1000):07d}.wav"
            path = write_wav(clips / name, y, SAMPLE_RATE)
            back, sr = load_audio(path)
            if sr != SAMPLE_RATE or back.shape != y.shape:
                raise MusicDataError(f"{path}: read back as {back.shape} at {sr} Hz")
            h = check_excerpt(back, margin)
            rows.append({
                "path": f"clips/{name}",
                "label": track.source.genre or "",
                "package": track.source.package,
                "version": track.version,
                "licence": track.source.licence,
                "source": "+".join(str(f) for f in track.files),
                "offset_s": f"{offset:.3f}",
                "duration_s": f"{seconds:.3f}",
                "gain": f"{gain:.6g}",
                "rms_dbfs": f"{rms_dbfs(back):.2f}",
                "peak": f"{float(np.max(np.abs(back))):.4f}",
                "headroom": f"{h:.4f}",
                "label_basis": track.source.basis,
            })  # fmt: skip
    for p in sorted(set(packages)):
        copyright_file = Path(doc_root) / p / "copyright"
        if copyright_file.is_file():
            write_text(out / "licences" / f"{_slug(p, 80)}.txt", copyright_file.read_text(errors="replace"))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    write_text(manifest, buf.getvalue())
    return manifest


def _take(tracks: Sequence[Track], n: int, seconds: float) -> list[tuple[Track, float, np.ndarray]]:
    """``n`` excerpts round-robin over ``tracks``, skipping near-silent ones (see module docstring)."""
    per_track = -(-n // len(tracks)) + 2  # two spares per track for skipped quiet offsets
    # tracks and each track's offsets in bisection order (middle, quarters, ...): whatever the
    # number taken, they are spread over the tracks and over each track
    queues = []
    for ti in _spread(len(tracks)):
        offsets = plan_offsets(tracks[ti].seconds, seconds, per_track)
        queues.append([(tracks[ti], offsets[i]) for i in _spread(len(offsets))])
    taken = []
    while len(taken) < n and any(queues):
        for q in queues:
            while q and len(taken) < n:
                t, o = q.pop(0)
                try:
                    x = read_excerpt(t, o, seconds)
                except _TooShort:
                    continue
                if rms_dbfs(x) >= SILENCE_DBFS:
                    taken.append((t, o, x))
                    break
    return taken


def _spread(k: int) -> list[int]:
    """0..k-1 ordered so every prefix is spread out (bisection order)."""
    order, seen = [], set()
    step = 1.0
    while len(order) < k:
        for j in range(int(1 / step)):
            i = min(k - 1, int((j + 0.5) * step * k))
            if i not in seen:
                seen.add(i)
                order.append(i)
        step /= 2
        if step < 1 / (4 * k):
            order.extend(i for i in range(k) if i not in seen)
            break
    return order


# ----------------------------------------------------------------------------------------------
# Checking models on the excerpts
# ----------------------------------------------------------------------------------------------


def read_manifest(manifest: str | Path) -> list[dict[str, str]]:
    """The rows of a manifest written by :func:`build_excerpts`, paths made absolute."""
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    if not manifest.is_file():
        raise MusicDataError(f"no manifest at {manifest}")
    rows = list(csv.DictReader(io.StringIO(manifest.read_text())))
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise MusicDataError(f"{manifest} needs 'path' and 'label' columns")
    for r in rows:
        p = Path(r["path"])
        r["path"] = str(p if p.is_absolute() else manifest.parent / p)
    return rows


@dataclasses.dataclass(frozen=True)
class GenreCheck:
    """Models' task labels on a set of excerpts (:func:`check_models`).

    Attributes:
        classes: the view's classes.
        labels: each excerpt's manifest label (``""`` where it has none).
        pred: ``{model: [N] int}``, indices into ``classes``.
    """

    classes: tuple[str, ...]
    labels: tuple[str, ...]
    pred: Mapping[str, np.ndarray]

    @property
    def true(self) -> np.ndarray:
        """``[N]`` int: the class index of each excerpt's label, -1 where it is not a class."""
        return np.asarray([self.classes.index(lbl) if lbl in self.classes else -1 for lbl in self.labels])

    def accuracy(self, model: str) -> float:
        """The share of excerpts with a true label that ``model`` labels correctly."""
        has = self.true >= 0
        return float(np.mean(self.pred[model][has] == self.true[has])) if has.any() else math.nan

    def confusion(self, model: str) -> np.ndarray:
        """``[K, K]`` counts, rows the true class, columns ``model``'s."""
        has = self.true >= 0
        out = np.zeros((len(self.classes), len(self.classes)), np.int64)
        np.add.at(out, (self.true[has], self.pred[model][has]), 1)
        return out

    def outside(self, model: str) -> dict[str, dict[str, int]]:
        """For manifest labels that are not classes: how often ``model`` gives each class."""
        out: dict[str, dict[str, int]] = {}
        for lbl, p in zip(self.labels, self.pred[model], strict=True):
            if lbl not in self.classes:
                counts = out.setdefault(lbl or "(no label)", {})
                counts[self.classes[p]] = counts.get(self.classes[p], 0) + 1
        return out

    def format(self) -> str:
        """A plain-text summary: accuracy, confusion and labels outside the view, per model."""
        n_true = int((self.true >= 0).sum())
        lines = [f"{n_true} of {len(self.labels)} excerpts have a label among {', '.join(self.classes)}"]
        w = max(len(c) for c in self.classes) + 2
        for name in self.pred:
            lines += [f"\n{name}: accuracy {self.accuracy(name):.3f}",
                      " " * w + "".join(f"{c[:10]:>11s}" for c in self.classes) + "   <- predicted"]  # fmt: skip
            for c, row in zip(self.classes, self.confusion(name), strict=True):
                lines.append(f"{c:<{w}s}" + "".join(f"{v:>11d}" for v in row))
            for lbl, counts in self.outside(name).items():
                lines.append(f"{lbl} (not a class): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return "\n".join(lines)


def check_models(
    manifest: str | Path, models: Mapping[str, str | Path], view: LabelView | None = None, batch: int = 8
) -> GenreCheck:
    """Label every excerpt of ``manifest`` with each converted model through ``view``.

    Args:
        manifest: a build's folder or its ``manifest.csv``.
        models: ``{name: model directory}``.
        view: the label view, whose classes are the task's; default :func:`genre_view` for these
            names (which must then start with ``MTT_`` or ``MSD_``).
        batch: excerpts per model call (the last batch is zero-padded, so one compile per model).
    """
    import jax
    import jax.numpy as jnp

    from jsuff.models.base import load_model

    view = view or genre_view(list(models))
    rows = read_manifest(manifest)
    loaded = {name: load_model(path) for name, path in models.items()}
    views = resolve_views(view, {n: m.labels for n, m in loaded.items()})
    waves = [load_audio(r["path"], SAMPLE_RATE)[0] for r in rows]
    n = min(len(w) for w in waves)
    xs = np.stack([w[:n] for w in waves])
    xs = np.concatenate([xs, np.zeros((-len(xs) % batch, n), np.float32)])
    pred = {}
    for name, model in loaded.items():
        fn = jax.jit(lambda p, x, apply=model.apply, mv=views[name]: mv.labels(apply(p, x)))
        out = [np.asarray(fn(model.params, jnp.asarray(xs[s : s + batch]))) for s in range(0, len(xs), batch)]
        pred[name] = np.concatenate(out)[: len(rows)]
    return GenreCheck(view.classes, tuple(r["label"] for r in rows), pred)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def describe_sources(sources: Sequence[Source] = SOURCES, dpkg_root: Path = DPKG_ROOT) -> str:
    """The recipe as text: package, installed version, licence, label, size; and the apt-get line."""
    versions = installed_packages(dpkg_root)
    lines = [f"{'package':28s} {'installed':18s} {'licence':18s} {'label':11s} {'size':>7s}"]
    for s in sources:
        default = "" if s.package in DEFAULT_PACKAGES else "  (on request)"
        lines.append(
            f"{s.package:28s} {versions.get(s.package, '-'):18s} {s.licence:18s} {s.genre or '-':11s} "
            f"{s.size_mb:5.1f}MB{default}"
        )
    missing = [p for p in DEFAULT_PACKAGES if p not in versions]
    if missing:
        lines.append("\nto install the default recipe: apt-get install " + " ".join(missing))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jsuff.app.musicdata", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sources", help="list the recipe's packages and what is installed")
    b = sub.add_parser("build", help="cut excerpts from installed soundtracks")
    b.add_argument("out")
    b.add_argument("--per-genre", type=int, default=10)
    b.add_argument("--seconds", type=float, default=3.2)
    b.add_argument("--margin", type=float, default=1.25)
    b.add_argument("--packages", default=",".join(DEFAULT_PACKAGES), help="comma-separated package names")
    b.add_argument("--overwrite", action="store_true")
    c = sub.add_parser("check", help="label the excerpts with converted models through the genre view")
    c.add_argument("manifest", help="the build's folder or its manifest.csv")
    c.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                   help="a converted musicnn model; NAME starts with its tag set, MTT_ or MSD_")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "sources":
            print(describe_sources())
        elif args.cmd == "build":
            packages = [p.strip() for p in args.packages.split(",") if p.strip()]
            manifest = build_excerpts(args.out, packages=packages, per_genre=args.per_genre, seconds=args.seconds,
                                      margin=args.margin, overwrite=args.overwrite)  # fmt: skip
            print(f"wrote {len(read_manifest(manifest))} excerpts: {manifest}")
        else:
            models = {}
            for spec in args.model:
                name, sep, path = spec.partition("=")
                if not sep or not name or not path:
                    raise MusicDataError(f"--model takes NAME=DIR, got {spec!r}")
                models[name] = path
            print(check_models(args.manifest, models).format())
    except (MusicDataError, AudioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
