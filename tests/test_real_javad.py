"""javad port vs the javad package's own Processor and JaVAD model (skips when not installed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.real_packages import check_jit_eager_vmap, clips, require

require("javad", "javad")

import torch  # noqa: E402

from converters import ConversionError, convert  # noqa: E402
from jsuff.models import ModelError  # noqa: E402
from jsuff.models._detectors import frames_fn, mel_filters, sliding_min  # noqa: E402
from jsuff.models.javad import VARIANTS, JavadConfig  # noqa: E402

# Clip lengths per variant: 1.5 windows or more, so the last window is zero-padded.
SECONDS = {"tiny": 1.0, "balanced": 2.5, "precise": 4.0}


@pytest.fixture(scope="module")
def javad():
    import javad  # imports without torchaudio

    return javad


@pytest.fixture(scope="module")
def models():
    return {}


def _model(models, name):
    if name not in models:
        models[name] = convert(f"pkg:javad/{name}", None)
    return models[name]


def _tuples(v):
    return tuple(_tuples(e) for e in v) if isinstance(v, (list, tuple)) else v


def test_variant_table_matches_package(javad):
    defaults = JavadConfig()
    for name, ours in VARIANTS.items():
        info = javad.MODELINFO[name]
        cfg = JavadConfig.from_mapping(ours)
        args = {**{k: getattr(defaults, k) for k in ("n_state", "n_head", "n_layer", "output_dim")}, **info["args"]}
        for key in ("n_state", "n_head", "n_layer", "output_dim"):
            assert getattr(cfg, key) == args[key], (name, key)
        seq = args.get("seq", {"conv1": defaults.conv1, "conv2": defaults.conv2, "conv3": defaults.conv3})
        for key, spec in seq.items():
            assert getattr(cfg, key) == _tuples(spec), (name, key)
        assert cfg.n_mels == info["n_mels"] and cfg.threshold == info["threshold"]
        assert cfg.window_frames == round(info["input_length"] * 100) == info["output_length"]


def test_mel_filters_match_package_asset(javad):
    for n in (64, 80):
        ours = mel_filters(400, n, 16000, 0.0, 8000.0, scale="slaney")
        np.testing.assert_allclose(ours, javad.load_mel_filters(n).numpy().T, atol=1e-7)


@pytest.mark.parametrize("name", ["tiny", "balanced", "precise"])
def test_frame_outputs_match_processor(javad, models, name):
    m = _model(models, name)
    x = clips(SECONDS[name])
    if name == "precise":
        x = x[2:]  # the largest model: one clip keeps the test short
    ours = np.asarray(jax.jit(frames_fn(m))(m.params, jnp.asarray(x)))
    processor = javad.Processor(model_name=name)
    ref = np.stack([processor.logits(torch.from_numpy(xi.copy())).numpy() for xi in x])
    assert ours.shape == ref.shape == (len(x), x.shape[1] // 160)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_clip_decision_matches_processor_intervals(javad, models):
    m = _model(models, "balanced")
    x = clips(SECONDS["balanced"])
    processor = javad.Processor(model_name="balanced")
    expected = [len(processor.intervals(torch.from_numpy(xi.copy()))) > 0 for xi in x]
    assert (np.asarray(m(x)).argmax(-1) == 1).tolist() == expected
    assert any(expected) and not all(expected)


def test_run_rule_matches_processor_interval_filter(javad):
    # Processor.intervals: frames > threshold -> runs -> keep runs of >= min_duration (0.3 s).
    rng = np.random.default_rng(0)
    outputs = np.repeat(rng.uniform(0.0, 1.0, size=(64, 30)), rng.integers(3, 25, size=30), axis=1)[:, :200]
    score = np.asarray(jnp.max(sliding_min(jnp.asarray(outputs, jnp.float32), 30), axis=-1) - 0.5)
    for row, s in zip(outputs, score):
        runs = javad.Processor.predictions_to_intervals(torch.from_numpy(row > 0.5), 100)
        lengths = [round((e - b) * 100) for b, e in runs]
        if 30 in lengths:
            continue  # the package's float seconds put exactly 0.3 s on either side; jsuff says speech
        assert (s > 0) == any(e - b >= 0.3 for b, e in runs)


def test_jit_eager_vmap(models):
    m = _model(models, "tiny")
    check_jit_eager_vmap(m, clips(0.64), atol=1e-5)  # exactly one window


def test_short_clip_and_bad_sources(models, tmp_path):
    m = _model(models, "tiny")
    with pytest.raises(ModelError, match="T >= 10240"):
        m.apply(m.params, jnp.zeros((1, 8000)))
    with pytest.raises(ConversionError, match="tiny, balanced, precise"):
        convert("pkg:javad/huge", None)
    bad = tmp_path / "other.pt"
    torch.save({"state_dict": {"classification_head.3.weight": torch.zeros(7, 3)}}, bad)
    with pytest.raises(ConversionError, match="not a javad checkpoint"):
        convert(bad, None, arch="javad")
