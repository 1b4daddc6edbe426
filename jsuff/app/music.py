"""The real-music genre study (``jsuff music``, ``make music``): four trained taggers, real recordings.

:func:`run_music_study` needs no download beyond Debian and PyPI packages installed beforehand
(``make music`` installs the soundtracks when it runs as root). Under ``out`` it

1. converts the four musicnn taggers (``pkg:musicnn/<NAME>``, the installed ``musicnn`` wheel's
   checkpoints, read without TensorFlow) into ``models/<NAME>`` (kept when already there);
2. cuts excerpts from the installed soundtrack packages into ``data/``
   (:func:`jsuff.app.musicdata.build_excerpts`: per-package genre labels, the level rule against
   musicnn's float16 overflow, ``manifest.csv`` and the licence files);
3. writes ``study.toml``: the models, the manifest, the search settings and the five-class genre
   view over the MTT and MSD tag sets (:func:`jsuff.app.musicdata.genre_view_toml`) as its
   ``[labels]`` table; so ``jsuff study out/study.toml --out out/study --resume`` reruns it;
4. runs the study into ``study/`` (resumable: a rerun continues where a killed one stopped) and
   writes its report, ``study/report/index.html``.

Sizing. A musicnn forward pass on a 3.2 s excerpt costs about 0.13 s on a shared 2-core CPU (the
VGGs under half that), and one explanation with the search defaults (20 iterations, depth 10) and
10-bin extraction chunks took 5,500 model calls (13 minutes) for a musicnn model; 30 excerpts x 4
models would take most of a day on such a machine. :data:`FULL` therefore keeps the minimum box of
10 bins but runs 4 iterations of depth 7 and extracts in 100-bin chunks (31 Hz at 3.2 s): 210-735
model calls per explanation on average, the whole study in 43 minutes on that CPU (the run of
docs/music_study.md); :data:`QUICK` is a smoke test. Clips whose label a model also gives to
silence are explained by the empty signal (the trivial case) at almost no cost.

Example:
    >>> result = run_music_study("runs/music")  # hours of work, needs the soundtracks  # doctest: +SKIP
    >>> print(result.text)  # the study above  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jsuff._files import write_text
from jsuff.app.musicdata import (
    DPKG_ROOT,
    GENRE_CLASSES,
    GENRE_MODELS,
    SOURCES,
    build_excerpts,
    genre_view_toml,
    installed_packages,
    read_manifest,
)

__all__ = ["FULL", "PACKAGES", "QUICK", "MusicSettings", "MusicStudyError", "MusicResult", "missing_packages",
           "run_music_study", "study_toml"]  # fmt: skip


# The packages whose label is a class of the genre view (rock, metal, electronic): 30 excerpts. The
# study's tables use only clips with a true label, so Wesnoth's orchestral music (labelled
# classical, which the MSD tags cannot name) would cost explanations without entering a table.
PACKAGES = tuple(s.package for s in SOURCES if s.genre in GENRE_CLASSES)


class MusicStudyError(RuntimeError):
    """The music study cannot run here; the message says what is missing and how to install it."""


@dataclasses.dataclass(frozen=True)
class MusicSettings:
    """What the genre study runs on and how hard it searches.

    Attributes:
        models: musicnn model names (``pkg:musicnn/<NAME>``); each starts with its tag set.
        packages: Debian soundtrack packages the excerpts come from (see ``musicdata.SOURCES``).
        per_genre: excerpts per genre label; seconds: their length; margin: the level rule's headroom.
        iters, tree_depth, min_box_size: the responsibility search (SPEC defaults: 20, 10, 10).
        chunk_size: rfft bins per extraction step (the granularity of minimality).
        prefixes_per_call: candidate sets per block of the extraction's scans; max_batch: waveforms
            per model call (a smaller set is padded to a whole call, so small values suit tiny runs).
        clips_per_batch: excerpts explained together (and saved together: the resume unit).
        n_boot: bootstrap resamples of the intervals.
        seed: the search's seed.
    """

    models: tuple[str, ...] = GENRE_MODELS
    packages: tuple[str, ...] = PACKAGES
    per_genre: int = 10
    seconds: float = 3.2
    margin: float = 1.25
    iters: int = 4
    tree_depth: int = 7
    min_box_size: int = 10
    chunk_size: int = 100
    prefixes_per_call: int = 64
    max_batch: int = 64
    clips_per_batch: int = 4
    n_boot: int = 1000
    seed: int = 0

    def describe(self) -> str:
        return (
            f"{len(self.models)} models, {self.per_genre} excerpts of {self.seconds:g} s per genre from "
            f"{len(self.packages)} package(s); search iters={self.iters} depth={self.tree_depth} "
            f"min_box={self.min_box_size}, extraction chunk={self.chunk_size} bins, {self.n_boot} bootstrap resamples"
        )

    def data_record(self) -> dict[str, object]:
        """What the excerpts depend on (a rebuild with other values would change the data)."""
        return {"packages": sorted(self.packages), "per_genre": self.per_genre, "seconds": self.seconds,
                "margin": self.margin}  # fmt: skip


FULL = MusicSettings()
QUICK = MusicSettings(per_genre=2, iters=1, tree_depth=3, min_box_size=2000, chunk_size=2000, prefixes_per_call=16,
                      max_batch=16, n_boot=100)


@dataclasses.dataclass(frozen=True)
class MusicResult:
    """Where the study went, its printable summary and the seconds each step took."""

    out_dir: Path
    study_dir: Path
    report: Path | None
    text: str
    seconds: dict[str, float]


def missing_packages(packages: Sequence[str] = PACKAGES, dpkg_root: Path = DPKG_ROOT) -> list[str]:
    """The Debian soundtrack packages of ``packages`` that are not installed (in that order)."""
    have = installed_packages(dpkg_root)
    return [p for p in packages if p not in have]


def _check_requirements(settings: MusicSettings, dpkg_root: Path) -> None:
    problems = []
    missing = missing_packages(settings.packages, dpkg_root)
    if missing:
        sizes = {s.package: s.size_mb for s in SOURCES}
        mb = sum(sizes.get(p, 0.0) for p in missing)
        problems.append(
            f"the soundtrack package{'s' * (len(missing) > 1)} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not installed (about {mb:.0f} MB of downloads); "
            f"install them with `apt-get install {' '.join(missing)}` as root, or run `make music` as root"
        )
    if importlib.util.find_spec("musicnn") is None:
        problems.append("the musicnn wheel, whose checkpoints are converted, is not installed (`make setup-real`)")
    if problems:
        raise MusicStudyError("the genre study needs " + "; and ".join(problems))


def study_toml(manifest: Path, models: Sequence[tuple[str, Path]], settings: MusicSettings, base: Path) -> str:
    """The study config: the models, the manifest, the search settings and the genre view.

    Paths are written relative to ``base`` (the TOML's folder) when they lie under it.
    """

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        try:
            return str(p.relative_to(base.resolve()))
        except ValueError:
            return str(p)

    lines = [
        "# The real-music genre study (jsuff music): written by jsuff.app.music; rerun with",
        "#   jsuff study study.toml --out study --resume",
        'task = "genre (musicnn taggers, soundtrack excerpts)"',
        f"seed = {settings.seed}",
        f"clips_per_batch = {settings.clips_per_batch}",
        f"n_boot = {settings.n_boot}",
        "models = [",
        *(f"  {{ name = {json.dumps(name)}, path = {json.dumps(rel(path))} }}," for name, path in models),
        "]",
        "",
        "[data]",
        f"path = {json.dumps(rel(manifest))}",
        f"duration = {settings.seconds!r}",
        "sample_rate = 16000",
        "",
        "[search]",
        f"iters = {settings.iters}",
        f"tree_depth = {settings.tree_depth}",
        f"min_box_size = {settings.min_box_size}",
        f"max_batch = {settings.max_batch}",
        "",
        "[extract]",
        f"chunk_size = {settings.chunk_size}",
        f"prefixes_per_call = {settings.prefixes_per_call}",
        "",
        genre_view_toml([name for name, _ in models]),
    ]
    return "\n".join(lines)


def _excerpts(data_dir: Path, settings: MusicSettings, fresh: bool, say: Callable[[str], None],
              dpkg_root: Path) -> Path:
    """The excerpts of ``settings`` in ``data_dir``, built unless an earlier build of the same
    settings is there (the build is deterministic, so it is never redone for a resume)."""
    record_path = data_dir / "build.json"
    manifest = data_dir / "manifest.csv"
    want = settings.data_record()
    if record_path.is_file() and manifest.is_file() and not fresh:
        have = json.loads(record_path.read_text())
        if have == want:
            return manifest
        raise MusicStudyError(
            f"{data_dir} holds excerpts built with {have}, not {want}; rerun with --fresh to rebuild them "
            "(and start the study over), or choose another --out"
        )
    if data_dir.exists():
        shutil.rmtree(data_dir)
    say(f"cutting {settings.per_genre} excerpts per genre from {', '.join(settings.packages)} into {data_dir}")
    manifest = build_excerpts(data_dir, packages=settings.packages, per_genre=settings.per_genre,
                              seconds=settings.seconds, margin=settings.margin, dpkg_root=dpkg_root)  # fmt: skip
    write_text(record_path, json.dumps(want, indent=2) + "\n")
    return manifest


def run_music_study(
    out: str | Path = "runs/music",
    settings: MusicSettings = FULL,
    *,
    fresh: bool = False,
    report: bool = True,
    quiet: bool | None = None,
    log: Callable[[str], None] | None = None,
    dpkg_root: Path = DPKG_ROOT,
) -> MusicResult:
    """Convert the models, cut the excerpts, write ``study.toml``, run the study, write its report.

    Args:
        out: the folder (``models/``, ``data/``, ``study.toml``, ``study/`` go under it).
        settings: :data:`FULL`, :data:`QUICK` or your own.
        fresh: rebuild the excerpts and start the study over instead of resuming it.
        report: write the HTML report.
        quiet: no progress bar (``None``: a bar on a terminal only).
        log: progress lines (``print`` from the CLI).
        dpkg_root: the dpkg database the soundtrack packages are looked up in.

    Raises:
        MusicStudyError: soundtrack packages or the musicnn wheel missing (before any work), or
            excerpts of other settings in ``out/data`` (rerun with ``fresh``).
        StudyError: the study itself cannot run (see :func:`jsuff.app.study.run_study`).
    """
    from jsuff.app.realdemo import convert_models
    from jsuff.app.report import summary_text, write_report
    from jsuff.app.study import StudyError, load_config, run_study

    say = log or (lambda _: None)
    _check_requirements(settings, dpkg_root)
    root = Path(out)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    say(f"converting {', '.join(settings.models)} from the musicnn wheel into {root / 'models'}")
    paths = convert_models([(m, f"pkg:musicnn/{m}") for m in settings.models], root / "models")
    seconds["convert"] = time.perf_counter() - t

    t = time.perf_counter()
    manifest = _excerpts(root / "data", settings, fresh, say, dpkg_root)
    n = len(read_manifest(manifest))
    seconds["excerpts"] = time.perf_counter() - t

    toml = root / "study.toml"
    write_text(toml, study_toml(manifest, list(zip(settings.models, paths, strict=True)), settings, root))
    cfg = load_config(toml)
    study_dir = root / "study"
    if fresh and study_dir.exists():
        shutil.rmtree(study_dir)
    say(f"running the study ({settings.describe()}; {n} excerpts) into {study_dir}")
    t = time.perf_counter()
    try:
        run_study(cfg, study_dir, resume=(study_dir / "study.json").exists(), quiet=quiet)
    except StudyError as e:
        if "different config" in str(e):
            raise StudyError(f"{e}; rerun with --fresh to replace it, or choose another --out") from None
        raise
    seconds["study"] = time.perf_counter() - t
    page = None
    if report:
        t = time.perf_counter()
        page = write_report(study_dir)
        seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    lines = [
        summary_text(study_dir),
        f"Settings: {settings.describe()}",
        f"Config: {toml.resolve()}",
        "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()),
    ]
    if page is not None:
        lines.append(f"Report: {page.resolve()}")
    return MusicResult(root, study_dir, page, "\n".join(lines), seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jsuff.app.music packages``: the missing soundtrack packages, one line (for make)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["packages"]:
        print("usage: python -m jsuff.app.music packages", file=sys.stderr)
        return 2
    print(" ".join(missing_packages()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
