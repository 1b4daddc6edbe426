"""Studies on ordinary-but-awkward data and hostile input (issue 14): names with HTML, ``../`` and
quotes; silent clips; classes no model has; bad config types; a locked, a foreign or a read-only
output folder; a full disk; a damaged unit file; the current directory; the umask."""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

import jsuff._files as files
from jsuff._files import atomic_write, folder_lock
from jsuff.app.cli import main
from jsuff.models import InputPolicy, build_model, save_model
from jsuff.app.report import write_report
from jsuff.app.study import (
    DataConfig,
    ModelSpec,
    StudyConfig,
    StudyError,
    config_from_dict,
    load_config,
    run_study,
)
from jsuff.app.store import model_slugs

ROOT = Path(__file__).resolve().parents[1]
SR = 8000
DUR = 0.25
# class names are user strings too: they reach folder names, tables and the page
CLASSES = ["low<i>", "mid'\"", "high&amp;"]
TONES = dict(zip(CLASSES, (300.0, 1100.0, 2600.0)))
XSS = "'><img src=x onerror=alert(1)><a b='"
TRAVERSAL = "../../escaped_model"
QUOTED = 'a/b "q" $x$ <&>'
TASK = "<script>alert('task')</script>"
BAD_FILE = 'q"uote,comma.wav'
SEARCH = {"iters": 2, "tree_depth": 3, "min_box_size": 8}


def _tone(f: float, rng: np.random.Generator, n: int = int(SR * DUR)) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * f * rng.uniform(0.97, 1.03) * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _models(root: Path, labels=CLASSES) -> dict[str, Path]:
    bands = [[200, 500], [900, 1400], [2200, 3000]]
    specs = {
        "wide": dict(bands=bands, sample_rate=SR),
        "narrow16k": dict(bands=[[250, 400], [1000, 1200], [2400, 2800]], sample_rate=16000),
        "deaf": dict(bands=bands, sample_rate=SR, weights=np.zeros((3, 3)).tolist(), bias=[0.0, 1.0, 0.0]),
    }
    out = {}
    for name, cfg in specs.items():
        sr = cfg["sample_rate"]
        m = build_model("bandpower", cfg, sample_rate=sr, labels=list(labels), input=InputPolicy(length=int(sr * DUR)))
        save_model(m, root / "models" / name)
        out[name] = root / "models" / name
    return out


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


# ---------------------------------------------------------------------------------------------
# One study with everything hostile or awkward at once


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    data = root / "data"
    for c in CLASSES:
        (data / c).mkdir(parents=True)
        for k in range(2):
            sf.write(data / c / f"{c}_{k}.wav", _tone(TONES[c], rng), SR)
    (data / "violin").mkdir()  # a class that no model has
    sf.write(data / "violin" / "violin_0.wav", _tone(700.0, rng), SR)
    n = int(SR * DUR)
    sf.write(data / CLASSES[0] / "zeros.wav", np.zeros(n, np.float32), SR)
    late = np.concatenate([np.zeros(n + 400, np.float32), _tone(300.0, rng)])  # silence longer than DUR
    sf.write(data / CLASSES[0] / "late.wav", late, SR)
    x = _tone(1100.0, rng)
    sf.write(data / CLASSES[1] / "antiphase.wav", np.stack([x, -x], 1), SR, subtype="FLOAT")
    (data / CLASSES[2] / BAD_FILE).write_bytes(b"RIFF, but not audio")
    _models(root)
    raw = {
        "task": TASK,
        "seed": 1,
        "models": [
            {"name": XSS, "path": "models/wide"},
            {"name": TRAVERSAL, "path": "models/narrow16k"},
            {"name": QUOTED, "path": "models/deaf"},
        ],
        "data": {"path": "data", "duration": DUR, "sample_rate": SR},
        "search": SEARCH,
        "clips_per_batch": 7,
        "n_boot": 20,
    }
    out = root / "sub" / "out"
    err = io.StringIO()
    old = os.umask(0o022)
    try:
        with contextlib.redirect_stderr(err):
            arrays = run_study(config_from_dict(raw, root), out, quiet=False)
            page = write_report(out)
    finally:
        os.umask(old)
    return SimpleNamespace(root=root, out=out, arrays=arrays, page=page, console=err.getvalue())


def test_names_never_become_paths(hostile):
    out, root = hostile.out, hostile.root
    assert sorted(p.name for p in root.iterdir()) == ["data", "models", "sub"]  # nothing escaped --out
    assert [p.name for p in (root / "sub").iterdir()] == ["out"]
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out.resolve()), p
    slugs = model_slugs([XSS, TRAVERSAL, QUOTED])
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(slugs.values())
    assert sorted(p.name for p in (out / "transfer").iterdir()) == sorted(f"{s}.npz" for s in slugs.values())
    for s in slugs.values():
        assert "/" not in s and not s.startswith(".") and s.isprintable()
    assert list(hostile.arrays.model_names) == [XSS, TRAVERSAL, QUOTED]  # the names themselves are kept


def test_report_escapes_every_user_string(hostile):
    text = hostile.page.read_text()
    for raw in (XSS, TASK, "<i>", "<script", "onerror=alert(1)>"):
        assert raw not in text, raw
    page = _Page()
    page.feed(text)
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and tags.count("img") >= 4 and tags.count("audio") >= 2
    report = hostile.out / "report"
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:80]
        if tag == "audio":
            target = (report / attrs["src"]).resolve()
            assert target.is_relative_to(report.resolve()) and target.is_file(), attrs["src"]
    shown = "".join(page.text)
    for raw in (XSS, TRAVERSAL, QUOTED, TASK, *CLASSES, BAD_FILE):
        assert raw in shown, raw  # shown literally, as text
    # the model and clip pages too: the same names, escaped, and links that stay inside the report
    others = sorted(p for p in report.rglob("*.html") if p != hostile.page)
    assert len(others) == 3 + len(hostile.arrays.paths)
    for path in others:
        text = path.read_text()
        for raw in (XSS, TASK, "<i>", "<script", "onerror=alert(1)>"):
            assert raw not in text, (path.name, raw)
        sub = _Page()
        sub.feed(text)
        assert "script" not in [t for t, _ in sub.tags]
        for tag, attrs in sub.tags:
            assert not any(k.startswith("on") for k in attrs), (path.name, tag, attrs)
            for key in ("src", "href"):
                if attrs.get(key):
                    target = (path.parent / unquote(attrs[key])).resolve()
                    assert target.is_relative_to(report.resolve()) and target.is_file(), (path.name, attrs[key])
    clip_page = _Page()
    clip_page.feed((report / "clips" / "clip_0000.html").read_text())
    for raw in (XSS, TRAVERSAL, QUOTED, TASK):
        assert raw in "".join(clip_page.text), raw


def test_report_wavs_have_each_models_rate(hostile):
    slugs = model_slugs([XSS, TRAVERSAL, QUOTED])
    audio = hostile.out / "report" / "audio"
    for name, rate in ((XSS, SR), (TRAVERSAL, 16000)):
        suff = sorted((audio / slugs[name]).glob("*_sufficient.wav"))
        assert suff
        assert {sf.info(p).samplerate for p in suff} == {rate}
    orig = sorted((audio / "original").glob("*.wav"))  # the originals, once, at the study rate
    assert orig and {sf.info(p).samplerate for p in orig} == {SR}
    record = json.loads((hostile.out / "study.json").read_text())
    assert [m["sample_rate"] for m in record["models"]] == [SR, 16000, SR]


def test_class_no_model_has_is_reported_not_fatal(hostile):
    arrays, out = hostile.arrays, hostile.out
    violin = [i for i, p in enumerate(arrays.paths) if "violin" in p]
    assert len(violin) == 1 and arrays.true[violin[0]] == -1
    assert (arrays.true >= 0).sum() == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unknown_class_clips"] == {"violin": 1}
    assert "1 clip(s) have a class no model has ('violin': 1)" in hostile.console
    assert (out / "tables" / "pairs.csv").exists() and (out / "tables" / "metrics.csv").exists()
    page = _Page()
    page.feed(hostile.page.read_text())
    note = " ".join("".join(page.text).split())
    assert "1 clip(s) have a class that no model has (violin: 1)" in note
    from jsuff.app.report import summary_text

    assert "'violin': 1" in summary_text(out)


def test_silent_and_unreadable_clips_are_per_clip_failures(hostile):
    out = hostile.out
    with open(out / "data" / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_name = {Path(r["path"]).name: r["reason"] for r in rows}
    assert set(by_name) == {"zeros.wav", "late.wav", "antiphase.wav", BAD_FILE}  # the quoted name survives
    for name in ("zeros.wav", "late.wav", "antiphase.wav"):
        assert "all samples are zero" in by_name[name]
    assert "cannot decode" in by_name[BAD_FILE]
    for name in ("zeros.wav", "late.wav", "antiphase.wav", BAD_FILE):
        assert name in hostile.console
    assert len(hostile.arrays.paths) == 7
    assert not any(Path(p).name in by_name for p in hostile.arrays.paths)
    assert json.loads((out / "summary.json").read_text())["failed_files"] == 4


def test_files_follow_the_umask(hostile):
    # the fixture ran under umask 022: files 0644 (not mkstemp's 0600)
    modes = {oct(p.stat().st_mode & 0o777) for p in hostile.out.rglob("*") if p.is_file()}
    assert modes == {"0o644"}, modes


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o002, 0o664), (0o022, 0o644)])
def test_atomic_write_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == mode


# ---------------------------------------------------------------------------------------------
# Config types, checked before any work


@pytest.mark.parametrize(
    "change, where, expected",
    [
        ({"search": {"iters": True}}, "[search] iters = true", "integer"),
        ({"search": {"iters": 1.5}}, "[search] iters = 1.5", "integer"),
        ({"clips_per_batch": "2"}, 'clips_per_batch (top level) = "2"', "integer"),
        ({"data": {"path": "d", "duration": "1s"}}, '[data] duration = "1s"', "number"),
        ({"seed": "abc"}, 'seed (top level) = "abc"', "integer"),
        ({"seed": -1}, "seed (top level) = -1", "greater than or equal to 0"),
        ({"search": 5}, "search (top level) = 5", "table"),
        ({"domain": {"name": "stft", "n_fft": "512"}}, '[domain] n_fft = "512"', "integer"),
        ({"domain": {"name": "stft", "hop": 1024}}, "[domain]", "hop <= n_fft"),
        ({"domain": {"name": "stft", "windw": "hann"}}, "[domain] windw", "unknown key; allowed: fill, hop"),
        ({"clips_per_batch": 0}, "clips_per_batch (top level) = 0", "greater than or equal to 1"),
        ({"predict_batch": 0}, "predict_batch (top level) = 0", "greater than or equal to 1"),
        ({"data": {"path": "d", "duration": 0.0}}, "[data] duration = 0.0", "greater than 0"),
        ({"data": {"path": "d", "sample_rate": 16000.5}}, "[data] sample_rate = 16000.5", "integer"),
        ({"data": {"path": "d", "crop": "middle"}}, '[data] crop = "middle"', "'start' or 'center'"),
        ({"models": "a/b"}, 'models (top level) = "a/b"', "list"),
        ({"models": []}, "models (top level)", "at least 1"),
        ({"extract": {"tau": 2.0}}, "[extract] tau = 2.0", "less than or equal to 1"),
        ({"n_boot": 1e400}, "n_boot (top level) = inf", "integer"),
    ],
)
def test_bad_config_values_name_table_key_value_and_expectation(change, where, expected):
    raw = {"task": "t", "models": ["m"], "data": {"path": "d"}, **change}
    with pytest.raises(StudyError) as e:
        config_from_dict(raw, "/tmp")
    assert where in str(e.value) and expected in str(e.value), str(e.value)


def test_all_config_problems_are_reported_together():
    raw = {"task": "t", "models": ["m"], "data": {"path": "d", "limit": 0}, "search": {"iters": 0, "max_batch": "8"}}
    with pytest.raises(StudyError, match="3 problems") as e:
        config_from_dict(raw, "/tmp")
    for part in ("[data] limit = 0", "[search] iters = 0", '[search] max_batch = "8"'):
        assert part in str(e.value)


def test_cli_reports_config_problems_in_one_line_each(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text('task = "t"\nmodels = "a/b"\nseed = -1\n[data]\npath = "d"\n[search]\niters = true\n')
    assert main(["study", str(toml), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "Traceback" not in err
    for part in ('models (top level) = "a/b"', "seed (top level) = -1", "[search] iters = true"):
        assert part in err
    assert not (tmp_path / "out").exists()


def test_a_config_built_in_python_is_checked_by_run_study(tmp_path):
    cfg = StudyConfig(task="t", models=(ModelSpec("m", str(tmp_path / "m")),),
                      data=DataConfig(path=str(tmp_path)), clips_per_batch=0)
    with pytest.raises(StudyError, match=r"clips_per_batch \(top level\) = 0"):
        run_study(cfg, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_a_model_path_with_a_slash_is_one_model(tmp_path):
    cfg = config_from_dict({"task": "t", "models": ["a/b"], "data": {"path": "d"}}, tmp_path)
    assert cfg.models == (ModelSpec("b", str(tmp_path.resolve() / "a" / "b")),)


# ---------------------------------------------------------------------------------------------
# A small study, run from its own folder with relative paths, reused by the tests below


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(1)
    for c in CLASSES[:2]:
        (root / "data" / c).mkdir(parents=True)
        sf.write(root / "data" / c / f"{c}.wav", _tone(TONES[c], rng), SR)
    _models(root)
    (root / "study.toml").write_text(
        'task = "tiny"\nseed = 2\nmodels = ["models/wide", "models/narrow16k"]\nclips_per_batch = 2\nn_boot = 20\n'
        f'[data]\npath = "data"\nduration = {DUR}\nsample_rate = {SR}\n'
        "[search]\niters = 2\ntree_depth = 3\nmin_box_size = 8\n"
    )
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = load_config("study.toml")  # relative to the current directory
        arrays = run_study(cfg, "out", quiet=True)
    finally:
        os.chdir(cwd)
    return SimpleNamespace(root=root, toml=root / "study.toml", out=root / "out", arrays=arrays)


def _stamps(folder: Path) -> dict[Path, int]:
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*.npz")}


def _same_results(a, b):
    for field in ("labels", "original", "empty", "valid", "true", "trivial", "queries"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_allclose(a.size_fraction, b.size_fraction)


def test_resume_and_report_do_not_depend_on_the_current_directory(tiny, tmp_path, monkeypatch):
    stamps = _stamps(tiny.out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = run_study(load_config(tiny.toml), tiny.out, resume=True, quiet=True)
    assert _stamps(tiny.out) == stamps  # the same config: nothing recomputed
    _same_results(again, tiny.arrays)
    assert main(["report", str(tiny.out)]) == 0
    audio = tiny.out / "report" / "audio"
    assert {sf.info(p).samplerate for p in (audio / "narrow16k").glob("*_sufficient.wav")} == {16000}
    assert {sf.info(p).samplerate for p in (audio / "wide").glob("*_sufficient.wav")} == {SR}


def test_changed_data_is_detected_on_resume(tiny):
    stamps = _stamps(tiny.out)
    wav = next((tiny.root / "data" / CLASSES[0]).glob("*.wav"))
    original = wav.read_bytes()
    # rewritten with the same bytes (a newer mtime): the same data
    time.sleep(0.01)
    wav.write_bytes(original)
    run_study(load_config(tiny.toml), tiny.out, resume=True, quiet=True)
    assert _stamps(tiny.out) == stamps
    extra = tiny.root / "data" / CLASSES[1] / "new.wav"
    try:
        sf.write(wav, _tone(500.0, np.random.default_rng(9)), SR)
        shutil.copy(wav, extra)
        with pytest.raises(StudyError, match="data changed") as e:
            run_study(load_config(tiny.toml), tiny.out, resume=True, quiet=True)
        assert "1 file(s) added: " + str(extra.resolve()) in str(e.value)
        assert "1 file(s) modified: " + str(wav.resolve()) in str(e.value)
    finally:
        extra.unlink(missing_ok=True)
        wav.write_bytes(original)
    assert _stamps(tiny.out) == stamps  # nothing was touched


def test_fresh_run_into_a_foreign_folder_is_refused(tiny, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my thesis")
    for resume in (False, True):
        with pytest.raises(StudyError, match="not empty .*holds no study.json"):
            run_study(load_config(tiny.toml), mine, resume=resume, quiet=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "my thesis"


def test_a_running_study_holds_a_lock_that_names_it(tiny):
    with subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from jsuff._files import folder_lock\n"
         f"with folder_lock({str(tiny.out)!r}, 'test holder'):\n    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    ) as holder:
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(StudyError, match=f"in use by process {holder.pid} on host .* since .*test holder"):
                run_study(load_config(tiny.toml), tiny.out, resume=True, quiet=True)
            with pytest.raises(StudyError, match=f"in use by process {holder.pid}"):
                write_report(tiny.out)
        finally:
            holder.kill()
    # the holder died: its lock went with it, although the file that records it stays
    assert json.loads((tiny.out / ".jsuff.lock").read_text())["pid"] == holder.pid
    run_study(load_config(tiny.toml), tiny.out, resume=True, quiet=True)
    with folder_lock(tiny.out):
        with pytest.raises(files.FolderLockedError, match=str(os.getpid())):
            with folder_lock(tiny.out):
                pass


def test_a_damaged_unit_is_named_with_its_fix(tiny, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny.out, out)
    batch = out / "models" / "wide" / "explain" / "batch_00000.npz"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(StudyError, match="batch_00000.npz is damaged .*Delete it and rerun with --resume"):
        run_study(load_config(tiny.toml), out, resume=True, quiet=True)
    batch.unlink()  # the fix the message gives
    _same_results(run_study(load_config(tiny.toml), out, resume=True, quiet=True), tiny.arrays)
    (out / "study.json").write_text("{not json")
    with pytest.raises(StudyError, match="study.json cannot be read"):
        run_study(load_config(tiny.toml), out, resume=True, quiet=True)


def _failing_writes(monkeypatch, part: str, err: int):
    real = files._open_temporary

    def fake(path):
        if part in str(path):
            raise OSError(err, os.strerror(err), str(path))
        return real(path)

    monkeypatch.setattr(files, "_open_temporary", fake)


def test_a_full_disk_names_the_file_keeps_the_work_and_resumes(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _failing_writes(monkeypatch, "transfer", errno.ENOSPC)
    with pytest.raises(StudyError, match=r"cannot write .*transfer.*No space left on device.*--resume"):
        run_study(load_config(tiny.toml), out, quiet=True)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    assert len(list(out.glob("models/*/explain/batch_*.npz"))) == 2  # the explanations are kept
    monkeypatch.undo()
    stamps = _stamps(out)
    resumed = run_study(load_config(tiny.toml), out, resume=True, quiet=True)
    assert all(_stamps(out)[p] == t for p, t in stamps.items())  # nothing done was redone
    _same_results(resumed, tiny.arrays)


def test_read_only_output_is_a_clear_error(tiny, tmp_path, monkeypatch):
    _failing_writes(monkeypatch, "", errno.EROFS)
    with pytest.raises(StudyError, match=r"cannot write .*study.json: Read-only file system"):
        run_study(load_config(tiny.toml), tmp_path / "ro", quiet=True)
    with pytest.raises(StudyError, match=r"cannot write .*report.*Read-only file system.*jsuff report"):
        write_report(tiny.out)
    monkeypatch.undo()
    assert main(["report", str(tiny.out)]) == 0
    page = (tiny.out / "report" / "index.html").read_text()
    assert page.rstrip().endswith("</html>")
    assert not [p for p in (tiny.out / "report").rglob("*") if p.name.endswith(".tmp")]
