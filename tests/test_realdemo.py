"""The real-weights study (jsuff.app.realdemo) end to end, reduced: real converted detectors on speech
synthesised by espeak-ng and generated non-speech, and crepe tiny/full on generated pitches."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from jsuff.models.crepe import bin_frequency, labels as crepe_labels
from jsuff.app.realdemo import (
    PITCH_MODELS,
    SPEECH_MODELS,
    RealDemoConfig,
    RealDemoError,
    make_pitch_task,
    make_speech_task,
    missing_requirements,
    nearest_crepe_bin,
    run_real_demo,
)


def _require_everything() -> None:
    if shutil.which("espeak-ng") is None and os.environ.get("CI"):
        pytest.fail("CI must provide espeak-ng (.ci/run installs it)")
    missing = missing_requirements()
    if missing:
        pytest.skip("the real-weights study needs " + ", ".join(missing))


def test_nearest_crepe_bin_names_the_closest_pitch():
    f0 = np.geomspace(40.0, 1900.0, 200)
    k = nearest_crepe_bin(f0)
    cents_off = np.abs(1200 * np.log2(bin_frequency(k) / f0))
    assert cents_off.max() <= 10.0 + 1e-9  # bins are 20 cents apart
    assert crepe_labels()[int(nearest_crepe_bin(220.0))].startswith("220.")


def test_pitch_task_labels_are_crepe_bins(tmp_path):
    manifest = make_pitch_task(tmp_path, n_clips=4, duration=0.1)
    rows = pd.read_csv(manifest)
    assert list(rows["kind"]) == ["tone", "note", "tone", "note"]
    assert set(rows["label"]) <= set(crepe_labels())
    for p in rows["path"]:
        assert (tmp_path / p).stat().st_size > 44


def test_speech_task_without_espeak_is_a_clear_error(tmp_path, monkeypatch):
    import jsuff.app.realdemo as rd

    monkeypatch.setattr(rd.shutil, "which", lambda name: None)
    with pytest.raises(RealDemoError, match="espeak-ng"):
        make_speech_task(tmp_path / "data")
    assert not (tmp_path / "data").exists()
    assert any("espeak-ng" in m for m in missing_requirements([], speech=True))


def test_speech_clips_are_speech_to_a_real_detector(tmp_path):
    _require_everything()
    from jsuff.app.realdemo import convert_models
    from jsuff.app.config import DataConfig
    from jsuff.app.data import discover, load_clips
    from jsuff.app.devices import predict_logits
    from jsuff.models import load_model

    manifest = make_speech_task(tmp_path / "data", n_speech=3, n_nonspeech=3, duration=0.64)
    data = DataConfig(path=str(manifest), duration=0.64)
    clips, kept, _ = load_clips(discover(data), data)
    (path,) = convert_models([("silero_jit", SPEECH_MODELS["silero_jit"])], tmp_path / "models")
    model = load_model(path)
    said = [model.labels[i] for i in predict_logits(model, clips).argmax(-1)]
    truth = [it.label for it in kept]
    assert sum(s == t for s, t in zip(said, truth, strict=True)) >= 5, (said, truth)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    _require_everything()
    out = tmp_path_factory.mktemp("realdemo")
    cfg = RealDemoConfig(
        n_speech=2, n_nonspeech=2, n_pitch=2, pitch_duration=0.02, iters=1, tree_depth=2,
        pitch_tree_depth=1, pitch_min_box_size=32, n_boot=50,
    )
    return cfg, run_real_demo(out, cfg, quiet=True)


def test_reduced_demo_tables_and_reports(reduced):
    cfg, result = reduced
    speech = result.studies["speech"]
    pairs = pd.read_csv(speech / "tables" / "pairs.csv")
    names = list(SPEECH_MODELS)
    assert len(pairs) == len(names) ** 2  # the full 5 x 5 transfer matrix, self-pairs included
    assert set(pairs["source"]) == set(names) == set(pairs["target"])
    assert ((pairs["rate"] >= 0) & (pairs["rate"] <= 1) | pairs["rate"].isna()).all()
    flat = pd.read_csv(speech / "tables" / "flat_earthers.csv")
    assert len(flat) == len(names) and set(flat["model"]) == set(names) and "flat_earther" in flat
    info = pd.read_csv(speech / "tables" / "information.csv")
    assert {"mi_source", "mi_true", "nmi_arithmetic_source"} <= set(info.columns)
    assert len(info) == len(names) ** 2
    pitch = result.studies["pitch"]
    assert len(pd.read_csv(pitch / "tables" / "pairs.csv")) == len(PITCH_MODELS) ** 2
    assert not (pitch / "tables" / "flat_earthers.csv").exists()  # needs three models
    assert (pitch / "tables" / "information.csv").exists()
    for task in ("speech", "pitch"):
        assert result.reports[task].is_file()
        assert (result.studies[task] / "report" / "figures" / "transfer.png").stat().st_size > 1000
        assert "Transfer matrix" in result.summaries[task]


def test_reduced_demo_resumes_without_repeating_work(reduced, tmp_path):
    cfg, result = reduced
    stamps = {p: p.stat().st_mtime_ns for p in result.out_dir.rglob("*.npz")}
    again = run_real_demo(result.out_dir, cfg, quiet=True, report=False)
    assert {p: p.stat().st_mtime_ns for p in result.out_dir.rglob("*.npz")} == stamps
    assert again.summaries == result.summaries
