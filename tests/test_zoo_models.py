"""The committed zoo: every member loads and reaches its recorded held-out accuracy; the demo runs."""

import json

import numpy as np
import pytest

from jsuff.app.cli import main
from jsuff.models.base import fit_length
from jsuff.app.devices import predict_logits
from jsuff.app.zoo import ZOO, ZOO_DIR, load_zoo, make_dataset, read_zoo_json, zoo_accuracy

# Accuracy on 10 fresh clips per class may fall below the 20-per-class figure by chance; 0.15
# is ~2.5 binomial standard deviations at 80%, and far above chance (0.2), so a broken model fails.
TOLERANCE = 0.15
PER_CLASS = 10


@pytest.fixture(scope="module")
def zoo():
    return load_zoo()


@pytest.fixture(scope="module")
def held_out():
    record = read_zoo_json()["data"]
    # Clips are generated per (seed, split, class, index): these are the first test clips.
    ds = make_dataset(record["seed"], (1, 0, PER_CLASS), sample_rate=record["sample_rate"])
    return ds.subset("test")


def test_zoo_records_four_architectures(zoo):
    record = read_zoo_json()
    assert sorted(zoo) == sorted(m.name for m in ZOO)
    assert len({m.arch for m in zoo.values()}) == 4
    assert record["data"]["classes"] == list(next(iter(zoo.values())).labels)
    # the package finds its zoo next to its own source (editable install or wheel alike)
    assert (ZOO_DIR / "zoo.json").is_file() and ZOO_DIR.parent.name == "zoo"


@pytest.mark.parametrize("name", [m.name for m in ZOO])
def test_member_reaches_recorded_accuracy(zoo, held_out, name):
    model = zoo[name]
    recorded = zoo_accuracy()[name]
    assert recorded >= 0.6, f"{name} was recorded at {recorded:.2f}, barely above chance"
    x = np.asarray(fit_length(held_out.waveforms, model.input))
    pred = predict_logits(model, x, batch=25).argmax(-1)
    acc = float(np.mean(pred == held_out.labels))
    assert acc >= recorded - TOLERANCE, f"{name}: {acc:.2f} on fresh clips, recorded {recorded:.2f}"


@pytest.mark.slow
def test_quick_demo_writes_report_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("Transfer matrix", "Flat-earther", "Held-out accuracy", "Total time", "Report:"):
        assert needle in text, needle
    report = out / "study" / "report" / "index.html"
    assert report.is_file() and str(report.resolve()) in text
    meta = json.loads((out / "study" / "study.json").read_text())
    assert meta["config"]["task"] == "generated-music"
    assert [m["name"] for m in meta["config"]["models"]] == [m.name for m in ZOO]
    # a rerun resumes the finished study instead of refusing or recomputing it
    stamps = {p: p.stat().st_mtime_ns for p in (out / "study").rglob("batch_*.npz")}
    assert stamps
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "study").rglob("batch_*.npz")} == stamps
    # other settings on the same directory: a clear error, not a silent mix
    assert main(["demo", "--quick", "--clips", "6", "--out", str(out)]) == 2
    assert "--fresh" in capsys.readouterr().err
