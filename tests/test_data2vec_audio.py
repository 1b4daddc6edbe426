"""Data2Vec-audio: parity with transformers through the public convert path.

Every variant is a tiny transformers ``Data2VecAudioForSequenceClassification`` with random
weights everywhere, saved with ``save_pretrained``, converted by ``converters.convert`` without
``--arch`` (detected from config.json), written to a model directory and loaded back; the same raw
waveforms go through transformers' feature extractor + model and through the jsuff model.
Data2Vec-audio has one encoder ordering (post-LN) and one feature-encoder norm (layer norm), so the
variants differ in the positional conv stack (layers, odd and even kernels), the weighted layer
sum and the other settings.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from converters import hf_data2vec_audio  # noqa: E402
from converters.hf_wav2vec2 import FEATURE_EXTRACTOR_DEFAULTS  # noqa: E402
from jsuff.models import ModelError  # noqa: E402
from jsuff.models.data2vec_audio import Data2VecAudioClassifier, Data2VecAudioConfig  # noqa: E402
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

# W2V2_TINY's num_conv_pos_embeddings is a wav2vec2 kernel size; here it counts layers.
_SIZES = {k: v for k, v in W2V2_TINY.items() if k != "num_conv_pos_embeddings"}
# name -> (Data2VecAudioConfig overrides, feature extractor settings)
VARIANTS = {
    # the released models' stack: 5 layers of kernel 19
    "five-layers-k19": (dict(num_conv_pos_embeddings=5, conv_pos_kernel_size=19), dict(do_normalize=True)),
    # an even kernel (the last frame dropped in every layer), weighted layer sum, conv bias,
    # another feature-encoder activation, no normalisation
    "two-layers-k6-weighted": (
        dict(
            num_conv_pos_embeddings=2, conv_pos_kernel_size=6, use_weighted_layer_sum=True, conv_bias=True,
            feat_extract_activation="relu", num_labels=4,
        ),
        dict(do_normalize=False),
    ),
    # a single layer, other epsilon and feed-forward activation
    "one-layer-k3": (
        dict(num_conv_pos_embeddings=1, conv_pos_kernel_size=3, hidden_act="gelu_new", layer_norm_eps=1e-3),
        dict(do_normalize=True),
    ),
}


def _reference(variant: str, seed: int = 0):
    overrides, extractor = VARIANTS[variant]
    cfg = transformers.Data2VecAudioConfig(**{**_SIZES, **overrides})
    torch.manual_seed(seed)
    model = randomize_(transformers.Data2VecAudioForSequenceClassification(cfg), seed)
    return model, transformers.Wav2Vec2FeatureExtractor(**extractor)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return builder(tmp_path_factory, _reference)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_transformers(build, variant):
    check_speech_model(build, variant, waveforms(3, 1600, seed=1), "data2vec_audio")


@pytest.mark.parametrize("variant", ["five-layers-k19", "two-layers-k6-weighted"])
def test_per_layer_match(build, variant):
    model, fe, _, jm = build(variant)
    assert_speech_layers_agree(jm, Data2VecAudioClassifier, model.data2vec_audio, fe, waveforms(2, 1600, seed=3))


def test_jit_and_vmap(build):
    assert_batch_vmap_loop_agree(build("two-layers-k6-weighted")[3], waveforms(3, 1600, seed=7))


def test_defaults_match_transformers():
    assert_default_table(hf_data2vec_audio.CONFIG_DEFAULTS, transformers.Data2VecAudioConfig())
    assert_default_table(FEATURE_EXTRACTOR_DEFAULTS, transformers.Wav2Vec2FeatureExtractor())
    ours = Data2VecAudioConfig()
    for key in ("num_conv_pos_embeddings", "conv_pos_kernel_size", "hidden_size", "conv_bias"):
        assert getattr(ours, key) == hf_data2vec_audio.CONFIG_DEFAULTS[key], key


def test_dense_tanh_head(tmp_path):
    """The custom speech-classification head over a Data2Vec-audio encoder, recognised by its keys."""
    config = transformers.Data2VecAudioConfig(**{**_SIZES, "num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5})
    base = transformers.Data2VecAudioModel(config)
    architectures = ["Data2VecAudioForSpeechClassification"]
    check_custom_head("data2vec_audio", base, config, tmp_path / "hf", architectures, pooling="mean", arch="data2vec_audio")


def test_detected_and_listed(build, tmp_path, capsys):
    check_detected_and_listed(hf_data2vec_audio, build("one-layer-k3")[2], tmp_path, capsys, "data2vec_audio", "Data2Vec-audio")


def test_config_errors():
    with pytest.raises(ModelError, match="Data2Vec-audio config does not fit(.|\n)*unknown keys: num_buckets"):
        Data2VecAudioConfig.from_mapping({"num_buckets": 3})
    with pytest.raises(ModelError, match="Data2Vec-audio has only .*; got do_stable_layer_norm=True"):
        Data2VecAudioConfig(do_stable_layer_norm=True)
    with pytest.raises(ModelError, match="got feat_extract_norm='group'"):
        Data2VecAudioConfig(feat_extract_norm="group")


# ------------------------------------------------------------------------------------------------
# Bad checkpoints: one clear error naming the problem, nothing at DEST
# ------------------------------------------------------------------------------------------------

_POS = "data2vec_audio.encoder.pos_conv_embed.layers."
BAD = {
    "missing-layer": (drop_tensor(_POS + "1.conv.weight"), ["missing", "encoder/pos_conv_embed/layers/1/conv/kernel"]),
    # the config says two layers; a third is not this architecture
    "extra-layer": (put_tensor(_POS + "2.conv.bias", (32,)), ["unexpected", "pos_conv_embed.layers.2.conv.bias"]),
    "kernel": (set_json("config.json", conv_pos_kernel_size=7), ["mis-shaped", _POS + "0.conv.weight"]),
    "class": (
        set_json("config.json", architectures=["Data2VecAudioForCTC"]),
        ["unsupported model class Data2VecAudioForCTC", "Data2VecAudioForSequenceClassification"],
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_checkpoint_is_named_and_nothing_written(build, tmp_path, kind):
    assert_bad_folder_refused(build("two-layers-k6-weighted")[2], tmp_path, *BAD[kind], arch="data2vec_audio")
