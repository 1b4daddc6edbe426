"""Hugging Face ``ASTForAudioClassification`` folders -> jsuff ``ast`` model directories.

The folder is what ``save_pretrained`` writes: ``config.json`` (``model_type``
``"audio-spectrogram-transformer"``), ``model.safetensors`` or ``pytorch_model.bin``, and
``preprocessor_config.json`` (``ASTFeatureExtractor``: mel bins, frame count, mean and std).
Keys missing from either JSON file take the transformers class defaults below.

Checkpoints on disk use the ViT-era names (``encoder.layer.{i}.attention.attention.query``);
transformers 5 renames them on load to ``layers.{i}.attention.q_proj``. The key map takes both.

Example:
    >>> from converters import supported
    >>> "ast" in supported()
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters._hf_classifier import HFClassifier, HFFolder
from converters._rules import conv, layer_norm, linear
from converters.common import ConversionError
from jsuff.models.ast import ASTConfig

MODEL_TYPE = "audio-spectrogram-transformer"
CLASSES = ("ASTForAudioClassification",)

# transformers.ASTConfig and ASTFeatureExtractor defaults (tests check them against the classes).
CONFIG_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "patch_size": 16,
    "qkv_bias": True,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,
    "num_mel_bins": 128,
}
EXTRACTOR_DEFAULTS: dict[str, Any] = {
    "sampling_rate": 16000,
    "num_mel_bins": 128,
    "max_length": 1024,
    "do_normalize": True,
    "mean": -4.2677393,
    "std": 4.5689974,
}

_P = "audio_spectrogram_transformer."


# Per encoder layer: (name on disk, name in transformers 5 modules, jsuff path).
_LAYER = (
    ("attention.attention.query", "attention.q_proj", "attn/q_proj"),
    ("attention.attention.key", "attention.k_proj", "attn/k_proj"),
    ("attention.attention.value", "attention.v_proj", "attn/v_proj"),
    ("attention.output.dense", "attention.o_proj", "attn/out_proj"),
    ("intermediate.dense", "mlp.fc1", "mlp/fc1"),
    ("output.dense", "mlp.fc2", "mlp/fc2"),
)

RULES: list[tuple[str, str, str]] = [
    (_P + "embeddings.cls_token", "cls_token", "identity"),
    (_P + "embeddings.distillation_token", "distillation_token", "identity"),
    (_P + "embeddings.position_embeddings", "position_embeddings", "identity"),
    *conv(_P + "embeddings.patch_embeddings.projection", "patch_embed", "conv2d"),
    *[
        rule
        for disk, current, flax in _LAYER
        for prefix in (f"{_P}encoder.layer.{{i}}.{disk}", f"{_P}layers.{{i}}.{current}")
        for rule in linear(prefix, f"layers/{{i}}/{flax}")
    ],
    *[
        rule
        for layers in ("encoder.layer", "layers")
        for torch, flax in (("layernorm_before", "attn_norm"), ("layernorm_after", "mlp_norm"))
        for rule in layer_norm(f"{_P}{layers}.{{i}}.{torch}", f"layers/{{i}}/{flax}")
    ],
    *layer_norm(_P + "layernorm", "layernorm"),
    *layer_norm("classifier.layernorm", "head_norm"),
    *linear("classifier.dense", "head"),
]


def _square(value: Any, what: str, src: Path) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConversionError(f"{src}: jsuff's AST takes a square {what}, got {value}")
        value = value[0]
    return int(value)


def jsuff_config(folder: HFFolder) -> ASTConfig:
    """The jsuff :class:`ASTConfig` for a HF config and extractor config (defaults applied)."""
    hf, pre, src = folder.config, folder.preprocessor, folder.src
    for key in ("num_mel_bins", "max_length"):
        if int(pre[key]) != int(hf[key]):
            raise ConversionError(
                f"{src}: preprocessor_config {key}={pre[key]} but config.json {key}={hf[key]}; "
                "the model's position embeddings fix both"
            )
    return ASTConfig(
        hidden_size=int(hf["hidden_size"]),
        num_hidden_layers=int(hf["num_hidden_layers"]),
        num_attention_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]),
        hidden_act=str(hf["hidden_act"]),
        layer_norm_eps=float(hf["layer_norm_eps"]),
        patch_size=_square(hf["patch_size"], "patch_size", src),
        qkv_bias=bool(hf["qkv_bias"]),
        frequency_stride=int(hf["frequency_stride"]),
        time_stride=int(hf["time_stride"]),
        max_length=int(hf["max_length"]),
        num_mel_bins=int(hf["num_mel_bins"]),
        num_labels=len(folder.labels),
        sample_rate=int(pre["sampling_rate"]),
        mean=float(pre["mean"]),
        std=float(pre["std"]),
        do_normalize=bool(pre["do_normalize"]),
    )


HF = HFClassifier(
    arch="ast",
    model_type=MODEL_TYPE,
    classes=CLASSES,
    extractor="ASTFeatureExtractor",
    config_defaults=CONFIG_DEFAULTS,
    extractor_defaults=EXTRACTOR_DEFAULTS,
    rules=RULES,
    jsuff_config=jsuff_config,
)
convert = HF.convert
detect = HF.detect
HF.register("Hugging Face ASTForAudioClassification folder (config.json + weights)")
