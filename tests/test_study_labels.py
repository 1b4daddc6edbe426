"""Studies with a label view (issue 17, item 4): two toy models with different label sets, a
``[labels]`` table that maps them onto one task, checked against a NumPy reference; invalid views
refused before any work; the view in the fingerprint and on the report page."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jsuff.app.report import write_report
from jsuff.app.config import config_to_dict, fingerprint
from jsuff.app.store import iter_explanations
from jsuff.app.study import StudyError, config_from_dict, load_arrays, load_config, run_study
from jsuff.models import InputPolicy, build_model, load_model, save_model

SR = 8000
DUR = 0.25
CLASSES = ["low", "mid", "high"]
# the tagger's outputs: other names, one the task has no class for, and an HTML-ish one
TAGS = ["bass", "piano", "mid", "treble_a", "treble<b>"]
TAG_BANDS = [[200, 500], [3500, 3900], [900, 1400], [2200, 2600], [2600, 3000]]
VIEW = {"classes": CLASSES, "map": {"tagger": {"low": ["bass"], "high": ["treble_a", "treble<b>"]}}}
# per clip: (label, tone frequencies with amplitudes); "mid" clips carry a louder 3.7 kHz tone,
# which only the tagger's unmapped "piano" output hears; "violin" is not a class of the view
CLIPS = [
    ("low", {300.0: 0.5}), ("low", {320.0: 0.5}),
    ("mid", {1100.0: 0.4, 3700.0: 0.8}), ("mid", {1200.0: 0.4, 3700.0: 0.8}),
    ("high", {2400.0: 0.5}), ("high", {2800.0: 0.5}),
    ("violin", {700.0: 0.5}),
]  # fmt: skip


def _clip(tones: dict[float, float], rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SR * DUR)) / SR
    x = sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f, a in tones.items())
    return (x + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for k, (label, tones) in enumerate(CLIPS):
        (root / "data" / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / "data" / label / f"{label}_{k}.wav", _clip(tones, rng), SR)
    plain = build_model("bandpower", {"bands": [[200, 500], [900, 1400], [2200, 3000]], "sample_rate": SR},
                        sample_rate=SR, labels=CLASSES, input=InputPolicy(length=int(SR * DUR)))
    save_model(plain, root / "models" / "plain")
    tagger = build_model("bandpower", {"bands": TAG_BANDS, "sample_rate": 16000}, sample_rate=16000,
                         labels=TAGS, input=InputPolicy(length=int(16000 * DUR)))
    save_model(tagger, root / "models" / "tagger")
    return root


def _raw(ws: Path, **over) -> dict:
    raw = {
        "task": "bands",
        "seed": 2,
        "models": [str(ws / "models" / "plain"), str(ws / "models" / "tagger")],
        "data": {"path": str(ws / "data"), "duration": DUR, "sample_rate": SR},
        "search": {"iters": 3, "tree_depth": 4, "min_box_size": 8},
        "clips_per_batch": 4,
        "n_boot": 100,
        "labels": VIEW,
    }
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def finished(workspace):
    out = workspace / "run"
    return out, run_study(config_from_dict(_raw(workspace)), out, quiet=True)


def _view_labels(model_dir: Path, x: np.ndarray, rate: int) -> np.ndarray:
    """NumPy reference: a model's task labels on clips at ``rate``, by tag name through VIEW."""
    model = load_model(model_dir)
    logits = np.asarray(model(model.prepare(x, rate)))
    table = VIEW["map"].get(model_dir.name, {})
    tags = [table.get(c, [c]) for c in CLASSES]
    scores = np.stack([logits[:, [model.labels.index(t) for t in ts]].max(1) for ts in tags], 1)
    return scores.argmax(1)


def test_two_label_sets_through_a_view(workspace, finished):
    out, arrays = finished
    assert arrays.label_names == tuple(CLASSES)
    clips = np.stack([sf.read(p, dtype="float32")[0] for p in arrays.paths])
    labels = [Path(p).parent.name for p in arrays.paths]
    # true labels are the view's classes; "violin" is none of them
    assert arrays.true.tolist() == [CLASSES.index(lbl) if lbl in CLASSES else -1 for lbl in labels]
    for mi, name in enumerate(("plain", "tagger")):
        ref = _view_labels(workspace / "models" / name, clips, SR)
        np.testing.assert_array_equal(arrays.original[mi], ref, err_msg=name)
        has = arrays.true >= 0
        np.testing.assert_array_equal(arrays.original[mi][has], arrays.true[has], err_msg=name)
    # the tagger's loudest output on the mid clips is "piano", which the view ignores
    tagger = load_model(workspace / "models" / "tagger")
    mid = [i for i, lbl in enumerate(labels) if lbl == "mid"]
    raw = np.asarray(tagger(tagger.prepare(clips[mid], SR)))
    assert [TAGS[j] for j in raw.argmax(1)] == ["piano", "piano"]
    # the transfer labels are the listeners' views of the sources' sufficient signals
    rates = {"plain": SR, "tagger": 16000}
    for fi, f in enumerate(("plain", "tagger")):
        batches = list(iter_explanations(out, f))
        order = np.argsort(np.concatenate([b["index"] for b in batches]))
        suff = np.concatenate([b["sufficient"] for b in batches])[order]
        for gi, g in enumerate(("plain", "tagger")):
            ref = _view_labels(workspace / "models" / g, suff, rates[f])
            np.testing.assert_array_equal(arrays.labels[fi, gi], ref, err_msg=f"{f} -> {g}")
        v = arrays.valid[fi]
        assert v.any()
        np.testing.assert_array_equal(arrays.labels[fi, fi][v], arrays.original[fi][v])
    record = json.loads((out / "study.json").read_text())
    assert record["label_view"] == [
        {"model": "plain", "classes": {"low": ["low"], "mid": ["mid"], "high": ["high"]}},
        {"model": "tagger", "classes": {"low": ["bass"], "mid": ["mid"], "high": ["treble_a", "treble<b>"]}},
    ]
    assert json.loads((out / "summary.json").read_text())["unknown_class_clips"] == {"violin": 1}


def test_view_is_in_the_fingerprint_and_round_trips(workspace, finished, tmp_path):
    out, arrays = finished
    cfg = config_from_dict(_raw(workspace))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    other = {"classes": CLASSES, "map": {"tagger": {"low": ["bass"], "high": ["treble_a"]}}}
    changed = config_from_dict(_raw(workspace, labels=other))
    assert fingerprint(changed) != fingerprint(cfg)
    with pytest.raises(StudyError, match="different config"):
        run_study(changed, out, resume=True, quiet=True)
    # without [labels] the record holds no view, as before label views existed
    plain = config_from_dict({k: v for k, v in _raw(workspace).items() if k != "labels"})
    assert plain.labels is None and "labels" not in config_to_dict(plain)
    # the same view written as TOML tables reads back to the same config
    toml = tmp_path / "study.toml"
    models = ", ".join(json.dumps(str(workspace / "models" / n)) for n in ("plain", "tagger"))
    toml.write_text(
        f'task = "bands"\nseed = 2\nmodels = [{models}]\nclips_per_batch = 4\nn_boot = 100\n'
        f'[data]\npath = {json.dumps(str(workspace / "data"))}\nduration = {DUR}\nsample_rate = {SR}\n'
        "[search]\niters = 3\ntree_depth = 4\nmin_box_size = 8\n"
        '[labels]\nclasses = ["low", "mid", "high"]\n'
        '[labels.map.tagger]\nhigh = ["treble_a", "treble<b>"]\nlow = ["bass"]\n'
    )
    assert fingerprint(load_config(toml)) == fingerprint(cfg)


def test_report_shows_the_view_escaped(finished):
    out, _ = finished
    page = write_report(out).read_text()
    assert "Label view" in page
    assert "treble_a, treble&lt;b&gt;" in page and "treble<b>" not in page
    assert "1 clip(s) have a label that is not a class of the label view" in page


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"classes": "low"}, r'\[labels\] classes = "low": expected a valid list'),
        ({"classes": ["low"]}, r"\[labels\] classes = .*at least 2 items"),
        ({"classes": CLASSES, "colours": 1}, r"\[labels\] colours: unknown key; allowed: classes, map"),
        ({"map": {}}, r"\[labels\] classes: missing"),
        ({"classes": CLASSES, "map": {"tagger": {"low": "bass"}}}, r'\[labels.map.tagger\] low = "bass": expected a valid list'),
        ({"classes": CLASSES, "map": {"tagger": {"low": [3]}}}, r"\[labels.map.tagger\] low.0 = 3: expected a valid string"),
        ({"classes": ["low", "low"]}, r"\[labels\] class names must be distinct; repeated: 'low'"),
        ({"classes": CLASSES, "map": {"taggr": {"low": ["bass"]}}}, r"\[labels.map\] has tables for 'taggr'.*its models: 'plain', 'tagger'"),
        ({"classes": CLASSES, "map": {"tagger": {"low": []}}}, r"\[labels\] class 'low' has no tags for model 'tagger'"),
        ({"classes": CLASSES, "map": {"tagger": {"loud": ["bass"]}}}, r"\[labels\] the \[labels.map\] table of 'tagger' maps 'loud', which are not among"),
    ],
)  # fmt: skip
def test_invalid_view_is_a_config_error(workspace, labels, message):
    with pytest.raises(StudyError, match=r"^study config: .*" + message):
        config_from_dict(_raw(workspace, labels=labels))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"low": ["bass"]}, r"\[labels\] class 'high' has no tags for model 'tagger': it has no output of that name"),
        ({"low": ["bass"], "high": ["trebel_a"]}, r"\[labels\] tag 'trebel_a' \(class 'high'\) is not an output of model 'tagger'; did you mean 'treble_a'"),
        ({"low": ["bass", "treble_a"], "high": ["treble_a"]}, r"\[labels\] tag 'treble_a' of model 'tagger' is mapped to two classes, 'low' and 'high'"),
    ],
)  # fmt: skip
def test_view_that_does_not_fit_a_model_is_refused_before_any_work(workspace, tmp_path, table, message):
    cfg = config_from_dict(_raw(workspace, labels={"classes": CLASSES, "map": {"tagger": table}}))
    out = tmp_path / "never"
    with pytest.raises(StudyError, match=r"^study config: " + message):
        run_study(cfg, out, quiet=True)
    assert not out.exists()


def test_all_config_problems_together(workspace):
    raw = _raw(workspace, labels={"classes": "low"}, search={"iters": 1.5})
    with pytest.raises(StudyError, match=r"2 problems") as e:
        config_from_dict(raw)
    assert "[search] iters = 1.5" in str(e.value) and '[labels] classes = "low"' in str(e.value)


def test_resume_reads_original_scores_written_before_label_views(workspace, tmp_path):
    """Without [labels], a model whose labels are the first model's in another order is mapped onto
    that order; an original.npz of jsuff before label views (raw logits, no classes) resumes
    to the same arrays."""
    reordered = build_model("bandpower", {"bands": [[2200, 3000], [200, 500], [900, 1400]], "sample_rate": SR},
                            sample_rate=SR, labels=["high", "low", "mid"], input=InputPolicy(length=int(SR * DUR)))
    save_model(reordered, tmp_path / "reordered")
    raw = _raw(workspace, models=[str(workspace / "models" / "plain"), str(tmp_path / "reordered")])
    del raw["labels"]
    cfg = config_from_dict(raw)
    out = tmp_path / "run"
    first = run_study(cfg, out, quiet=True)
    np.testing.assert_array_equal(first.original[1], first.original[0])  # same bands, same answers
    path = out / "models" / "reordered" / "original.npz"
    with np.load(path) as z:
        assert z["classes"].tolist() == ["low", "mid", "high"]
        raw_logits = {k: z[k][..., [2, 0, 1]] for k in ("logits", "empty_logits")}  # back to high, low, mid
    np.savez(path, **raw_logits)
    (out / "arrays.npz").unlink()
    again = run_study(cfg, out, resume=True, quiet=True)
    np.testing.assert_array_equal(again.original, first.original)
    np.testing.assert_array_equal(again.empty, first.empty)
    np.testing.assert_array_equal(load_arrays(out).labels, first.labels)
