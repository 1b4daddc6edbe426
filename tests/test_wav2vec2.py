"""wav2vec2 / HuBERT / DistilHuBERT: parity with transformers through the public convert path.

Every variant is a tiny, randomly initialised transformers model (layer norms, biases and
running statistics randomised too, so a wrong epsilon, transpose or ordering shows), saved with
``save_pretrained``, converted with ``converters.convert`` to a model directory and loaded with
``jsuff.load_model``; the same raw waveforms go through transformers' feature extractor + model
and through the jsuff model.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402

from converters import ConversionError, convert  # noqa: E402
from converters.hf_wav2vec2 import FEATURE_EXTRACTOR_DEFAULTS, HUBERT_DEFAULTS, WAV2VEC2_DEFAULTS  # noqa: E402
from jsuff.models import ModelError, load_model  # noqa: E402
from jsuff.models._transformer import ACTIVATIONS  # noqa: E402
from jsuff.models.base import flatten  # noqa: E402
from jsuff.models.wav2vec2 import W2V2Config, Wav2Vec2Classifier, normalize_waveform  # noqa: E402
from tests.helpers.hf import (  # noqa: E402
    GENRES,
    SR,
    W2V2_TINY,
    SpeechClassifier,
    assert_default_table,
    assert_logits_agree,
    assert_speech_layers_agree,
    randomize_,
    save_speech_classifier,
    speech_logits,
    speech_values,
    waveforms,
)

# name -> (model_type, config overrides, preprocessor_config or None for "no file")
VARIANTS = {
    # base models: group-norm extractor, post-LN encoder, no conv bias
    "wav2vec2-base": ("wav2vec2", {}, {"do_normalize": True}),
    # large / XLS-R: layer-norm extractor, pre-LN encoder, conv bias, weighted layer sum, odd
    # positional kernel, other activations and epsilon
    "wav2vec2-stable": (
        "wav2vec2",
        dict(
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
            use_weighted_layer_sum=True,
            num_conv_pos_embeddings=15,
            hidden_act="gelu_new",
            feat_extract_activation="relu",
            layer_norm_eps=1e-3,
            num_labels=4,
        ),
        {"do_normalize": False},
    ),
    "hubert-base": ("hubert", dict(conv_bias=True, use_weighted_layer_sum=True), None),
    "hubert-stable": (
        "hubert",
        dict(
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            feat_proj_layer_norm=False,
            conv_pos_batch_norm=True,
        ),
        {"do_normalize": True, "sampling_rate": 16000},
    ),
    # DistilHuBERT: a HubertConfig with two layers and no feature-projection layer norm
    "distilhubert": (
        "hubert",
        dict(feat_proj_layer_norm=False, num_labels=10, id2label=dict(enumerate(GENRES))),
        {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor"},
    ),
}


def _hf_config(model_type, overrides):
    cls = transformers.HubertConfig if model_type == "hubert" else transformers.Wav2Vec2Config
    return cls(**{**W2V2_TINY, **overrides})


def _classifier_class(model_type):
    if model_type == "hubert":
        return transformers.HubertForSequenceClassification
    return transformers.Wav2Vec2ForSequenceClassification


def _save_preprocessor(folder, preprocessor):
    if preprocessor is not None:
        kwargs = {k: v for k, v in preprocessor.items() if k != "feature_extractor_type"}
        transformers.Wav2Vec2FeatureExtractor(**kwargs).save_pretrained(folder)


def _feature_extractor(folder):
    if (folder / "preprocessor_config.json").is_file():
        return transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    return transformers.Wav2Vec2FeatureExtractor()  # what the converter assumes without the file


_CACHE = {}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """Variant name -> (HF folder, torch model), built once per module."""

    def get(name):
        if name not in _CACHE:
            model_type, overrides, preprocessor = VARIANTS[name]
            torch.manual_seed(0)
            model = _classifier_class(model_type)(_hf_config(model_type, overrides)).eval()
            randomize_(model, seed=len(_CACHE))
            folder = tmp_path_factory.mktemp(name)
            model.save_pretrained(folder)
            _save_preprocessor(folder, preprocessor)
            _CACHE[name] = (folder, model)
        return _CACHE[name]

    return get


# ----------------------------------------------------------------------------------------------
# End-to-end parity
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(hf_models, tmp_path, name):
    folder, torch_model = hf_models(name)
    model_type, overrides, preprocessor = VARIANTS[name]
    convert(folder, tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert model.arch == model_type and model.sample_rate == SR
    assert model.config["do_normalize"] == (preprocessor or FEATURE_EXTRACTOR_DEFAULTS)["do_normalize"]
    expected_labels = overrides.get("id2label", {i: f"LABEL_{i}" for i in range(overrides.get("num_labels", 3))})
    assert list(model.labels) == [expected_labels[i] for i in range(len(expected_labels))]
    x = waveforms(3, 1600)
    ref = speech_logits(torch_model, _feature_extractor(folder), x)
    assert np.ptp(ref, axis=0).max() > 1e-2  # the clips give visibly different logits
    assert_logits_agree(model(x), ref)


@pytest.mark.parametrize("name", ["wav2vec2-base", "hubert-stable"])
def test_per_layer_match(hf_models, name):
    """Feature encoder, every recorded hidden state and the last hidden state, one by one."""
    folder, torch_model = hf_models(name)
    base = torch_model.hubert if VARIANTS[name][0] == "hubert" else torch_model.wav2vec2
    model = convert(folder, None)
    assert_speech_layers_agree(model, Wav2Vec2Classifier, base, _feature_extractor(folder), waveforms(3, 1600))


def test_jit_and_vmap(hf_models):
    folder, _ = hf_models("wav2vec2-base")
    model = convert(folder, None)
    x = jnp.asarray(waveforms(3, 1600))
    eager = model.apply(model.params, x)
    np.testing.assert_allclose(jax.jit(model.apply)(model.params, x), eager, atol=1e-5, rtol=0)
    one = jax.jit(lambda xi: model.apply(model.params, xi[None])[0])
    per_clip = jax.jit(jax.vmap(one))(x)
    loop = np.stack([np.asarray(one(xi)) for xi in x])
    np.testing.assert_allclose(per_clip, loop, atol=1e-5, rtol=0)
    np.testing.assert_allclose(per_clip, eager, atol=1e-5, rtol=0)


def _same_conversion(a, b):
    """Two converted models with the same config, labels and (bit-identical) parameters."""
    assert dict(a.config) == dict(b.config) and a.labels == b.labels and a.sample_rate == b.sample_rate
    pa, pb = flatten(nnx.to_pure_dict(a.params)), flatten(nnx.to_pure_dict(b.params))
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


# ----------------------------------------------------------------------------------------------
# Checkpoint spellings and config defaults
# ----------------------------------------------------------------------------------------------


def _copy_folder(src, dst, *, rename=None, drop=(), state_dict=None):
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    sd = dict(state_dict if state_dict is not None else load_file(str(src / "model.safetensors")))
    for old, new in (rename or {}).items():
        sd[new] = sd.pop(old)
    for k in drop:
        sd.pop(k)
    save_file(sd, str(dst / "model.safetensors"))
    return dst


def test_pytorch_model_bin(hf_models, tmp_path):
    folder, torch_model = hf_models("distilhubert")
    binary = tmp_path / "bin"
    binary.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        (binary / f).write_bytes((folder / f).read_bytes())
    torch.save(torch_model.state_dict(), binary / "pytorch_model.bin")
    model = convert(binary, None)
    _same_conversion(model, convert(folder, None))  # whose logits match transformers (above)
    assert [f["path"] for f in model.source["files"]] == ["config.json", "pytorch_model.bin", "preprocessor_config.json"]


def test_old_weight_norm_spelling(hf_models, tmp_path):
    folder, _ = hf_models("wav2vec2-base")
    conv = "wav2vec2.encoder.pos_conv_embed.conv."
    old = _copy_folder(
        folder,
        tmp_path / "old",
        rename={
            conv + "parametrizations.weight.original0": conv + "weight_g",
            conv + "parametrizations.weight.original1": conv + "weight_v",
        },
    )
    _same_conversion(convert(old, None), convert(folder, None))


@pytest.mark.parametrize("name", ["wav2vec2-base", "hubert-base"])
def test_config_json_without_defaults(hf_models, tmp_path, name):
    """A config.json that leaves out every key at its class default converts the same."""
    folder, _ = hf_models(name)
    model_type = VARIANTS[name][0]
    defaults = _hf_config(model_type, {}).__class__().to_dict()
    full = json.loads((folder / "config.json").read_text())
    sparse = {k: v for k, v in full.items() if k == "model_type" or k not in defaults or defaults[k] != v}
    assert "layer_norm_eps" not in sparse and "conv_kernel" in sparse
    (tmp_path / "sparse.json").write_text(json.dumps(sparse))
    _same_conversion(convert(folder, None, config=tmp_path / "sparse.json"), convert(folder, None))


def test_default_tables_match_transformers():
    assert_default_table(WAV2VEC2_DEFAULTS, transformers.Wav2Vec2Config())
    assert_default_table(HUBERT_DEFAULTS, transformers.HubertConfig())
    assert_default_table(FEATURE_EXTRACTOR_DEFAULTS, transformers.Wav2Vec2FeatureExtractor())


# ----------------------------------------------------------------------------------------------
# The custom dense -> tanh -> out_proj head
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_classifiers():
    cache = {}

    def get(model_type):
        if model_type not in cache:
            config = _hf_config(model_type, dict(num_labels=4))
            torch.manual_seed(1)
            base = transformers.HubertModel if model_type == "hubert" else transformers.Wav2Vec2Model
            net = SpeechClassifier(model_type, base(config), config, "mean").eval()
            randomize_(net, seed=7)
            cache[model_type] = config, net
        return cache[model_type]

    return get


@pytest.mark.parametrize(
    "model_type, architectures, pooling",
    [
        ("wav2vec2", ["Wav2Vec2ForSpeechClassification"], "mean"),
        ("wav2vec2", ["Wav2Vec2ForSpeechClassification"], "sum"),
        ("hubert", None, "max"),  # no class name: the keys say which head it is
    ],
)
def test_dense_tanh_head(speech_classifiers, tmp_path, model_type, architectures, pooling):
    config, net = speech_classifiers(model_type)
    net.pooling_mode = pooling
    folder = save_speech_classifier(net, config, tmp_path / "hf", architectures)
    model = convert(folder, tmp_path / "m")
    assert model.arch == model_type
    assert model.config["head"] == "dense_tanh" and model.config["pooling_mode"] == pooling
    x = waveforms(3, 1600)
    with torch.no_grad():
        ref = net(speech_values(_feature_extractor(folder), x)).numpy()
    assert_logits_agree(load_model(tmp_path / "m")(x), ref)


# ----------------------------------------------------------------------------------------------
# Front end and activations
# ----------------------------------------------------------------------------------------------


def test_normalization_matches_feature_extractor():
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    x = waveforms(4, 3001, seed=3) * np.array([[1e-3], [1.0], [30.0], [0.0]], np.float32)
    x[3] = 0.25  # constant clip: the 1e-7 inside the square root keeps it finite
    ref = fe(list(x), sampling_rate=SR, return_tensors="np").input_values
    np.testing.assert_allclose(normalize_waveform(jnp.asarray(x)), ref, atol=1e-5, rtol=1e-5)


def test_activations_match_transformers():
    x = np.linspace(-6, 6, 201, dtype=np.float32)
    for name, fn in ACTIVATIONS.items():
        ref = ACT2FN[name](torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(fn(jnp.asarray(x)), ref, atol=1e-6, rtol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------------------------
# Bad checkpoints: one clear error, nothing at DEST
# ----------------------------------------------------------------------------------------------

_PROJ = "wav2vec2.feature_projection.projection.weight"


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", r"missing \(1\): feature_projection/projection/kernel"),
        ("extra", r"unexpected \(1\): wav2vec2.encoder.extra.weight"),
        ("shape", r"mis-shaped \(1\): wav2vec2.feature_projection.projection.weight"),
        ("corrupt", r"cannot read checkpoint .*model.safetensors"),
        ("ctc", r"unsupported model class Wav2Vec2ForCTC.*takes Wav2Vec2ForSequenceClassification"),
        ("whisper", r"model_type is 'whisper' but the 'wav2vec2' converter was asked"),
    ],
)
def test_bad_checkpoints(hf_models, tmp_path, case, match):
    folder, _ = hf_models("wav2vec2-base")
    sd = load_file(str(folder / "model.safetensors"))
    if case == "missing":
        bad = _copy_folder(folder, tmp_path / "bad", drop=[_PROJ])
    elif case == "extra":
        bad = _copy_folder(folder, tmp_path / "bad", state_dict={**sd, "wav2vec2.encoder.extra.weight": np.ones(2, np.float32)})
    elif case == "shape":
        bad = _copy_folder(folder, tmp_path / "bad", state_dict={**sd, _PROJ: sd[_PROJ][:, :5]})
    else:
        bad = _copy_folder(folder, tmp_path / "bad")
        if case == "corrupt":
            data = (bad / "model.safetensors").read_bytes()
            (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
        else:
            cfg = json.loads((bad / "config.json").read_text())
            if case == "ctc":
                cfg["architectures"] = ["Wav2Vec2ForCTC"]
            else:
                cfg["model_type"] = "whisper"
            (bad / "config.json").write_text(json.dumps(cfg))
    dest = tmp_path / "out"
    with pytest.raises(ConversionError, match=match):
        convert(bad, dest, arch="wav2vec2")
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]  # no temporary directory left either


def test_unknown_arch_and_undetectable_folder(hf_models, tmp_path):
    folder, _ = hf_models("wav2vec2-base")
    with pytest.raises(ConversionError, match="unknown architecture 'wav2vec3'; supported: .*hubert.*wav2vec2"):
        convert(folder, tmp_path / "out", arch="wav2vec3")
    with pytest.raises(ConversionError, match="model_type is 'wav2vec2' but the 'hubert' converter"):
        convert(folder, tmp_path / "out", arch="hubert")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConversionError, match="cannot tell the architecture .* pass --arch, one of: .*wav2vec2"):
        convert(other, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_dest_is_kept(hf_models, tmp_path):
    folder, _ = hf_models("wav2vec2-base")
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists"):
        convert(folder, dest)
    assert (dest / "keep.txt").read_text() == "mine"
    convert(folder, dest, overwrite=True)
    assert not (dest / "keep.txt").exists() and (dest / "model.json").is_file()


# ----------------------------------------------------------------------------------------------
# Module-level behaviour
# ----------------------------------------------------------------------------------------------


def test_config_errors_and_short_clip(hf_models):
    with pytest.raises(ModelError, match=r"wav2vec2/HuBERT config does not fit(.|\n)*unknown keys: colour"):
        W2V2Config.from_mapping({"colour": 1})
    with pytest.raises(ModelError, match="pooling_mode must be one of mean, sum, max"):
        W2V2Config(pooling_mode="median")
    with pytest.raises(ModelError, match="hidden_act must be one of"):
        W2V2Config(hidden_act="gelu_11")
    model = convert(hf_models("wav2vec2-base")[0], None)
    cfg = W2V2Config.from_mapping(model.config)
    assert cfg.num_frames(20) == 1 and cfg.num_frames(19) == 0
    assert model(jnp.zeros((1, 20))).shape == (1, 3)
    with pytest.raises(ModelError, match="19 samples is shorter than the feature encoder's receptive field"):
        model(jnp.zeros((1, 19)))


def test_jsuff_side_imports_neither_torch_nor_transformers():
    code = (
        "import sys, jsuff, jsuff.models.wav2vec2;"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
