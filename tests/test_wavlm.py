"""WavLM: parity with transformers through the public convert path.

Every variant is a tiny transformers ``WavLMForSequenceClassification`` with random weights
everywhere (the relative position table, the gates' constants and linear maps, layer weights and
norms included), saved with ``save_pretrained``, converted by ``converters.convert`` without
``--arch`` (detected from config.json), written to a model directory and loaded back; the same raw
waveforms go through transformers' feature extractor + model and through the jsuff model.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.wavlm.modeling_wavlm import WavLMAttention  # noqa: E402

from converters import hf_wavlm  # noqa: E402
from converters.hf_wav2vec2 import FEATURE_EXTRACTOR_DEFAULTS  # noqa: E402
from jsuff.models import ModelError  # noqa: E402
from jsuff.models.wavlm import WavLMClassifier, WavLMConfig, relative_position_buckets  # noqa: E402
from tests.helpers.hf import (  # noqa: E402
    W2V2_TINY,
    assert_bad_folder_refused,
    assert_batch_vmap_loop_agree,
    assert_default_table,
    assert_speech_layers_agree,
    builder,
    check_custom_head,
    check_detected_and_listed,
    check_speech_model,
    drop_tensor,
    put_tensor,
    randomize_,
    set_json,
    waveforms,
)

# name -> (WavLMConfig overrides, feature extractor settings). 1600 samples give 159 frames.
VARIANTS = {
    # base layout: group-norm extractor, post-LN encoder; small buckets, so most distances are
    # past max_bucket_distance and share the last bucket
    "post-small-buckets": (dict(num_buckets=16, max_bucket_distance=40), dict(do_normalize=True)),
    # large layout: layer-norm extractor, pre-LN encoder, conv bias, weighted layer sum, odd
    # positional kernel, other activations and epsilon, no normalisation
    "stable-weighted": (
        dict(
            feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, use_weighted_layer_sum=True,
            num_buckets=32, max_bucket_distance=100, num_conv_pos_embeddings=15, hidden_act="gelu_new",
            feat_extract_activation="relu", layer_norm_eps=1e-3, num_labels=4,
        ),
        dict(do_normalize=False),
    ),
    # the released models' 320 buckets up to 800 frames, with a weighted layer sum (see CASES)
    "post-default-buckets-weighted": (dict(use_weighted_layer_sum=True, num_labels=5), dict(do_normalize=True)),
    # pre-LN without the weighted sum, the fewest buckets transformers allows to be meaningful
    "stable-tiny-buckets": (
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=4, max_bucket_distance=3),
        dict(do_normalize=True),
    ),
}
# (variant, samples): 9000 samples give 899 frames, past the default 800-frame maximum distance.
CASES = [
    ("post-small-buckets", 1600),
    ("stable-weighted", 1600),
    ("post-default-buckets-weighted", 9000),
    ("stable-tiny-buckets", 1600),
]


def _reference(variant: str, seed: int = 0):
    overrides, extractor = VARIANTS[variant]
    cfg = transformers.WavLMConfig(**{**W2V2_TINY, **overrides})
    torch.manual_seed(seed)
    model = randomize_(transformers.WavLMForSequenceClassification(cfg), seed)
    return model, transformers.Wav2Vec2FeatureExtractor(**extractor)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return builder(tmp_path_factory, _reference)


@pytest.mark.parametrize(("variant", "length"), CASES)
def test_logits_match_transformers(build, variant, length):
    check_speech_model(build, variant, waveforms(3, length, seed=length), "wavlm")


@pytest.mark.parametrize("variant", ["post-small-buckets", "stable-weighted"])
def test_per_layer_match(build, variant):
    model, fe, _, jm = build(variant)
    assert_speech_layers_agree(jm, WavLMClassifier, model.wavlm, fe, waveforms(2, 1600, seed=3))


@pytest.mark.parametrize(
    ("num_buckets", "max_distance"),
    # the released models' setting, the test variants', small odd ones, and two where a float64
    # computation would put two distances in another bucket than torch's float32 one
    [(320, 800), (16, 40), (32, 100), (4, 3), (5, 3), (12, 3000), (264, 800), (200, 4096)],
)
def test_relative_position_buckets_match_transformers(num_buckets, max_distance):
    relative = np.arange(-5000, 5001)
    attention = WavLMAttention(8, 2, num_buckets=num_buckets, max_distance=max_distance)
    ref = attention._relative_positions_bucket(torch.from_numpy(relative)).numpy()
    np.testing.assert_array_equal(relative_position_buckets(relative, num_buckets, max_distance), ref)


def test_jit_and_vmap(build):
    assert_batch_vmap_loop_agree(build("post-small-buckets")[3], waveforms(3, 1600, seed=7))


def test_defaults_match_transformers():
    assert_default_table(hf_wavlm.CONFIG_DEFAULTS, transformers.WavLMConfig())
    assert_default_table(FEATURE_EXTRACTOR_DEFAULTS, transformers.Wav2Vec2FeatureExtractor())
    ours = WavLMConfig()
    for key in ("num_buckets", "max_bucket_distance", "hidden_size", "num_conv_pos_embeddings"):
        assert getattr(ours, key) == hf_wavlm.CONFIG_DEFAULTS[key], key


def test_dense_tanh_head(tmp_path):
    """The custom speech-classification head over a WavLM encoder, recognised by its keys."""
    config = transformers.WavLMConfig(**{**W2V2_TINY, "num_buckets": 16, "max_bucket_distance": 40})
    base = transformers.WavLMModel(config)
    check_custom_head("wavlm", base, config, tmp_path / "hf", ["WavLMForSpeechClassification"], pooling="max", arch="wavlm")


def test_detected_and_listed(build, tmp_path, capsys):
    check_detected_and_listed(hf_wavlm, build("post-small-buckets")[2], tmp_path, capsys, "wavlm", "WavLM")


def test_config_errors():
    with pytest.raises(ModelError, match="WavLM config does not fit(.|\n)*unknown keys: buckets"):
        WavLMConfig.from_mapping({"buckets": 3})
    with pytest.raises(ModelError, match="max_bucket_distance 2 must exceed num_buckets // 4 = 4"):
        WavLMConfig(num_buckets=16, max_bucket_distance=2)
    with pytest.raises(ModelError, match="num_buckets must be at least 4"):
        WavLMConfig(num_buckets=2)


# ------------------------------------------------------------------------------------------------
# Bad checkpoints: one clear error naming the problem, nothing at DEST
# ------------------------------------------------------------------------------------------------

_L0 = "wavlm.encoder.layers.0.attention."
BAD = {
    "no-table": (drop_tensor(_L0 + "rel_attn_embed.weight"), ["missing", "encoder/layers/0/attention/rel_attn_embed/embedding"]),
    # only the first layer holds the table
    "second-table": (
        put_tensor("wavlm.encoder.layers.1.attention.rel_attn_embed.weight", (16, 2)),
        ["unexpected", "layers.1.attention.rel_attn_embed.weight"],
    ),
    "gate-shape": (put_tensor(_L0 + "gru_rel_pos_const", (1, 3, 1, 1)), ["mis-shaped", "gru_rel_pos_const", "(1, 3, 1, 1)"]),
    "ctc": (
        set_json("config.json", architectures=["WavLMForCTC"]),
        ["unsupported model class WavLMForCTC", "WavLMForSequenceClassification"],
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_checkpoint_is_named_and_nothing_written(build, tmp_path, kind):
    assert_bad_folder_refused(build("post-small-buckets")[2], tmp_path, *BAD[kind], arch="wavlm")
