"""Tiny random-weight transformers models and the parity checks of the Hugging Face families.

Sizes (:data:`W2V2_TINY`), one randomiser (:func:`randomize_`), one set of test clips
(:func:`waveforms`), folder writing and damaging, and the assertions every HF family test makes:
logits within 1e-4 with the same argmax, hidden states layer by layer, batch = vmap = loop.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

# A 2-layer wav2vec2-layout encoder over a 2-conv feature encoder (400 samples give 39 frames);
# the WavLM and Data2Vec-audio tests use the same sizes.
W2V2_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(8, 8),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=8,
    num_labels=3,
)

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights everywhere, in place; returns the model in eval mode.

    transformers initialises LayerNorm to (1, 0), AST's tokens and positions to 0 and batch-norm
    statistics to (0, 1), which would hide a port that ignores them. After this every tensor
    matters: norm scales near 1, weight-norm magnitudes positive, matrices at a fan-in scale that
    keeps activations O(1), vectors and running statistics away from their defaults.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("original0") or name.endswith("weight_g"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / math.sqrt(fan_in))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def save_folder(model, extractor, path: Path, *, weights: str = "safetensors") -> Path:
    """``save_pretrained`` model and extractor into ``path``.

    ``weights="bin"`` replaces ``model.safetensors`` by a ``pytorch_model.bin`` of the in-memory
    ``state_dict`` (transformers 5 module names, where they differ from the names on disk).
    """
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    if weights == "bin":
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def waveforms(n: int, length: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 clips: tones at different pitches and levels over white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    clips = []
    for _ in range(n):
        f0 = rng.uniform(100.0, 3000.0)
        tone = rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6.28))
        noise = rng.uniform(0.005, 0.1) * rng.standard_normal(length)
        clips.append(tone + noise)
    return np.asarray(clips, np.float32)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def copy_folder(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_weights(folder: Path, edit) -> None:
    """Rewrite ``folder/model.safetensors`` as ``edit(state_dict)`` returns it."""
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    save_file(edit(dict(load_file(str(path)))), str(path))


def builder(tmp_path_factory, reference):
    """A cached ``variant -> (torch model, extractor, HF folder, jsuff model)``.

    ``reference(variant)`` returns the torch model and its extractor; the folder is converted
    through the public path and the jsuff model is loaded back from the directory written.
    """
    import converters
    from jsuff.models import load_model

    @functools.cache
    def built(variant: str):
        model, fe = reference(variant)
        root = tmp_path_factory.mktemp(variant)
        folder = save_folder(model, fe, root / "hf")
        converters.convert(folder, root / "jsuff")
        return model, fe, folder, load_model(root / "jsuff")

    return built


def assert_batch_vmap_loop_agree(jm, clips: np.ndarray) -> None:
    """Batched (jitted) == vmapped over single clips == a Python loop of single-clip calls.

    Eager op-by-op execution of a whole model costs seconds of per-op compilation on a small CPU;
    jit-versus-eager is checked on the front ends (test_frontends.py), which hold every
    shape-dependent branch.
    """
    import jax

    x = jax.numpy.asarray(clips)
    batched = np.asarray(jm(x))
    one = jax.jit(jm.apply)
    loop = np.concatenate([np.asarray(one(jm.params, x[i : i + 1])) for i in range(len(clips))])
    mapped = jax.jit(jax.vmap(lambda p, c: jm.apply(p, c[None])[0], in_axes=(None, 0)))(jm.params, x)
    np.testing.assert_allclose(np.asarray(mapped), loop, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched, loop, atol=1e-5, rtol=0)


def assert_defaults_match(conv, hf_config, hf_extractor, ours, keys: tuple[str, ...]) -> None:
    """The converter module's ``CONFIG_DEFAULTS`` / ``EXTRACTOR_DEFAULTS`` are the transformers
    classes' defaults (instances built with no arguments), and jsuff's default config ``ours``
    agrees with them on ``keys``."""
    for k, v in conv.CONFIG_DEFAULTS.items():
        assert getattr(hf_config, k) == v, k
    for k, v in conv.EXTRACTOR_DEFAULTS.items():
        assert getattr(hf_extractor, k) == v, k
    for k in keys:
        assert getattr(ours, k) == conv.CONFIG_DEFAULTS[k], k


def assert_logits_agree(got, ref: np.ndarray) -> None:
    """jsuff logits equal the reference within 1e-4 (float32, CPU), with the same argmax."""
    got = np.asarray(got)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


def jsuff_hidden_states(module_cls, config_cls, jm, feats: torch.Tensor):
    """The hidden states of ``jm`` (built as ``module_cls(config_cls.from_mapping(jm.config))``) on
    the reference front end's features, so the encoder is compared apart from the front end."""
    import jax
    from flax import nnx

    graphdef = nnx.graphdef(nnx.eval_shape(lambda: module_cls(config_cls.from_mapping(jm.config), nnx.Rngs(0))))
    states = jax.jit(lambda p, f: nnx.merge(graphdef, p).hidden_states(f))
    return states(jm.params, jax.numpy.asarray(feats.numpy()))


def assert_hidden_states_agree(ours, ref) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, rtol=0, err_msg=f"hidden state {i}")


def convert_bin_folder(model, extractor, path: Path, arch: str):
    """Save a ``pytorch_model.bin`` folder (transformers 5 key names) and convert it in memory."""
    import converters

    return converters.convert(save_folder(model, extractor, path, weights="bin"), None, arch=arch)


def convert_without_defaults(folder: Path, dest: Path, conv) -> tuple[list[str], object]:
    """Convert a copy of ``folder`` whose JSON files leave out every default of the converter
    module ``conv``; returns the keys left out and the converted model."""
    import converters

    bare = copy_folder(folder, dest)
    gone = strip_defaults(bare, conv.CONFIG_DEFAULTS, conv.EXTRACTOR_DEFAULTS)
    return gone, converters.convert(bare, None)


def assert_bad_folder_refused(folder: Path, tmp_path: Path, damage, needles, arch: str) -> None:
    """Copy ``folder``, ``damage`` it, and check the conversion error names every needle and
    that nothing (not even a temporary directory) is left beside the would-be destination."""
    import pytest

    import converters
    from converters.common import ConversionError

    bad = copy_folder(folder, tmp_path / "hf")
    damage(bad)
    dest = tmp_path / "out"
    with pytest.raises(ConversionError) as err:
        converters.convert(bad, dest, arch=arch)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


# Damage for bad-checkpoint tests: each returns ``folder -> None``.


def drop_tensor(key: str):
    return lambda folder: edit_weights(folder, lambda sd: {k: v for k, v in sd.items() if k != key})


def put_tensor(key: str, shape: tuple[int, ...]):
    """Add ``key`` (an extra tensor) or replace it (a wrong shape) with zeros of ``shape``."""
    return lambda folder: edit_weights(folder, lambda sd: {**sd, key: np.zeros(shape, np.float32)})


def truncate_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200])


def set_json(name: str, **changes):
    return lambda folder: edit_json(folder / name, **changes)


def strip_defaults(folder: Path, config_defaults: dict, extractor_defaults: dict) -> list[str]:
    """Delete every key whose value is the class default from both JSON files (as hand-written
    or older configs leave them out); returns the keys deleted."""
    gone = []
    for name, defaults in [
        ("config.json", config_defaults),
        ("preprocessor_config.json", extractor_defaults),
    ]:
        path = folder / name
        data = json.loads(path.read_text())
        for key, value in defaults.items():
            if key in data and data[key] == value:
                del data[key]
                gone.append(key)
        path.write_text(json.dumps(data))
    return gone


def assert_old_attention_names_load(jm, tmp_path: Path) -> None:
    """A model directory saved before AST and Whisper shared one attention module (projections
    named ``query``, ``key``, ``value``, ``out``) loads with the same parameters; a directory whose
    names fit neither layout is refused with the offending key named."""
    import orbax.checkpoint as ocp
    import pytest
    from flax import nnx

    from jsuff.models import ModelError, load_model, save_model
    from jsuff.models._transformer import ATTENTION_RENAMED
    from jsuff.models.base import flatten

    new = flatten(nnx.to_pure_dict(jm.params))
    old_names = {n: o for o, n in ATTENTION_RENAMED}

    def write(path: Path, rename) -> Path:
        save_model(jm, path)
        shutil.rmtree(path / "params")
        tree: dict = {}
        for key, value in new.items():
            *parents, leaf = rename(key).split("/")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = np.asarray(value)
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(path / "params", tree)
        ckpt.wait_until_finished()
        ckpt.close()
        # directories of the old layout predate the recorded checksums (format 1)
        meta = json.loads((path / "model.json").read_text())
        meta.pop("params_sha256")
        meta["format_version"] = 1
        (path / "model.json").write_text(json.dumps(meta))
        return path

    def to_old(key: str) -> str:
        for n, o in old_names.items():
            key = key.replace(f"/{n}/", f"/{o}/")
        return key

    assert any("/attn/q_proj/" in k for k in new)
    with pytest.warns(UserWarning, match="records no checksum"):
        back = load_model(write(tmp_path / "old", to_old))
    got = flatten(nnx.to_pure_dict(back.params))
    assert got.keys() == new.keys()
    for k in new:
        np.testing.assert_array_equal(got[k], new[k], err_msg=k)
    bad = write(tmp_path / "bad", lambda k: to_old(k).replace("/attn/value/", "/attn/values/"))
    with pytest.raises(ModelError, match=r"missing \(\d+\): .*attn/v_proj/kernel(.|\n)*unexpected \(\d+\): .*attn/values/kernel"), \
            pytest.warns(UserWarning, match="records no checksum"):
        load_model(bad)


# ------------------------------------------------------------------------------------------------
# Families of the wav2vec2 layout (wav2vec2, HuBERT, WavLM, Data2Vec-audio)
# ------------------------------------------------------------------------------------------------

SR = 16000


def speech_values(fe, clips: np.ndarray) -> torch.Tensor:
    """The model input ``Wav2Vec2FeatureExtractor`` makes of raw clips (its normalisation included)."""
    return fe(list(clips), sampling_rate=SR, return_tensors="pt").input_values


def speech_logits(model, fe, clips: np.ndarray) -> np.ndarray:
    """transformers' logits for raw clips, end to end through the feature extractor."""
    with torch.no_grad():
        return model(speech_values(fe, clips)).logits.numpy()


def speech_layers(jm, classifier_cls, clips: np.ndarray):
    """``(features, hidden_states, last_hidden_state)`` of the converted model ``jm`` (a
    ``classifier_cls`` module) on raw clips, jitted."""
    import jax
    from flax import nnx

    graphdef = nnx.graphdef(nnx.eval_shape(lambda: classifier_cls(jm.config, rngs=nnx.Rngs(0))))

    @jax.jit
    def run(params, x):
        module = nnx.merge(graphdef, params)
        return (module.features(x), *module.hidden_states(x))

    return run(jm.params, jax.numpy.asarray(clips))


def assert_speech_layers_agree(jm, classifier_cls, base, fe, clips: np.ndarray) -> None:
    """Feature encoder output, every recorded hidden state and the last hidden state of ``jm``
    equal those of the transformers base model ``base`` (``model.wav2vec2``, ``model.wavlm`` ...)
    within 1e-4, one by one."""
    features, states, last = speech_layers(jm, classifier_cls, clips)
    values = speech_values(fe, clips)
    with torch.no_grad():
        ref_features = base.feature_extractor(values).transpose(1, 2).numpy()
        out = base(values, output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(features), ref_features, atol=1e-4, rtol=0)
    assert len(out.hidden_states) == jm.config["num_hidden_layers"] + 1
    assert_hidden_states_agree(states, out.hidden_states)
    np.testing.assert_allclose(np.asarray(last), out.last_hidden_state.numpy(), atol=1e-4, rtol=0)


def assert_default_table(table: dict, instance) -> None:
    """Every ``key: value`` of a converter's defaults table is ``instance``'s (a transformers
    config or feature extractor built without arguments); tuples and lists compare alike."""

    def plain(v):
        return list(v) if isinstance(v, tuple) else v

    for key, value in table.items():
        assert plain(getattr(instance, key)) == plain(value), f"{type(instance).__name__}.{key}"


class SpeechClassifier(torch.nn.Module):
    """The widely copied ``Wav2Vec2ForSpeechClassification``: an encoder under ``base_name``, then
    pool over time (mean, sum or max), ``classifier.dense``, tanh, ``classifier.out_proj``."""

    def __init__(self, base_name: str, base: torch.nn.Module, config, pooling_mode: str):
        super().__init__()
        self.pooling_mode = pooling_mode
        self.base_name = base_name  # the scripts name the encoder after the family
        setattr(self, base_name, base)
        self.classifier = torch.nn.Module()
        self.classifier.dense = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier.out_proj = torch.nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, values):
        h = getattr(self, self.base_name)(values).last_hidden_state
        if self.pooling_mode == "mean":
            pooled = h.mean(dim=1)
        elif self.pooling_mode == "sum":
            pooled = h.sum(dim=1)
        else:
            pooled = h.max(dim=1).values
        return self.classifier.out_proj(torch.tanh(self.classifier.dense(pooled)))


def save_speech_classifier(net: SpeechClassifier, config, folder: Path, architectures) -> Path:
    """Write a custom-head checkpoint folder as the scripts do: the base config with
    ``pooling_mode`` and ``architectures``, the whole state dict, a default feature extractor."""
    from safetensors.numpy import save_file
    from transformers import Wav2Vec2FeatureExtractor

    config.save_pretrained(folder)
    edit_json(folder / "config.json", pooling_mode=net.pooling_mode, architectures=architectures)
    save_file({k: v.numpy() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def check_speech_model(build, variant: str, clips: np.ndarray, arch: str) -> None:
    """The converted ``variant`` (see :func:`builder`) gives transformers' logits on raw ``clips``
    (which must give visibly different logits) and carries the folder's labels and settings."""
    model, fe, _, jm = build(variant)
    ref = speech_logits(model, fe, clips)
    assert np.ptp(ref, axis=0).max() > 1e-2
    assert_logits_agree(jm(clips), ref)
    assert jm.arch == arch and jm.sample_rate == SR and jm.input.length is None
    assert jm.labels == tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    assert jm.config["do_normalize"] == fe.do_normalize


def check_custom_head(base_name: str, base, config, folder: Path, architectures, *, pooling: str, arch: str) -> None:
    """A random custom dense-tanh head over ``base`` converts (recognised by its keys under the
    class name ``architectures``) and gives its logits."""
    import converters

    torch.manual_seed(2)
    net = randomize_(SpeechClassifier(base_name, base, config, pooling), seed=5)
    save_speech_classifier(net, config, folder, architectures)
    jm = converters.convert(folder, None)
    assert jm.arch == arch and jm.config["head"] == "dense_tanh" and jm.config["pooling_mode"] == pooling
    clips = waveforms(3, 1600, seed=9)
    from transformers import Wav2Vec2FeatureExtractor

    with torch.no_grad():
        ref = net(speech_values(Wav2Vec2FeatureExtractor.from_pretrained(folder), clips)).numpy()
    assert_logits_agree(jm(clips), ref)


def check_detected_and_listed(conv, folder: Path, elsewhere: Path, capsys, arch: str, words: str) -> None:
    """The converter module ``conv`` recognises ``folder`` (and not ``elsewhere``), and
    ``jsuff models`` lists ``arch`` as convertible, its description naming ``words``."""
    from jsuff.app.cli import main

    assert conv.detect(folder) and not conv.detect(elsewhere)
    assert main(["models"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{arch} "))
    assert line.split()[1] == "yes" and words in line  # the "convert" column
