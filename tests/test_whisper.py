"""Whisper encoder classifier: tiny random transformers models -> converters.convert -> same logits."""

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from converters import hf_whisper  # noqa: E402
from jsuff.models.whisper import Whisper, WhisperConfig  # noqa: E402
from tests.helpers.hf import (  # noqa: E402
    assert_bad_folder_refused,
    assert_batch_vmap_loop_agree,
    assert_defaults_match,
    assert_hidden_states_agree,
    assert_logits_agree,
    assert_old_attention_names_load,
    builder,
    convert_bin_folder,
    convert_without_defaults,
    drop_tensor,
    jsuff_hidden_states,
    put_tensor,
    randomize_,
    set_json,
    truncate_weights,
    waveforms,
)

# chunk_length 1 s at 16 kHz = 100 mel frames = 2 * max_source_positions
TINY = dict(
    d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1,
    decoder_attention_heads=2, decoder_ffn_dim=37, max_source_positions=50, classifier_proj_size=24,
)
VARIANTS = {
    "base": dict(TINY, num_mel_bins=80, num_labels=3),
    # large-v3's 128 bins, the weighted layer sum head, another activation in the layers
    "weighted-128": dict(
        TINY, num_mel_bins=128, num_labels=5, use_weighted_layer_sum=True, activation_function="relu"
    ),
}
# 0.5 s (padded to 1 s), 1.5 s (trimmed), and exactly 1 s; one length per compile.
CASES = [("base", 8000), ("base", 24000), ("weighted-128", 16000)]


def _reference(variant: str, seed: int = 0):
    spec = VARIANTS[variant]
    cfg = transformers.WhisperConfig(**spec, id2label={i: f"lang{i}" for i in range(spec["num_labels"])})
    torch.manual_seed(seed)
    model = randomize_(transformers.WhisperForAudioClassification(cfg), seed)
    if cfg.use_weighted_layer_sum:  # not uniform, so a wrong layer order shows
        with torch.no_grad():
            model.layer_weights.copy_(torch.linspace(-1.0, 1.0, cfg.encoder_layers + 1))
    fe = transformers.WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, chunk_length=1)
    return model, fe


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return builder(tmp_path_factory, _reference)


def _features(fe, clips, tensors="pt"):
    return fe(list(clips), sampling_rate=16000, return_tensors=tensors)["input_features"]


def _torch_logits(model, fe, clips):
    with torch.no_grad():
        return model(_features(fe, clips)).logits.numpy()


def test_defaults_match_transformers():
    fe, ours = transformers.WhisperFeatureExtractor(), WhisperConfig()
    keys = ("d_model", "encoder_layers", "max_source_positions", "num_mel_bins", "classifier_proj_size")
    assert_defaults_match(hf_whisper, transformers.WhisperConfig(), fe, ours, keys)
    assert ours.n_samples == fe.n_samples and ours.log_mel.n_frames == fe.nb_max_frames


@pytest.mark.parametrize(("variant", "length"), CASES)
def test_logits_match_transformers(build, variant, length):
    model, fe, _, jm = build(variant)
    clips = waveforms(3, length, seed=length)
    assert_logits_agree(jm(clips), _torch_logits(model, fe, clips))
    assert jm.labels == tuple(f"lang{i}" for i in range(model.config.num_labels))
    assert jm.sample_rate == 16000 and jm.input.length == fe.n_samples and jm.arch == "whisper"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hidden_states_match_per_layer(build, variant):
    model, fe, _, jm = build(variant)
    feats = _features(fe, waveforms(2, 16000, seed=2))
    with torch.no_grad():
        ref = model.encoder(feats, output_hidden_states=True).hidden_states
    assert len(ref) == model.config.encoder_layers + 1
    assert_hidden_states_agree(jsuff_hidden_states(Whisper, WhisperConfig, jm, feats), ref)


def test_bin_checkpoint(tmp_path):
    model, fe = _reference("base", seed=1)
    jm = convert_bin_folder(model, fe, tmp_path / "hf", "whisper")
    clips = waveforms(3, 8000, seed=5)
    assert_logits_agree(jm(clips), _torch_logits(model, fe, clips))


def test_json_defaults_applied(build, tmp_path):
    _, _, folder, jm = build("base")
    gone, bare = convert_without_defaults(folder, tmp_path / "bare", hf_whisper)
    assert {"num_mel_bins", "use_weighted_layer_sum", "activation_function", "n_fft"} <= set(gone)
    assert bare.config == jm.config


def test_jit_and_vmap(build):
    assert_batch_vmap_loop_agree(build("base")[3], waveforms(3, 8000, seed=7))


def test_detect(build, tmp_path):
    assert hf_whisper.detect(build("base")[2])
    assert not hf_whisper.detect(tmp_path)


# ------------------------------------------------------------------------------------------------
# Bad checkpoints: one clear error naming the problem, nothing at DEST
# ------------------------------------------------------------------------------------------------

_KEY = "encoder.layers.1.fc1.weight"


BAD = {
    "missing": (drop_tensor(_KEY), ["missing", "layers/1/mlp/fc1/kernel"]),
    # HF's Whisper k_proj has no bias; a checkpoint that carries one is not this architecture.
    "extra": (put_tensor("encoder.layers.0.self_attn.k_proj.bias", (32,)), ["unexpected", "k_proj.bias"]),
    "shape": (put_tensor(_KEY, (36, 32)), ["mis-shaped", _KEY, "(32, 36)", "(32, 37)"]),
    "corrupt": (truncate_weights, ["cannot read checkpoint", "model.safetensors"]),
    "class": (
        set_json("config.json", architectures=["WhisperForConditionalGeneration"]),
        ["unsupported model class WhisperForConditionalGeneration"],
    ),
    "chunk": (set_json("preprocessor_config.json", chunk_length=2), ["max_source_positions"]),
    "bins": (set_json("preprocessor_config.json", feature_size=128), ["feature_size=128"]),
    "no-config": (lambda f: (f / "config.json").unlink(), ["config.json"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_checkpoint_is_named_and_nothing_written(build, tmp_path, kind):
    assert_bad_folder_refused(build("base")[2], tmp_path, *BAD[kind], arch="whisper")


def test_directories_saved_with_the_old_attention_names_load(build, tmp_path):
    assert_old_attention_names_load(build("base")[3], tmp_path)
