"""Whisper explains the clip's own samples (issue 16): its input policy says the model pads
internally, so a 0.68 s clip gets a grid of its own bins and a 0.68 s sufficient signal, and the
model gives the unpadded clip the logits of the padded one. No torch needed (random weights)."""

import json

import numpy as np
import pytest

from jsuff import explain
from jsuff.models import build_model, fit_length, load_model, save_model
from jsuff.models.whisper import WhisperConfig
from jsuff.search import SearchConfig

SR = 16000
# 1 s of input (n_samples) = 100 mel frames = 2 * max_source_positions
CONFIG = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=37, max_source_positions=50,
              classifier_proj_size=8, num_labels=3, n_samples=SR)


@pytest.fixture(scope="module")
def whisper():
    return build_model("whisper", CONFIG, sample_rate=SR, labels=["a", "b", "c"],
                       input=WhisperConfig(**CONFIG).input_policy())


def _clip(n: int) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)


def test_the_policy_declares_internal_padding(whisper):
    policy = whisper.input
    assert policy.length == SR and policy.pads_internally
    assert whisper.prepare(_clip(10880)).shape == (10880,)  # shorter: left as it is
    assert whisper.prepare(_clip(24000)).shape == (SR,)  # longer: still cropped to what the model hears
    assert "up to 16000 samples (shorter: padded by the model" in repr(whisper)


def test_unpadded_logits_equal_padded_ones(whisper):
    x = _clip(10880)  # 0.68 s
    padded = np.pad(x, (0, SR - x.size))
    np.testing.assert_array_equal(np.asarray(whisper(x[None])), np.asarray(whisper(padded[None])))


def test_a_short_clip_is_explained_over_its_own_samples(whisper):
    x = _clip(10880)
    empty = int(np.argmax(np.asarray(whisper(np.zeros((1, 10880), np.float32)))))
    target = (empty + 1) % 3  # a label silence does not get, so the search runs
    e = explain(whisper, x, config=SearchConfig(iters=2, tree_depth=2, min_box_size=64), target=target, quiet=True)
    assert e.grid_shape == (10880 // 2 + 1,) == (5441,)  # not 30 s (or here 1 s) of padding
    assert e.sufficient_waveform.shape == (10880,) and not e.empty_is_target and e.search_queries > 0


def test_directories_saved_before_the_flag_read_the_architectures_word(whisper, tmp_path):
    save_model(whisper, tmp_path / "w")
    meta_path = tmp_path / "w" / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["input"]["pads_internally"] is True
    del meta["input"]["pads_internally"]  # as written before the flag existed
    meta_path.write_text(json.dumps(meta))
    assert load_model(tmp_path / "w").input.pads_internally
    meta["input"]["pads_internally"] = False  # written on purpose: kept
    meta_path.write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "w")
    assert not loaded.input.pads_internally and fit_length(_clip(100), loaded.input).shape == (SR,)
