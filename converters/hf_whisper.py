"""Hugging Face ``WhisperForAudioClassification`` folders -> jsuff ``whisper`` model directories.

The folder is what ``save_pretrained`` writes: ``config.json`` (``model_type`` ``"whisper"``),
``model.safetensors`` or ``pytorch_model.bin``, and ``preprocessor_config.json``
(``WhisperFeatureExtractor``: mel bins, FFT size, hop, chunk length). Keys missing from either
JSON file take the transformers class defaults below. Only the encoder classifier converts; a
speech-recognition checkpoint (``WhisperForConditionalGeneration``) is refused by name.

The extractor's ``dither`` (0 in released checkpoints) is not reproduced: jsuff models are
deterministic functions of the waveform.

Example:
    >>> from converters import supported
    >>> "whisper" in supported()
    True
"""

from __future__ import annotations

from typing import Any

from converters._hf_classifier import HFClassifier, HFFolder
from converters._rules import conv, layer_norm, linear
from converters.common import ConversionError
from jsuff.models.whisper import WhisperConfig

MODEL_TYPE = "whisper"
CLASSES = ("WhisperForAudioClassification",)

# transformers.WhisperConfig and WhisperFeatureExtractor defaults (tests check them against the classes).
CONFIG_DEFAULTS: dict[str, Any] = {
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "activation_function": "gelu",
    "max_source_positions": 1500,
    "num_mel_bins": 80,
    "use_weighted_layer_sum": False,
    "classifier_proj_size": 256,
}
EXTRACTOR_DEFAULTS: dict[str, Any] = {
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
}


_L = "encoder.layers.{i}."
RULES: list[tuple[str, str, str]] = [
    *conv("encoder.conv1", "conv1", "conv1d"),
    *conv("encoder.conv2", "conv2", "conv1d"),
    ("encoder.embed_positions.weight", "embed_positions", "identity"),
    *linear(_L + "self_attn.q_proj", "layers/{i}/attn/q_proj"),
    ("encoder.layers.{i}.self_attn.k_proj.weight", "layers/{i}/attn/k_proj/kernel", "linear"),  # no bias in HF
    *linear(_L + "self_attn.v_proj", "layers/{i}/attn/v_proj"),
    *linear(_L + "self_attn.out_proj", "layers/{i}/attn/out_proj"),
    *layer_norm(_L + "self_attn_layer_norm", "layers/{i}/attn_norm"),
    *layer_norm(_L + "final_layer_norm", "layers/{i}/mlp_norm"),
    *linear(_L + "fc1", "layers/{i}/mlp/fc1"),
    *linear(_L + "fc2", "layers/{i}/mlp/fc2"),
    *layer_norm("encoder.layer_norm", "layer_norm"),
    ("layer_weights", "layer_weights", "identity"),
    *linear("projector", "projector"),
    *linear("classifier", "classifier"),
]


def jsuff_config(folder: HFFolder) -> WhisperConfig:
    """The jsuff :class:`WhisperConfig` for a HF config and extractor config (defaults applied)."""
    hf, pre, src = folder.config, folder.preprocessor, folder.src
    if int(pre["feature_size"]) != int(hf["num_mel_bins"]):
        raise ConversionError(
            f"{src}: preprocessor_config feature_size={pre['feature_size']} but config.json "
            f"num_mel_bins={hf['num_mel_bins']}"
        )
    return WhisperConfig(
        d_model=int(hf["d_model"]),
        encoder_layers=int(hf["encoder_layers"]),
        encoder_attention_heads=int(hf["encoder_attention_heads"]),
        encoder_ffn_dim=int(hf["encoder_ffn_dim"]),
        activation_function=str(hf["activation_function"]),
        max_source_positions=int(hf["max_source_positions"]),
        num_mel_bins=int(hf["num_mel_bins"]),
        use_weighted_layer_sum=bool(hf["use_weighted_layer_sum"]),
        classifier_proj_size=int(hf["classifier_proj_size"]),
        num_labels=len(folder.labels),
        sample_rate=int(pre["sampling_rate"]),
        n_fft=int(pre["n_fft"]),
        hop_length=int(pre["hop_length"]),
        n_samples=int(pre["chunk_length"]) * int(pre["sampling_rate"]),
    )


HF = HFClassifier(
    arch="whisper",
    model_type=MODEL_TYPE,
    classes=CLASSES,
    extractor="WhisperFeatureExtractor",
    config_defaults=CONFIG_DEFAULTS,
    extractor_defaults=EXTRACTOR_DEFAULTS,
    rules=RULES,
    jsuff_config=jsuff_config,
)
convert = HF.convert
detect = HF.detect
HF.register("Hugging Face WhisperForAudioClassification folder (config.json + weights)")
