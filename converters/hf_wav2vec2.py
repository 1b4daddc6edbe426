"""Hugging Face wav2vec2 / HuBERT / DistilHuBERT classifiers -> jsuff ``wav2vec2`` / ``hubert``.

Takes a model folder as ``save_pretrained`` writes it (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, ``preprocessor_config.json``) holding either

* ``Wav2Vec2ForSequenceClassification`` / ``HubertForSequenceClassification`` (keys
  ``wav2vec2.*`` or ``hubert.*``, ``projector.*``, ``classifier.*``, optional ``layer_weights``), or
* the common custom "speech classification" head (``Wav2Vec2ForSpeechClassification`` and the like:
  the encoder under ``wav2vec2.*`` or ``hubert.*``, then ``classifier.dense.*`` and
  ``classifier.out_proj.*``, pooled over time by the config's ``pooling_mode``).

Keys a ``config.json`` omits take the transformers config class's default from the tables below
(tested against the classes themselves), and the preprocessor's from ``Wav2Vec2FeatureExtractor``'s.
This module imports neither torch (except through ``.bin`` reading) nor transformers.

Example:
    >>> from converters import convert
    >>> model = convert("distilhubert-gtzan", "models/distilhubert-gtzan")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters import Converter, register_converter
from converters._rules import batch_norm, conv, layer_norm, linear
from converters.common import ConversionError, Rule, finish, fold_weight_norms, map_state_dict
from converters.hf_common import (
    HFCheckpoint,
    apply_defaults,
    detect_model_type,
    id2label_labels,
    read_hf_folder,
)
from jsuff.models.base import InputPolicy, Model, ModelError, expected_shapes
from jsuff.models.wav2vec2 import W2V2Config

__all__ = [
    "FEATURE_EXTRACTOR_DEFAULTS",
    "HUBERT_DEFAULTS",
    "WAV2VEC2_DEFAULTS",
    "convert_hf_wav2vec2",
    "jsuff_config",
    "key_map",
]

# The transformers config classes' defaults for every key this port reads.
_ENCODER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": (512, 512, 512, 512, 512, 512, 512),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "use_weighted_layer_sum": False,
    "classifier_proj_size": 256,
}
#: ``Wav2Vec2Config`` defaults (transformers 5).
WAV2VEC2_DEFAULTS: dict[str, Any] = {**_ENCODER_DEFAULTS, "add_adapter": False, "adapter_attn_dim": None}
#: ``HubertConfig`` defaults (transformers 5).
HUBERT_DEFAULTS: dict[str, Any] = {**_ENCODER_DEFAULTS, "feat_proj_layer_norm": True, "conv_pos_batch_norm": False}
#: ``Wav2Vec2FeatureExtractor`` defaults.
FEATURE_EXTRACTOR_DEFAULTS: dict[str, Any] = {"sampling_rate": 16000, "do_normalize": True}

_DEFAULTS = {"wav2vec2": WAV2VEC2_DEFAULTS, "hubert": HUBERT_DEFAULTS}
_FEATURE_EXTRACTORS = ("Wav2Vec2FeatureExtractor",)
_SUPPORTED_CLASSES = (
    "Wav2Vec2ForSequenceClassification, HubertForSequenceClassification, or a speech-classification "
    "head with classifier.dense.* and classifier.out_proj.* (e.g. Wav2Vec2ForSpeechClassification)"
)
# A custom head's config.json names it in "pooling_mode" (mean by default in those scripts).
_DEFAULT_POOLING = "mean"


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def _head_kind(config: Mapping[str, Any], sd: Mapping[str, Any]) -> str:
    """``"sequence_classification"`` or ``"dense_tanh"``, from the class name, else from the keys."""
    classes = [str(a) for a in config.get("architectures") or []]
    for name in classes:
        if name.endswith("ForSequenceClassification"):
            return "sequence_classification"
        if name.endswith("ForSpeechClassification"):
            return "dense_tanh"
    # Custom heads come under many class names; their keys tell them apart.
    if "classifier.dense.weight" in sd or "classifier.out_proj.weight" in sd:
        return "dense_tanh"
    if not classes and ("projector.weight" in sd or "classifier.weight" in sd):
        return "sequence_classification"
    what = f"class {', '.join(classes)}" if classes else "checkpoint (no 'architectures' in its config)"
    raise ConversionError(f"unsupported {what}: no classification head; supported: {_SUPPORTED_CLASSES}")


def jsuff_config(
    hf_config: Mapping[str, Any], preprocessor: Mapping[str, Any], *, model_type: str, head: str
) -> tuple[W2V2Config, list[str], int]:
    """The jsuff config, labels and sample rate for a HF config (defaults applied here).

    Example:
        >>> cfg, labels, sr = jsuff_config({"num_labels": 2}, {}, model_type="hubert",
        ...                                head="sequence_classification")
        >>> cfg.hidden_size, cfg.do_normalize, labels, sr
        (768, True, ['LABEL_0', 'LABEL_1'], 16000)
    """
    c = apply_defaults(hf_config, _DEFAULTS[model_type])
    pre = apply_defaults(preprocessor, FEATURE_EXTRACTOR_DEFAULTS)
    fe_type = pre.get("feature_extractor_type")
    if fe_type is not None and fe_type not in _FEATURE_EXTRACTORS:
        raise ConversionError(
            f"preprocessor_config.json names feature extractor {fe_type!r}; supported: {', '.join(_FEATURE_EXTRACTORS)}"
        )
    if model_type == "wav2vec2" and c["add_adapter"]:
        raise ConversionError("wav2vec2 with add_adapter=True is not a classifier transformers supports")
    if model_type == "wav2vec2" and c["adapter_attn_dim"] is not None:
        raise ConversionError("wav2vec2 attention adapters (adapter_attn_dim, MMS) are not supported")
    labels = id2label_labels(c)
    try:
        cfg = W2V2Config(
            num_labels=len(labels),
            hidden_size=int(c["hidden_size"]),
            num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=int(c["num_attention_heads"]),
            intermediate_size=int(c["intermediate_size"]),
            hidden_act=c["hidden_act"],
            layer_norm_eps=float(c["layer_norm_eps"]),
            feat_extract_norm=c["feat_extract_norm"],
            feat_extract_activation=c["feat_extract_activation"],
            conv_dim=tuple(c["conv_dim"]),
            conv_kernel=tuple(c["conv_kernel"]),
            conv_stride=tuple(c["conv_stride"]),
            conv_bias=bool(c["conv_bias"]),
            # transformers' Wav2Vec2 always has both; only HuBERT reads these flags.
            feat_proj_layer_norm=bool(c["feat_proj_layer_norm"]) if model_type == "hubert" else True,
            conv_pos_batch_norm=bool(c["conv_pos_batch_norm"]) if model_type == "hubert" else False,
            num_conv_pos_embeddings=int(c["num_conv_pos_embeddings"]),
            num_conv_pos_embedding_groups=int(c["num_conv_pos_embedding_groups"]),
            do_stable_layer_norm=bool(c["do_stable_layer_norm"]),
            head=head,
            use_weighted_layer_sum=bool(c["use_weighted_layer_sum"]) and head == "sequence_classification",
            classifier_proj_size=int(c["classifier_proj_size"]),
            pooling_mode=str(c.get("pooling_mode", _DEFAULT_POOLING)) if head == "dense_tanh" else _DEFAULT_POOLING,
            do_normalize=bool(pre["do_normalize"]),
        )
    except ModelError as e:
        raise ConversionError(str(e)) from None
    return cfg, labels, int(pre["sampling_rate"])


# ----------------------------------------------------------------------------------------------
# Key map
# ----------------------------------------------------------------------------------------------


def key_map(prefix: str, head: str) -> list[Rule]:
    """``(torch key, flax path, transform)`` rows for an encoder under ``prefix`` and a head.

    Rows for optional tensors (conv biases, norms, batch norm, layer weights) are always listed;
    the expected shapes of the configured module decide which of them must be present.

    Example:
        >>> key_map("hubert", "dense_tanh")[0]
        ('hubert.feature_extractor.conv_layers.{i}.conv.weight', 'feature_extractor/conv_layers/{i}/conv/kernel', 'conv1d')
    """
    p = prefix
    tconv = f"{p}.feature_extractor.conv_layers.{{i}}"
    fconv = "feature_extractor/conv_layers/{i}"
    layer = f"{p}.encoder.layers.{{i}}"
    flayer = "encoder/layers/{i}"
    rules: list[Rule] = [
        *conv(f"{tconv}.conv", f"{fconv}/conv", "conv1d"),
        *layer_norm(f"{tconv}.layer_norm", f"{fconv}/layer_norm"),
        *layer_norm(f"{p}.feature_projection.layer_norm", "feature_projection/layer_norm"),
        *linear(f"{p}.feature_projection.projection", "feature_projection/projection"),
        # the weight-norm pair is folded into .weight before mapping
        *conv(f"{p}.encoder.pos_conv_embed.conv", "encoder/pos_conv_embed/conv", "conv1d"),
        *batch_norm(f"{p}.encoder.pos_conv_embed.batch_norm", "encoder/pos_conv_embed/batch_norm"),
        *layer_norm(f"{p}.encoder.layer_norm", "encoder/layer_norm"),
        *[r for n in ("q", "k", "v", "out") for r in linear(f"{layer}.attention.{n}_proj", f"{flayer}/attention/{n}_proj")],
        *layer_norm(f"{layer}.layer_norm", f"{flayer}/layer_norm"),
        *linear(f"{layer}.feed_forward.intermediate_dense", f"{flayer}/feed_forward/intermediate_dense"),
        *linear(f"{layer}.feed_forward.output_dense", f"{flayer}/feed_forward/output_dense"),
        *layer_norm(f"{layer}.final_layer_norm", f"{flayer}/final_layer_norm"),
    ]
    if head == "sequence_classification":
        rules += [
            ("layer_weights", "layer_weights", "identity"),
            *linear("projector", "projector"),
            *linear("classifier", "classifier"),
        ]
    else:
        rules += [*linear("classifier.dense", "classifier/dense"), *linear("classifier.out_proj", "classifier/out_proj")]
    return rules


def _encoder_prefix(sd: Mapping[str, Any], model_type: str) -> str:
    """``wav2vec2`` or ``hubert`` (custom heads name the encoder either way), found from the keys."""
    marker = ".feature_extractor.conv_layers.0.conv.weight"
    found = sorted({k[: -len(marker)] for k in sd if k.endswith(marker)})
    if len(found) == 1:
        return found[0]
    return model_type  # none or several: the key check reports what is missing or unexpected


# SpecAugment's learned mask vector is used only in training.
_IGNORE = (r"(^|\.)masked_spec_embed$",)


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


def convert_hf_wav2vec2(
    src: Path,
    *,
    dest: str | Path | None,
    config: Path | None = None,
    overwrite: bool = False,
    arch: str,
) -> Model:
    """Convert a HF wav2vec2/HuBERT classifier folder to a jsuff ``arch`` model (saved at ``dest``).

    Args:
        src: the Hugging Face model folder.
        dest: where to write the jsuff model directory (``None``: only return the model).
        config: a config JSON that replaces ``src/config.json``.
        overwrite: replace an existing ``dest``.
        arch: ``"wav2vec2"`` or ``"hubert"``; must agree with the config's ``model_type``.

    Raises:
        ConversionError: an existing ``dest``, an unreadable folder, a config for another model
            type or class, or tensors that do not fit (every missing, unexpected and mis-shaped
            key in one message). Nothing is written at ``dest`` then.
    """
    if dest is not None and Path(dest).exists() and not overwrite:
        raise ConversionError(f"{dest} already exists (pass --overwrite to replace it)")
    if not Path(src).is_dir():
        raise ConversionError(f"the {arch} converter takes a Hugging Face model folder; {src} is not a folder")
    ckpt: HFCheckpoint = read_hf_folder(src, config_file=config)
    model_type = ckpt.config.get("model_type", arch)
    if model_type not in _DEFAULTS:
        raise ConversionError(
            f"{src}: config model_type {model_type!r} is not a wav2vec2-family model; supported: {', '.join(_DEFAULTS)}"
        )
    if model_type != arch:
        raise ConversionError(f"{src}: config model_type is {model_type!r} but the {arch!r} converter was asked")
    sd = ckpt.state_dict
    head = _head_kind(ckpt.config, sd)
    cfg, labels, sample_rate = jsuff_config(ckpt.config, ckpt.preprocessor, model_type=model_type, head=head)
    # The positional conv is the family's only weight-normed tensor; transformers normalises it
    # over dim 2 (the kernel axis), for both the weight_g/v and parametrizations spellings.
    sd = fold_weight_norms(sd, dim=2)
    params = map_state_dict(
        sd,
        key_map(_encoder_prefix(sd, model_type), head),
        expected_shapes(arch, cfg.to_json()),
        source=str(src),
        ignore=_IGNORE,
    )
    return finish(
        arch=arch,
        config=cfg.to_json(),
        params=params,
        labels=labels,
        sample_rate=sample_rate,
        input=InputPolicy(),  # any length: the model takes whole clips
        source_files=ckpt.files,
        dest=dest,
        overwrite=overwrite,
        extra_source={
            "format": "huggingface",
            "model_type": model_type,
            "architectures": list(ckpt.config.get("architectures") or []),
        },
    )


def _register(arch: str) -> None:
    def convert(src: Path, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False) -> Model:
        return convert_hf_wav2vec2(src, dest=dest, config=config, overwrite=overwrite, arch=arch)

    def detect(src: Path) -> bool:
        return detect_model_type(src) == arch

    register_converter(
        Converter(arch, convert, detect, f"Hugging Face {arch} classifier folder (model_type {arch!r})")
    )


_register("wav2vec2")
_register("hubert")
