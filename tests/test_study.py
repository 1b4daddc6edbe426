"""Studies end to end on generated clips and band-power toy models with known evidence, and their
report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsuff.info import classification_metrics, pairwise_information
from jsuff.models import InputPolicy, build_model, save_model
from jsuff.app.report import summary_text, write_report
from jsuff.app.study import StudyError, config_from_dict, load_arrays, run_study
from jsuff.transfer import transfer_analysis

ROOT = Path(__file__).resolve().parents[1]
SR = 8000
DUR = 0.25
CLASSES = ["low", "mid", "high"]
TONES = {"low": 300.0, "mid": 1100.0, "high": 2600.0}


def _clip(cls: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SR * DUR)) / SR
    f = TONES[cls] * rng.uniform(0.95, 1.05)
    x = 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
    # a weaker second tone from another class, so models that listen to different bands disagree
    other = TONES[CLASSES[(CLASSES.index(cls) + 1) % 3]]
    x += 0.2 * np.sin(2 * np.pi * other * t)
    return (x + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / "data" / c).mkdir(parents=True)
        for k in range(3):
            sf.write(root / "data" / c / f"{c}_{k}.wav", _clip(c, rng), SR)
    (root / "data" / "mid" / "broken.wav").write_bytes(b"not audio at all")
    bands = [[200, 500], [900, 1400], [2200, 3000]]
    # "wide" reads all three bands; "narrow" has a coarser view; "deaf" calls everything "mid"
    specs = {
        "wide": dict(bands=bands, sample_rate=SR),
        "narrow": dict(bands=[[250, 400], [1000, 1200], [2400, 2800]], sample_rate=16000),
        "deaf": dict(bands=bands, sample_rate=SR, weights=np.zeros((3, 3)).tolist(), bias=[0.0, 1.0, 0.0]),
    }
    for name, cfg in specs.items():
        sr = cfg["sample_rate"]
        m = build_model("bandpower", cfg, sample_rate=sr, labels=CLASSES, input=InputPolicy(length=int(sr * DUR)))
        save_model(m, root / "models" / name)
    return root


def _config(ws: Path, **over):
    raw = {
        "task": "tones",
        "seed": 3,
        "models": [str(ws / "models" / n) for n in ("wide", "narrow", "deaf")],
        "data": {"path": str(ws / "data"), "duration": DUR, "sample_rate": SR},
        "search": {"iters": 4, "tree_depth": 5, "min_box_size": 8},
        "extract": {},
        "clips_per_batch": 2,
        "n_boot": 200,
    }
    raw.update(over)
    return config_from_dict(raw, ws)


@pytest.fixture(scope="module")
def finished(workspace):
    out = workspace / "run_full"
    arrays = run_study(_config(workspace), out, quiet=True)
    return out, arrays


def test_study_tables_match_statistics(finished):
    out, arrays = finished
    assert arrays.labels.shape == (3, 3, 9)
    fails = pd.read_csv(out / "data" / "failures.csv")
    assert len(fails) == 1 and fails["path"].iloc[0].endswith("broken.wav")
    # a verified sufficient signal keeps its own model's label
    for f in range(3):
        v = arrays.valid[f]
        np.testing.assert_array_equal(arrays.labels[f, f][v], arrays.original[f][v])
    # the deaf model says "mid" on everything, the empty signal included
    assert set(arrays.original[2]) == {1} and arrays.empty[2] == 1
    # the tables are exactly what the statistics functions give on the stored arrays; trivial
    # clips (the empty signal already gets the label) are not transfer sources by default
    valid = arrays.valid & (arrays.true >= 0)[None]
    common = dict(trivial=arrays.trivial, empty=arrays.empty, num_classes=3,
                  model_names=list(arrays.model_names), n_boot=200, seed=3)
    pairs = pd.read_csv(out / "tables" / "pairs.csv")
    result = transfer_analysis(arrays.labels, arrays.original, valid=valid, true=arrays.true, **common)
    direct = result.pairs_frame(arrays.label_names)
    pd.testing.assert_frame_equal(pairs, direct.reset_index(drop=True), check_dtype=False, atol=1e-9)
    info = pd.read_csv(out / "tables" / "information.csv")
    direct_info = pairwise_information(arrays.labels, arrays.original, true=arrays.true, valid=valid,
                                       label_names=arrays.label_names, **common)
    pd.testing.assert_frame_equal(info, direct_info.reset_index(drop=True), check_dtype=False, atol=1e-9)
    metrics = pd.read_csv(out / "tables" / "metrics.csv")
    direct_m = classification_metrics(
        arrays.original, arrays.true, num_classes=3, model_names=list(arrays.model_names), n_boot=200, seed=3
    )
    pd.testing.assert_frame_equal(metrics[list(direct_m)], direct_m.reset_index(drop=True), check_dtype=False,
                                  atol=1e-9)
    # every table says per model how many clips were trivial and which label silence gets: the
    # deaf model's every verified signal is trivial, so it is no source at all
    trivial = (arrays.trivial & valid).sum(1)
    assert trivial[2] == valid[2].sum() > 0
    assert (pairs[pairs.source == "deaf"].n == 0).all()
    assert metrics.trivial.tolist() == trivial.tolist() and metrics.silence_label[2] == "mid"
    assert pairs.source_trivial.tolist() == np.repeat(trivial, 3).tolist()
    task = pd.read_csv(out / "tables" / "task.csv")
    assert f"deaf: {trivial[2]} (silence -> mid)" in task.trivial_by_model[0]
    assert (task.interval == "korn_graubard").all() and (pairs.interval == "clopper_pearson").all()
    # the wide model is right on every clip; the deaf one on a third
    acc = metrics.set_index("model")["accuracy"]
    assert acc["wide"] == 1.0 and abs(acc["deaf"] - 1 / 3) < 1e-6


def test_resume_of_a_finished_study_repeats_nothing(workspace, finished):
    out, arrays = finished
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}  # derived arrays.npz included
    again = run_study(_config(workspace), out, resume=True, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == stamps
    np.testing.assert_array_equal(again.labels, arrays.labels)
    with pytest.raises(StudyError, match="--resume"):
        run_study(_config(workspace), out, quiet=True)
    with pytest.raises(StudyError, match="different config"):
        run_study(_config(workspace, seed=4), out, resume=True, quiet=True)


def test_sharded_equals_single_device(workspace, finished):
    import jax

    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    _, multi = finished
    single = run_study(_config(workspace, devices=1), workspace / "run_single", quiet=True)
    np.testing.assert_array_equal(single.labels, multi.labels)
    np.testing.assert_array_equal(single.valid, multi.valid)
    np.testing.assert_allclose(single.size_fraction, multi.size_fraction)


def test_kill_and_resume_gives_identical_results(workspace, finished, tmp_path):
    _, reference = finished
    cfg_path = tmp_path / "study.toml"
    models = ", ".join(f'"{workspace / "models" / n}"' for n in ("wide", "narrow", "deaf"))
    cfg_path.write_text(
        f'task = "tones"\nseed = 3\nmodels = [{models}]\nclips_per_batch = 2\nn_boot = 200\n'
        f'[data]\npath = "{workspace / "data"}"\nduration = {DUR}\nsample_rate = {SR}\n'
        "[search]\niters = 4\ntree_depth = 5\nmin_box_size = 8\n"
    )
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "jsuff", "study", str(cfg_path), "--out", str(out), "--quiet", "--no-report"]
    first = out / "models" / "wide" / "explain" / "batch_00000.npz"
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert first.exists() and not (out / "arrays.npz").exists(), "the run was not interrupted part-way"
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = load_arrays(out)
    for field in ("labels", "original", "empty", "valid", "true", "trivial", "queries"):
        np.testing.assert_array_equal(getattr(resumed, field), getattr(reference, field), err_msg=field)
    np.testing.assert_allclose(resumed.size_fraction, reference.size_fraction)


def test_bad_inputs_fail_before_any_work(workspace, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="no audio clips"):
        run_study(_config(workspace, data={"path": str(tmp_path / "empty")}), tmp_path / "o1", quiet=True)
    bad = _config(workspace, models=[str(workspace / "models" / "wide"), str(tmp_path / "missing")])
    with pytest.raises(StudyError, match="'missing'.*failed to load"):
        run_study(bad, tmp_path / "o2", quiet=True)
    assert not (tmp_path / "o2").exists()
    with pytest.raises(StudyError, match="unknown key"):
        _config(workspace, search={"iterations": 3})
    other = tmp_path / "other_labels"
    save_model(build_model("bandpower", {"bands": [[1, 2], [3, 4], [5, 6]], "sample_rate": SR},
                           sample_rate=SR, labels=["a", "b", "c"]), other)
    with pytest.raises(StudyError, match="share one set of label names"):
        run_study(_config(workspace, models=[str(workspace / "models" / "wide"), str(other)]), tmp_path / "o3", quiet=True)


def test_manifest_input_and_cli_explain(workspace, tmp_path):
    rows = ["path,label,split"] + [
        f"{p.relative_to(workspace)},{p.parent.name},{'test' if i % 2 else 'train'}"
        for i, p in enumerate(sorted((workspace / "data").rglob("*_*.wav")))
    ]
    (workspace / "manifest.csv").write_text("\n".join(rows) + "\n")
    cfg = _config(workspace, data={"path": str(workspace / "manifest.csv"), "duration": DUR, "sample_rate": SR, "split": "test"},
                  models=[str(workspace / "models" / "wide")])
    arrays = run_study(cfg, tmp_path / "m", quiet=True)
    assert len(arrays.paths) == 4
    from jsuff.app.cli import main

    wav = sorted((workspace / "data" / "high").glob("*.wav"))[0]
    assert main(["explain", str(workspace / "models" / "wide"), str(wav), "--out", str(tmp_path / "e"),
                 "--iters", "4", "--depth", "5", "--min-box", "8"]) == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["verified"] is True
    assert (tmp_path / "e" / "sufficient.wav").exists() and (tmp_path / "e" / "explanation.png").exists()


# ---------------------------------------------------------------------------------------------
# The report (tests/test_report.py tests it in depth, and in a headless browser)


def test_report_files(finished):
    out, arrays = finished
    page = write_report(out)
    html = page.read_text()
    assert "Transfer matrix" in html and "<audio" in html and "flat-earther" in html.lower()
    # the deaf model's every clip is trivial: its empty signal already says "mid"
    deaf = (out / "report" / "models" / "deaf.html").read_text()
    assert deaf.count("the empty signal (everything removed) already gets this label") == len(arrays.paths)
    for name in ("transfer", "rates", "information"):
        assert (out / "report" / "figures" / f"{name}.png").stat().st_size > 1000
    text = summary_text(out)
    assert "Transfer matrix" in text and all(n in text for n in arrays.model_names)


def test_report_marks_trivial_clips(finished):
    # the deaf model gives "mid" to silence: each of its cards says so and lists nobody who accepts it
    out, arrays = finished
    write_report(out)
    slugs = {n: s for n, s in zip(arrays.model_names, ("wide", "narrow", "deaf"))}
    for fi, name in enumerate(arrays.model_names):
        page = (out / "report" / "models" / f"{slugs[name]}.html").read_text()
        cards = page.split("<div class='clip'>")[1:]
        assert len(cards) == len(arrays.paths), name
        for i, card in enumerate(cards):
            silent = bool(arrays.trivial[fi, i])
            assert ("label given to silence" in card) == silent, (name, i)
            assert ("is accepted by" in card) == (bool(arrays.valid[fi, i]) and not silent), (name, i)
    assert arrays.trivial[2].all()
