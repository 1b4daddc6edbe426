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
This module imports neither torch (except through ``.bin`` reading) nor transformers. The folders
go through the path every Hugging Face family shares (:mod:`converters._hf_classifier`); WavLM and
Data2Vec-audio (:mod:`converters.hf_wavlm`, :mod:`converters.hf_data2vec_audio`) reuse this
module's config fields and key map.

Example:
    >>> from converters import convert
    >>> model = convert("distilhubert-gtzan", "models/distilhubert-gtzan")  # needs a downloaded checkpoint  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from converters._hf_classifier import HFClassifier, HFFolder
from converters._rules import batch_norm, conv, layer_norm, linear
from converters.common import ConversionError, Rule
from jsuff.models.wav2vec2 import W2V2Config

__all__ = [
    "ENCODER_DEFAULTS",
    "FEATURE_EXTRACTOR_DEFAULTS",
    "HUBERT_DEFAULTS",
    "WAV2VEC2_DEFAULTS",
    "encoder_fields",
    "key_map",
    "speech_classifier",
]

# The transformers config classes' defaults for every key this port reads.
ENCODER_DEFAULTS: dict[str, Any] = {
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
WAV2VEC2_DEFAULTS: dict[str, Any] = {**ENCODER_DEFAULTS, "add_adapter": False, "adapter_attn_dim": None}
#: ``HubertConfig`` defaults (transformers 5).
HUBERT_DEFAULTS: dict[str, Any] = {**ENCODER_DEFAULTS, "feat_proj_layer_norm": True, "conv_pos_batch_norm": False}
#: ``Wav2Vec2FeatureExtractor`` defaults.
FEATURE_EXTRACTOR_DEFAULTS: dict[str, Any] = {"sampling_rate": 16000, "do_normalize": True}

# A custom head's config.json names it in "pooling_mode" (mean by default in those scripts).
_DEFAULT_POOLING = "mean"
# SpecAugment's learned mask vector is used only in training.
IGNORE = (r"(^|\.)masked_spec_embed$",)


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def has_dense_tanh_head(sd: Mapping[str, np.ndarray]) -> bool:
    """Whether the checkpoint carries the custom speech-classification head (``classifier.dense``
    and ``classifier.out_proj``); custom heads come under many class names, their keys tell them."""
    return "classifier.dense.weight" in sd or "classifier.out_proj.weight" in sd


def encoder_fields(folder: HFFolder) -> dict[str, Any]:
    """The :class:`W2V2Config` fields every family of the wav2vec2 layout reads the same way.

    Example:
        >>> from pathlib import Path
        >>> folder = HFFolder(Path("m"), {**WAV2VEC2_DEFAULTS, "num_labels": 2}, FEATURE_EXTRACTOR_DEFAULTS,
        ...                   ["no", "yes"], {})
        >>> fields = encoder_fields(folder)
        >>> fields["hidden_size"], fields["head"], fields["do_normalize"]
        (768, 'sequence_classification', True)
    """
    c = folder.config
    if c.get("add_adapter"):  # the families that have the option refuse it for classification
        raise ConversionError("add_adapter=True is not a classifier transformers supports")
    head = "dense_tanh" if has_dense_tanh_head(folder.state_dict) else "sequence_classification"
    return dict(
        num_labels=len(folder.labels),
        hidden_size=int(c["hidden_size"]),
        num_hidden_layers=int(c["num_hidden_layers"]),
        num_attention_heads=int(c["num_attention_heads"]),
        intermediate_size=int(c["intermediate_size"]),
        hidden_act=c["hidden_act"],
        layer_norm_eps=float(c["layer_norm_eps"]),
        feat_extract_activation=c["feat_extract_activation"],
        conv_dim=tuple(c["conv_dim"]),
        conv_kernel=tuple(c["conv_kernel"]),
        conv_stride=tuple(c["conv_stride"]),
        conv_bias=bool(c["conv_bias"]),
        num_conv_pos_embeddings=int(c["num_conv_pos_embeddings"]),
        num_conv_pos_embedding_groups=int(c["num_conv_pos_embedding_groups"]),
        head=head,
        use_weighted_layer_sum=bool(c["use_weighted_layer_sum"]) and head == "sequence_classification",
        classifier_proj_size=int(c["classifier_proj_size"]),
        pooling_mode=str(c.get("pooling_mode", _DEFAULT_POOLING)) if head == "dense_tanh" else _DEFAULT_POOLING,
        do_normalize=bool(folder.preprocessor["do_normalize"]),
    )


def _wav2vec2_config(folder: HFFolder) -> W2V2Config:
    c = folder.config
    if c["adapter_attn_dim"] is not None:
        raise ConversionError("wav2vec2 attention adapters (adapter_attn_dim, MMS) are not supported")
    # transformers' Wav2Vec2 always normalises before the projection and has no batch-norm
    # positional conv (HuBERT options).
    return W2V2Config(
        **encoder_fields(folder),
        feat_extract_norm=c["feat_extract_norm"],
        do_stable_layer_norm=bool(c["do_stable_layer_norm"]),
    )


def _hubert_config(folder: HFFolder) -> W2V2Config:
    c = folder.config
    return W2V2Config(
        **encoder_fields(folder),
        feat_extract_norm=c["feat_extract_norm"],
        do_stable_layer_norm=bool(c["do_stable_layer_norm"]),
        feat_proj_layer_norm=bool(c["feat_proj_layer_norm"]),
        conv_pos_batch_norm=bool(c["conv_pos_batch_norm"]),
    )


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


def encoder_prefix(sd: Mapping[str, Any], default: str) -> str:
    """The encoder's key prefix (``wav2vec2``, ``hubert`` ...; custom heads name it either way),
    found from the keys; ``default`` when none or several are found (the key check then reports
    what is missing or unexpected)."""
    marker = ".feature_extractor.conv_layers.0.conv.weight"
    found = sorted({k[: -len(marker)] for k in sd if k.endswith(marker)})
    return found[0] if len(found) == 1 else default


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


def speech_classifier(
    *,
    arch: str,
    model_type: str,
    prefix: str,
    sequence_class: str,
    defaults: Mapping[str, Any],
    jsuff_config: Callable[[HFFolder], W2V2Config],
    extra_rules: Callable[[str], list[Rule]] = lambda prefix: [],
) -> HFClassifier:
    """The :class:`HFClassifier` of a family in the wav2vec2 layout: ``*ForSequenceClassification``
    or a custom dense-tanh head over an encoder under ``prefix``, ``Wav2Vec2FeatureExtractor`` (its
    file optional), the positional conv's weight norm folded over the kernel axis (dim 2, for both
    the ``weight_g``/``weight_v`` and the ``parametrizations`` spellings). ``extra_rules(prefix)``
    adds the family's own key-map rows."""

    def rules(folder: HFFolder, cfg: W2V2Config) -> list[Rule]:
        p = encoder_prefix(folder.state_dict, prefix)
        return key_map(p, cfg.head) + extra_rules(p)

    return HFClassifier(
        arch=arch,
        model_type=model_type,
        classes=(sequence_class,),
        extractor="Wav2Vec2FeatureExtractor",
        config_defaults=defaults,
        extractor_defaults=FEATURE_EXTRACTOR_DEFAULTS,
        rules=rules,
        jsuff_config=jsuff_config,
        preprocessor_required=False,
        custom_head=has_dense_tanh_head,
        weight_norm_dim=2,
        ignore=IGNORE,
    )


WAV2VEC2 = speech_classifier(
    arch="wav2vec2",
    model_type="wav2vec2",
    prefix="wav2vec2",
    sequence_class="Wav2Vec2ForSequenceClassification",
    defaults=WAV2VEC2_DEFAULTS,
    jsuff_config=_wav2vec2_config,
)
HUBERT = speech_classifier(
    arch="hubert",
    model_type="hubert",
    prefix="hubert",
    sequence_class="HubertForSequenceClassification",
    defaults=HUBERT_DEFAULTS,
    jsuff_config=_hubert_config,
)
WAV2VEC2.register("Hugging Face wav2vec2 classifier folder (model_type 'wav2vec2')")
HUBERT.register("Hugging Face hubert classifier folder (model_type 'hubert')")
