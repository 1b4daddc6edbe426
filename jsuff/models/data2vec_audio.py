"""Data2Vec-audio classifiers (``Data2VecAudioForSequenceClassification``), ported from transformers.

Data2Vec-audio is the wav2vec2 layout (:mod:`jsuff.models.wav2vec2`) with a fixed choice of its
options and another positional embedding:

* feature encoder: layer norm after every conv (``feat_extract_norm="layer"``; there is no group
  norm), torch's default epsilon;
* encoder: post-LN only (``Data2VecAudioEncoder`` is wav2vec2's post-LN encoder);
* positional embedding: a stack of ``num_conv_pos_embeddings`` layers (5 in the released
  models; in this family the name counts layers, it is not a kernel size), each a grouped conv of
  kernel ``conv_pos_kernel_size`` padded to keep the length (the last frame dropped for an even
  kernel), a layer norm without scale or bias, and the feature encoder's activation. There is no
  weight norm. The stack's output is added to the encoder input.

The head (projector -> mean -> classifier, optional weighted layer sum, or the custom dense-tanh
head) and the front end (``Wav2Vec2FeatureExtractor``'s normalisation) are wav2vec2's.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cfg = Data2VecAudioConfig(num_labels=3, hidden_size=16, num_hidden_layers=1,
    ...                           num_attention_heads=2, intermediate_size=20, conv_dim=(8, 8),
    ...                           conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=2,
    ...                           conv_pos_kernel_size=5, num_conv_pos_embedding_groups=2,
    ...                           classifier_proj_size=4)
    >>> Data2VecAudioClassifier(cfg, rngs=nnx.Rngs(0))(jnp.zeros((2, 400))).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
from flax import nnx

from jsuff.models._transformer import activation, layer_norm
from jsuff.models.base import Architecture, register
from jsuff.models.wav2vec2 import TORCH_NORM_EPS, Encoder, W2V2Config, Wav2Vec2Classifier, same_pad_conv

__all__ = ["Data2VecAudioClassifier", "Data2VecAudioConfig"]


@dataclasses.dataclass(frozen=True)
class Data2VecAudioConfig(W2V2Config):
    """Architecture of a Data2Vec-audio classifier (transformers' field names and defaults).

    Attributes:
        num_conv_pos_embeddings: layers of the positional conv stack.
        conv_pos_kernel_size: kernel size of each of them.

    The other fields are :class:`W2V2Config`'s; ``feat_extract_norm`` must be ``"layer"``,
    ``do_stable_layer_norm``, ``conv_pos_batch_norm`` false and ``feat_proj_layer_norm`` true
    (the only layout transformers has).
    """

    family: ClassVar[str] = "Data2Vec-audio"

    feat_extract_norm: str = "layer"
    num_conv_pos_embeddings: int = 5
    conv_pos_kernel_size: int = 19

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.num_conv_pos_embeddings < 1 or self.conv_pos_kernel_size < 1:
            problems.append(
                f"num_conv_pos_embeddings ({self.num_conv_pos_embeddings}) and conv_pos_kernel_size "
                f"({self.conv_pos_kernel_size}) must be positive"
            )
        fixed = dict(feat_extract_norm="layer", do_stable_layer_norm=False, feat_proj_layer_norm=True,
                     conv_pos_batch_norm=False)
        wrong = [f"{k}={getattr(self, k)!r}" for k, v in fixed.items() if getattr(self, k) != v]
        if wrong:
            problems.append(f"Data2Vec-audio has only {fixed}; got {', '.join(wrong)}")
        return problems


class _PositionalConvLayer(nnx.Module):
    """Grouped conv (same length) -> layer norm without affine parameters -> activation."""

    def __init__(self, cfg: Data2VecAudioConfig, rngs: nnx.Rngs) -> None:
        h = cfg.hidden_size
        self.conv, self.drop_last = same_pad_conv(h, cfg.conv_pos_kernel_size, cfg.num_conv_pos_embedding_groups, rngs)
        self.layer_norm = layer_norm(h, TORCH_NORM_EPS, rngs, affine=False)  # torch's default eps
        self.act = activation(cfg.feat_extract_activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(x)
        if self.drop_last:
            y = y[:, :-1]
        return self.act(self.layer_norm(y))


class PositionalConvStack(nnx.Module):
    """``Data2VecAudioPositionalConvEmbedding``: ``num_conv_pos_embeddings`` conv layers in turn."""

    def __init__(self, cfg: Data2VecAudioConfig, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([_PositionalConvLayer(cfg, rngs) for _ in range(cfg.num_conv_pos_embeddings)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


class Data2VecAudioEncoder(Encoder):
    """The wav2vec2 (post-LN) encoder with the positional conv stack."""

    def positional(self, cfg: W2V2Config, rngs: nnx.Rngs) -> nnx.Module:
        assert isinstance(cfg, Data2VecAudioConfig)
        return PositionalConvStack(cfg, rngs)


class Data2VecAudioClassifier(Wav2Vec2Classifier):
    """Data2Vec-audio classifier: ``waveforms[B, T]`` -> ``logits[B, C]`` (transformers' names)."""

    config_class: ClassVar[type[W2V2Config]] = Data2VecAudioConfig
    encoder_class: ClassVar[type[Encoder]] = Data2VecAudioEncoder


def _build(config: Mapping[str, Any], rngs: nnx.Rngs) -> Data2VecAudioClassifier:
    return Data2VecAudioClassifier(config, rngs=rngs)


register(
    Architecture(
        "data2vec_audio",
        _build,
        "Data2Vec-audio classifier (HF Data2VecAudioForSequenceClassification or dense-tanh head)",
        "data2vec_audio",
    )
)
