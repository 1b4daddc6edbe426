"""AST: tiny random transformers models -> converters.convert -> the same logits from waveforms."""

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import converters  # noqa: E402
from converters import hf_ast  # noqa: E402
from converters.common import ConversionError  # noqa: E402
from jsuff.models.ast import AST, ASTConfig  # noqa: E402
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
    copy_folder,
    drop_tensor,
    edit_json,
    jsuff_hidden_states,
    put_tensor,
    randomize_,
    set_json,
    truncate_weights,
    waveforms,
)

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_mel_bins=16,
    max_length=64, patch_size=16, frequency_stride=10, time_stride=10,
)
VARIANTS = {
    "base": dict(TINY, num_labels=4),
    # no q/k/v bias, unequal strides, tanh GELU and another epsilon: each changes the numbers
    "nobias-strides": dict(
        TINY, num_labels=3, qkv_bias=False, frequency_stride=4, time_stride=12,
        hidden_act="gelu_new", layer_norm_eps=1e-5,
    ),
}
# 0.5 s (48 frames: padded to 64), 1.2 s (118 frames: cropped), 250 samples (no whole frame).
# Each length compiles the model once, so the second variant runs one of them.
CASES = [("base", 8000), ("base", 19200), ("base", 250), ("nobias-strides", 19200)]


def _reference(variant: str, seed: int = 0):
    spec = VARIANTS[variant]
    cfg = transformers.ASTConfig(**spec, id2label={i: f"c{i}" for i in range(spec["num_labels"])})
    torch.manual_seed(seed)
    model = randomize_(transformers.ASTForAudioClassification(cfg), seed)
    fe = transformers.ASTFeatureExtractor(
        num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, mean=-3.1, std=3.7
    )
    return model, fe


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return builder(tmp_path_factory, _reference)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def converted(request, build):
    return build(request.param)


def _torch_logits(model, fe, clips):
    feats = fe(list(clips), sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        return model(feats).logits.numpy()


# transformers warns that one of the 128 default Kaldi filters is empty (true, and reproduced).
@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values:UserWarning")
def test_defaults_match_transformers():
    fe, ours = transformers.ASTFeatureExtractor(), ASTConfig()
    keys = ("hidden_size", "num_hidden_layers", "layer_norm_eps", "max_length", "num_mel_bins")
    assert_defaults_match(hf_ast, transformers.ASTConfig(), fe, ours, keys)
    assert (ours.mean, ours.std) == (fe.mean, fe.std)


@pytest.mark.parametrize(("variant", "length"), CASES)
def test_logits_match_transformers(build, variant, length):
    model, fe, _, jm = build(variant)
    clips = waveforms(3, length, seed=length)
    assert_logits_agree(jm(clips), _torch_logits(model, fe, clips))
    assert jm.labels == tuple(model.config.id2label[i] for i in range(len(jm.labels)))
    assert jm.sample_rate == 16000 and jm.input.length is None and jm.arch == "ast"


def test_hidden_states_match_per_layer(converted):
    model, fe, _, jm = converted
    feats = fe(list(waveforms(2, 12000)), sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        ref = model(feats, output_hidden_states=True).hidden_states
    assert len(ref) == model.config.num_hidden_layers + 1
    assert_hidden_states_agree(jsuff_hidden_states(AST, ASTConfig, jm, feats), ref)


def test_bin_checkpoint_with_transformers5_names(tmp_path):
    model, fe = _reference("base", seed=1)
    jm = convert_bin_folder(model, fe, tmp_path / "hf", "ast")
    clips = waveforms(2, 8000, seed=5)
    assert_logits_agree(jm(clips), _torch_logits(model, fe, clips))


def test_json_defaults_applied_and_config_override(build, tmp_path):
    _, _, folder, jm = build("base")
    gone, bare = convert_without_defaults(folder, tmp_path / "bare", hf_ast)
    assert {"hidden_act", "layer_norm_eps", "qkv_bias", "sampling_rate", "do_normalize"} <= set(gone)
    assert bare.config == jm.config
    override = tmp_path / "config.json"
    override.write_text((folder / "config.json").read_text())
    edit_json(override, id2label={"0": "w", "1": "x", "2": "y", "3": "z"})
    assert converters.convert(folder, None, config=override).labels == ("w", "x", "y", "z")


def test_jit_and_vmap(build):
    assert_batch_vmap_loop_agree(build("base")[3], waveforms(3, 8000, seed=7))


def test_detect(build, tmp_path):
    assert hf_ast.detect(build("base")[2])
    assert not hf_ast.detect(tmp_path)


# ------------------------------------------------------------------------------------------------
# Bad checkpoints: one clear error naming the problem, nothing at DEST
# ------------------------------------------------------------------------------------------------

_P = "audio_spectrogram_transformer."
_KEY = _P + "encoder.layer.1.intermediate.dense.weight"


BAD = {
    "missing": (drop_tensor(_KEY), ["missing", "layers/1/mlp/fc1/kernel"]),
    "extra": (put_tensor(_P + "encoder.layer.1.surprise", (3,)), ["unexpected", "layer.1.surprise"]),
    "shape": (put_tensor(_KEY, (36, 32)), ["mis-shaped", _KEY, "(32, 36)", "(32, 37)"]),
    "corrupt": (truncate_weights, ["cannot read checkpoint", "model.safetensors"]),
    "class": (set_json("config.json", architectures=["ASTModel"]), ["unsupported model class ASTModel"]),
    "type": (set_json("config.json", model_type="vit"), ["model_type is 'vit'"]),
    "no-preprocessor": (lambda f: (f / "preprocessor_config.json").unlink(), ["preprocessor_config.json"]),
    "extractor": (
        set_json("preprocessor_config.json", feature_extractor_type="WhisperFeatureExtractor"),
        ["WhisperFeatureExtractor"],
    ),
    "frames": (set_json("preprocessor_config.json", max_length=100), ["max_length=100"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_checkpoint_is_named_and_nothing_written(build, tmp_path, kind):
    assert_bad_folder_refused(build("base")[2], tmp_path, *BAD[kind], arch="ast")


def test_all_key_problems_in_one_error(build, tmp_path):
    folder = copy_folder(build("base")[2], tmp_path / "hf")
    for damage in (drop_tensor("classifier.dense.bias"), BAD["extra"][0], BAD["shape"][0]):
        damage(folder)
    with pytest.raises(ConversionError) as err:
        converters.convert(folder, tmp_path / "out")
    msg = str(err.value)
    assert "missing (1): head/bias" in msg and "surprise" in msg and _KEY in msg


def test_directories_saved_with_the_old_attention_names_load(build, tmp_path):
    assert_old_attention_names_load(build("base")[3], tmp_path)
