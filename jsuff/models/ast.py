"""Audio Spectrogram Transformer (``ASTForAudioClassification``) in Flax, with its front end in JAX.

Waveform in, logits out, numerically the Hugging Face model behind ``ASTFeatureExtractor``:

1. front end (:func:`ast_features`): Kaldi fbank (:mod:`jsuff.models.fbank`, symmetric Hann
   window, ``num_mel_bins`` filters), zero-padded or cropped to ``max_length`` frames (padding is
   0 in the log domain, as the extractor pads after the log), then ``(x - mean) / (2 * std)`` with
   the checkpoint's AudioSet statistics;
2. patch embedding: a ``patch_size``² convolution over (frequency, time) with strides
   ``(frequency_stride, time_stride)``; patches are ordered frequency-major, as ``flatten(2)``
   orders them in PyTorch;
3. a CLS and a distillation token in front, learned position embeddings added;
4. pre-LayerNorm encoder layers (epsilon from the config, 1e-12 for AST; exact GELU), a final
   LayerNorm;
5. the head: the mean of the two token outputs, LayerNorm, dense.

Input policy: any clip length. The front end fixes the frame count, so a clip longer than
``max_length`` frames (10.24 s for the released models) is cropped to its start and a shorter one
is padded with silence-in-log-domain zeros, exactly as the extractor does.

Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...                 intermediate_size=37, num_mel_bins=16, max_length=64, num_labels=3)
    >>> AST(cfg, nnx.Rngs(0))(jnp.zeros((2, 8000))).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._family import FamilyConfig
from jsuff.models._transformer import ATTENTION_RENAMED, PreNormBlock, layer_norm, random_normal
from jsuff.models.base import Architecture, ModelError, register
from jsuff.models.fbank import FbankConfig, kaldi_fbank
from jsuff.models.logmel import pad_or_trim

__all__ = ["AST", "ASTConfig", "ast_features"]


@dataclasses.dataclass(frozen=True)
class ASTConfig(FamilyConfig):
    """An AST classifier: the ``ASTConfig`` fields jsuff uses plus the feature extractor's.

    Defaults are those of ``transformers.ASTConfig`` and ``ASTFeatureExtractor`` (the
    MIT/ast-finetuned-audioset-10-10-0.4593 shape), except ``num_labels``.

    Attributes:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
        layer_norm_eps, patch_size, qkv_bias, frequency_stride, time_stride, max_length,
        num_mel_bins: as in ``transformers.ASTConfig`` (``max_length`` is in frames).
        num_labels: classes.
        sample_rate: the extractor's ``sampling_rate``.
        mean, std, do_normalize: the extractor's normalisation ``(x - mean) / (2 * std)``.
    """

    family: ClassVar[str] = "ast"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    patch_size: int = 16
    qkv_bias: bool = True
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 1024
    num_mel_bins: int = 128
    num_labels: int = 527
    sample_rate: int = 16000
    mean: float = -4.2677393
    std: float = 4.5689974
    do_normalize: bool = True

    def __post_init__(self) -> None:
        if self.num_mel_bins < self.patch_size or self.max_length < self.patch_size:
            raise ModelError(
                f"AST needs num_mel_bins ({self.num_mel_bins}) and max_length ({self.max_length}) "
                f">= patch_size ({self.patch_size})"
            )
        if self.num_labels < 1:
            raise ModelError(f"AST needs num_labels >= 1, got {self.num_labels}")

    @property
    def fbank(self) -> FbankConfig:
        # AST's extractor asks Kaldi for "hanning" (symmetric Hann), not Kaldi's default "povey".
        return FbankConfig(
            sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins, window_type="hanning"
        )

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along (frequency, time)."""
        f = (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1
        t = (self.max_length - self.patch_size) // self.time_stride + 1
        return f, t


def ast_features(waveforms: jax.Array, config: ASTConfig) -> jax.Array:
    """The model input ``[B, max_length, num_mel_bins]``: what ``ASTFeatureExtractor`` returns.

    Example:
        >>> import jax.numpy as jnp
        >>> ast_features(jnp.zeros((1, 4000)), ASTConfig(num_mel_bins=16, max_length=64)).shape
        (1, 64, 16)
    """
    fbank = kaldi_fbank(waveforms, config.fbank)  # [B, frames, mel]
    fbank = pad_or_trim(fbank.transpose(0, 2, 1), config.max_length).transpose(0, 2, 1)
    if config.do_normalize:
        fbank = (fbank - config.mean) / (2.0 * config.std)
    return fbank


class AST(nnx.Module):
    """``ASTForAudioClassification`` over waveforms. See the module docstring.

    Parameter paths (targets of ``converters/hf_ast.py``): ``patch_embed/{kernel,bias}``,
    ``cls_token``, ``distillation_token``, ``position_embeddings`` (PyTorch shapes
    ``[1, 1, H]`` and ``[1, 2 + patches, H]``), ``layers/{i}/...`` (see
    :mod:`jsuff.models._transformer`), ``layernorm``, ``head_norm``, ``head``.
    """

    def __init__(self, config: ASTConfig, rngs: nnx.Rngs):
        self.config = config
        h, p = config.hidden_size, config.patch_size
        f, t = config.grid
        self.patch_embed = nnx.Conv(
            1, h, kernel_size=(p, p), strides=(config.frequency_stride, config.time_stride),
            padding="VALID", rngs=rngs,
        )
        self.cls_token = random_normal(rngs, (1, 1, h))
        self.distillation_token = random_normal(rngs, (1, 1, h))
        self.position_embeddings = random_normal(rngs, (1, f * t + 2, h))
        self.layers = nnx.List([
            PreNormBlock(
                h, config.num_attention_heads, config.intermediate_size, eps=config.layer_norm_eps,
                act=config.hidden_act, qkv_bias=config.qkv_bias, rngs=rngs,
            )
            for _ in range(config.num_hidden_layers)
        ])
        self.layernorm = layer_norm(h, config.layer_norm_eps, rngs)
        self.head_norm = layer_norm(h, config.layer_norm_eps, rngs)
        self.head = nnx.Linear(h, config.num_labels, rngs=rngs)

    def embed(self, features: jax.Array) -> jax.Array:
        """``[B, max_length, mel]`` features -> ``[B, 2 + patches, H]`` tokens (before layer 0)."""
        b = features.shape[0]
        image = features.transpose(0, 2, 1)[..., None]  # [B, freq, time, 1]: PyTorch's (F, T) image
        patches = self.patch_embed(image)
        patches = patches.reshape(b, -1, patches.shape[-1])  # frequency-major, like flatten(2)
        h = self.config.hidden_size
        tokens = jnp.concatenate(
            [
                jnp.broadcast_to(self.cls_token[...], (b, 1, h)),
                jnp.broadcast_to(self.distillation_token[...], (b, 1, h)),
                patches,
            ],
            axis=1,
        )
        return tokens + self.position_embeddings[...]

    def hidden_states(self, features: jax.Array) -> list[jax.Array]:
        """The embeddings and every layer's output (HF's ``output_hidden_states``, pre final norm)."""
        states = [self.embed(features)]
        for layer in self.layers:
            states.append(layer(states[-1]))
        return states

    def classify(self, features: jax.Array) -> jax.Array:
        """Logits from extractor-style features ``[B, max_length, num_mel_bins]``."""
        x = self.layernorm(self.hidden_states(features)[-1])
        pooled = (x[:, 0] + x[:, 1]) / 2.0
        return self.head(self.head_norm(pooled))

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        return self.classify(ast_features(waveforms, self.config))


def _build(config: Mapping[str, Any], rngs: nnx.Rngs) -> AST:
    return AST(ASTConfig.from_mapping(config), rngs)


register(
    Architecture(
        "ast",
        _build,
        "Audio Spectrogram Transformer classifier (HF ASTForAudioClassification), Kaldi fbank front end",
        "ast",
        renamed=ATTENTION_RENAMED,
    )
)
