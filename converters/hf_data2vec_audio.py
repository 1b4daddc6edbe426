"""Hugging Face Data2Vec-audio classifiers -> jsuff ``data2vec_audio`` model directories.

Takes a folder as ``save_pretrained`` writes it (``config.json`` with ``model_type``
``"data2vec-audio"``, the weights, optionally ``preprocessor_config.json``) holding
``Data2VecAudioForSequenceClassification`` (keys ``data2vec_audio.*``, ``projector.*``,
``classifier.*``, optional ``layer_weights``) or the custom dense-tanh speech-classification head
over a Data2Vec-audio encoder. The conversion is :mod:`converters.hf_wav2vec2`'s with the
positional conv stack's rows (``encoder.pos_conv_embed.layers.{j}.conv``; its layer norms have no
parameters, its convs no weight norm).

Example:
    >>> from converters import supported
    >>> "data2vec_audio" in supported()
    True
"""

from __future__ import annotations

from typing import Any

from converters._hf_classifier import HFFolder
from converters._rules import conv
from converters.common import Rule
from converters.hf_wav2vec2 import ENCODER_DEFAULTS, encoder_fields, speech_classifier
from jsuff.models.data2vec_audio import Data2VecAudioConfig

__all__ = ["CONFIG_DEFAULTS", "HF", "jsuff_config"]

# Data2VecAudioConfig has no feat_extract_norm (always "layer") nor do_stable_layer_norm (always
# post-LN), and num_conv_pos_embeddings counts the positional conv layers.
_NOT_IN_CONFIG = ("feat_extract_norm", "do_stable_layer_norm")
#: ``Data2VecAudioConfig`` defaults (transformers 5) for every key the port reads.
CONFIG_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in ENCODER_DEFAULTS.items() if k not in _NOT_IN_CONFIG},
    "num_conv_pos_embeddings": 5,
    "conv_pos_kernel_size": 19,
    "add_adapter": False,
}


def jsuff_config(folder: HFFolder) -> Data2VecAudioConfig:
    """The jsuff :class:`Data2VecAudioConfig` of a folder (defaults applied)."""
    return Data2VecAudioConfig(**encoder_fields(folder), conv_pos_kernel_size=int(folder.config["conv_pos_kernel_size"]))


def _positional_rows(prefix: str) -> list[Rule]:
    return conv(f"{prefix}.encoder.pos_conv_embed.layers.{{j}}.conv", "encoder/pos_conv_embed/layers/{j}/conv", "conv1d")


HF = speech_classifier(
    arch="data2vec_audio",
    model_type="data2vec-audio",
    prefix="data2vec_audio",
    sequence_class="Data2VecAudioForSequenceClassification",
    defaults=CONFIG_DEFAULTS,
    jsuff_config=jsuff_config,
    extra_rules=_positional_rows,
)
convert = HF.convert
detect = HF.detect
HF.register("Hugging Face Data2Vec-audio classifier folder (model_type 'data2vec-audio')")
