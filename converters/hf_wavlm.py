"""Hugging Face WavLM classifiers -> jsuff ``wavlm`` model directories.

Takes a folder as ``save_pretrained`` writes it (``config.json`` with ``model_type`` ``"wavlm"``,
the weights, optionally ``preprocessor_config.json``) holding ``WavLMForSequenceClassification``
(keys ``wavlm.*``, ``projector.*``, ``classifier.*``, optional ``layer_weights``) or the custom
dense-tanh speech-classification head over a WavLM encoder. Everything but the attention is the
wav2vec2 layout, so the conversion is :mod:`converters.hf_wav2vec2`'s with three more rows per
layer: ``gru_rel_pos_const``, ``gru_rel_pos_linear`` and, in the first layer,
``rel_attn_embed``.

Example:
    >>> from converters import supported
    >>> "wavlm" in supported()
    True
"""

from __future__ import annotations

from typing import Any

from converters._hf_classifier import HFFolder
from converters._rules import linear
from converters.common import Rule
from converters.hf_wav2vec2 import ENCODER_DEFAULTS, encoder_fields, speech_classifier
from jsuff.models.wavlm import WavLMConfig

__all__ = ["CONFIG_DEFAULTS", "HF", "jsuff_config"]

#: ``WavLMConfig`` defaults (transformers 5) for every key the port reads.
CONFIG_DEFAULTS: dict[str, Any] = {**ENCODER_DEFAULTS, "num_buckets": 320, "max_bucket_distance": 800, "add_adapter": False}


def jsuff_config(folder: HFFolder) -> WavLMConfig:
    """The jsuff :class:`WavLMConfig` of a folder (defaults applied)."""
    c = folder.config
    return WavLMConfig(
        **encoder_fields(folder),
        feat_extract_norm=c["feat_extract_norm"],
        do_stable_layer_norm=bool(c["do_stable_layer_norm"]),
        num_buckets=int(c["num_buckets"]),
        max_bucket_distance=int(c["max_bucket_distance"]),
    )


def _attention_rows(prefix: str) -> list[Rule]:
    t, f = f"{prefix}.encoder.layers.{{i}}.attention", "encoder/layers/{i}/attention"
    return [
        (f"{t}.gru_rel_pos_const", f"{f}/gru_rel_pos_const", "identity"),
        *linear(f"{t}.gru_rel_pos_linear", f"{f}/gru_rel_pos_linear"),
        (f"{t}.rel_attn_embed.weight", f"{f}/rel_attn_embed/embedding", "identity"),  # first layer only
    ]


HF = speech_classifier(
    arch="wavlm",
    model_type="wavlm",
    prefix="wavlm",
    sequence_class="WavLMForSequenceClassification",
    defaults=CONFIG_DEFAULTS,
    jsuff_config=jsuff_config,
    extra_rules=_attention_rows,
)
convert = HF.convert
detect = HF.detect
HF.register("Hugging Face WavLM classifier folder (model_type 'wavlm')")
