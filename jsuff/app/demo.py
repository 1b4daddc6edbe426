"""The built-in demo (``jsuff demo``, ``make demo``): the full study on the trained zoo.

:func:`run_demo` needs no training and no download. It

1. generates the zoo's held-out clips (the ``test`` split of the zoo dataset, same seed, so none
   was seen in training) and writes them as WAVs in the GTZAN layout under ``<out>/data``;
2. runs a :class:`~jsuff.app.study.StudyConfig` over the four committed zoo models (task
   ``"generated-music"``, rfft domain) into ``<out>/study`` with ``resume=True``, so a rerun of an
   interrupted demo continues where it stopped and a finished one only rewrites the report;
3. writes the HTML report and returns a summary: the transfer matrix, the flat-earther screening,
   mutual information beside accuracy, each model's recorded held-out accuracy from training, the
   search settings, the wall time and where the report is.

Sizing. Every search candidate and every extraction step is one forward pass of the explained
model (the extraction, about ``8001 / chunk`` calls per clip for a 1 s clip's rfft bins, is the
larger share), and compiling the search for four models takes a minute or two of its own.
:data:`FULL` (10 clips, 6 iterations, depth 6, 80-bin chunks) is sized for under five minutes on
a 2-core CPU; :data:`QUICK` is a smoke test (mostly compilation).

Example:
    >>> summary = run_demo("runs/demo")  # minutes of work (make demo runs it)  # doctest: +SKIP
    >>> print(summary.text)  # the tables it prints  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from jsuff.extract import ExtractConfig
from jsuff.search import SearchConfig
from jsuff.app.study import DataConfig, ModelSpec, StudyConfig, StudyError, run_study
from jsuff.app.zoo.data import make_dataset, write_dataset
from jsuff.app.zoo.registry import DATA_SEED, DURATION, SAMPLE_RATE, ZOO, ZOO_DIR, read_zoo_json

__all__ = [
    "DemoSettings",
    "DemoSummary",
    "FULL",
    "QUICK",
    "TASK",
    "demo_config",
    "run_demo",
    "write_test_clips",
]

TASK = "generated-music"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """How big the demo study is.

    Attributes:
        clips: held-out clips explained (balanced over the five classes).
        iters: random partition trees per clip.
        depth: deepest refined box depth.
        min_box: boxes with fewer rfft bins are not split.
        chunk: rfft bins added per step when the sufficient signal is extracted (and the
            granularity of its minimality); extraction costs about ``8001 / chunk`` model calls
            per clip, the largest share of the demo's time.
        prefixes_per_call: candidate sets per model call during extraction.
        clips_per_batch: clips searched together (one compiled search per batch shape).
        n_boot: bootstrap resamples for the confidence intervals.
    """

    clips: int = 10
    iters: int = 6
    depth: int = 6
    min_box: int = 64
    chunk: int = 80
    prefixes_per_call: int = 32
    clips_per_batch: int = 5
    n_boot: int = 300

    def __post_init__(self) -> None:
        for name in ("clips", "iters", "chunk", "prefixes_per_call", "clips_per_batch", "n_boot"):
            if getattr(self, name) < 1:
                raise StudyError(f"demo {name} must be at least 1, got {getattr(self, name)}")
        if self.depth < 0 or self.min_box < 4:
            raise StudyError(f"demo needs depth >= 0 and min_box >= 4, got {self.depth}, {self.min_box}")

    def describe(self) -> str:
        return (
            f"{self.clips} clips, search iters={self.iters} depth={self.depth} "
            f"min_box={self.min_box}, extraction chunk={self.chunk} bins, "
            f"{self.n_boot} bootstrap resamples"
        )


FULL = DemoSettings()
QUICK = DemoSettings(
    clips=5, iters=2, depth=3, min_box=64, chunk=400, prefixes_per_call=16, clips_per_batch=5, n_boot=50
)


@dataclasses.dataclass(frozen=True)
class DemoSummary:
    """What :func:`run_demo` produced.

    Attributes:
        study_dir: the study's output directory.
        report: the HTML report's path.
        accuracy: each zoo model's recorded held-out accuracy (from ``zoo.json``).
        seconds: wall time of the whole demo.
        text: the printable summary.
    """

    study_dir: Path
    report: Path
    accuracy: Mapping[str, float]
    seconds: float
    text: str


def write_test_clips(directory: str | Path, per_class: int) -> Path:
    """Write the first ``per_class`` held-out clips of every class (GTZAN layout) and return the folder.

    The clips are generated per (seed, split, class, index), so these are exactly the first test
    clips of the dataset the zoo was trained and scored on.
    """
    ds = make_dataset(DATA_SEED, (1, 0, per_class), sample_rate=SAMPLE_RATE, duration=DURATION)
    return write_dataset(directory, ds.subset("test"))


def demo_config(data_dir: Path, settings: DemoSettings, zoo_dir: Path = ZOO_DIR) -> StudyConfig:
    """The demo's study: the four zoo models on ``data_dir``, sized by ``settings``."""
    recorded = read_zoo_json(zoo_dir).get("members", {})
    names = [m.name for m in ZOO if m.name in recorded]
    if not names:
        raise StudyError(f"the zoo at {zoo_dir} records no trained model; run `jsuff zoo train`")
    return StudyConfig(
        task=TASK,
        models=tuple(ModelSpec(n, str(zoo_dir / recorded[n].get("path", n))) for n in names),
        data=DataConfig(path=str(data_dir), duration=DURATION, sample_rate=SAMPLE_RATE, limit=settings.clips),
        search=SearchConfig(iters=settings.iters, tree_depth=settings.depth, min_box_size=settings.min_box),
        extract=ExtractConfig(chunk_size=settings.chunk, prefixes_per_call=settings.prefixes_per_call),
        seed=0,
        clips_per_batch=settings.clips_per_batch,
        n_boot=settings.n_boot,
    )


def run_demo(
    out: str | Path = "runs/demo",
    settings: DemoSettings = FULL,
    *,
    fresh: bool = False,
    zoo_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Run the demo study into ``out`` (see the module docstring) and summarise it.

    Args:
        out: the demo directory (``data/`` and ``study/`` go under it).
        settings: the study's size (:data:`FULL` or :data:`QUICK`, or your own).
        fresh: delete an earlier ``<out>/study`` first instead of resuming it.
        zoo_dir: the zoo (default: the package's committed ``jsuff/app/zoo/models``).
        log: progress lines (``print`` from the CLI).

    Raises:
        ZooError: no trained zoo.
        StudyError: ``<out>/study`` holds a study with other settings (pass ``fresh``).
    """
    t0 = time.perf_counter()
    say = log or (lambda _: None)
    root = Path(out)
    zoo = Path(zoo_dir) if zoo_dir is not None else ZOO_DIR
    per_class = -(-settings.clips // len(read_zoo_json(zoo)["data"]["classes"]))
    data_dir = root / "data"
    say(f"writing {per_class} held-out clips per class to {data_dir}")
    write_test_clips(data_dir, per_class)
    cfg = demo_config(data_dir.resolve(), settings, zoo)
    study_dir = root / "study"
    if fresh and study_dir.exists():
        shutil.rmtree(study_dir)
    say(f"running the study ({settings.describe()}) into {study_dir}")
    try:
        run_study(cfg, study_dir, resume=True)
    except StudyError as e:
        if "different config" in str(e):
            raise StudyError(f"{e}; rerun with --fresh to replace it, or choose another --out") from None
        raise
    from jsuff.app.report import summary_text, write_report  # matplotlib: only once there is a study

    report = write_report(study_dir)
    accuracy = {n: float(r["test_accuracy"]) for n, r in read_zoo_json(zoo)["members"].items()}
    seconds = time.perf_counter() - t0
    lines = [
        summary_text(study_dir),
        "Held-out accuracy recorded when the zoo was trained (zoo.json, test split):",
        *(f"  {m.name:<16} {accuracy[m.name]:.3f}   {m.note}" for m in ZOO if m.name in accuracy),
        f"Settings: {settings.describe()}",
        f"Total time: {seconds:.1f} s",
        f"Report: {report.resolve()}",
    ]
    return DemoSummary(study_dir, report, accuracy, seconds, "\n".join(lines))
