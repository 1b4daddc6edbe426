"""WavLM audio classifiers (``WavLMForSequenceClassification``), ported from Hugging Face transformers.

WavLM is the wav2vec2 layout (:mod:`jsuff.models.wav2vec2`: feature encoder, feature projection,
weight-normed positional conv, post-LN or pre-LN "stable" layers, projector -> mean -> classifier
head with an optional weighted layer sum, the same front end) with one change, in attention: the
scores get a *gated relative position bias*.

* The bias: the relative position ``j - i`` of key ``j`` and query ``i`` falls in one of
  ``num_buckets`` buckets (half for each sign; within each half, the first quarter of the buckets
  hold one distance each, the rest cover distances up to ``max_bucket_distance`` on a log scale,
  everything farther shares the last bucket). A table ``rel_attn_embed [num_buckets, heads]``
  gives each bucket a bias per head. Only the first layer holds the table; the ``[heads, T, T]``
  bias it gives is computed once and passed to every layer, as transformers does.
* The gate: each layer scales that bias per head and query frame by
  ``a * (b * gru_rel_pos_const - 1) + 2``, where ``a`` and ``b`` are sigmoids of a linear map
  (``gru_rel_pos_linear``, head_dim -> 8, summed in two groups of four) of the layer's attention
  input split into heads.
* The scores are ``(q * head_dim**-0.5) @ k.T + gate * bias``: transformers calls torch's
  ``multi_head_attention_forward``, which scales the query before the product.

The bucket table is computed in NumPy float32 with torch's operation order (the bucket of a
distance is the truncation of a float32 logarithm, so a float64 computation could round a
boundary distance into the next bucket); the tests compare it with transformers' for every
distance.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cfg = WavLMConfig(num_labels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                   intermediate_size=20, conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2),
    ...                   num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
    ...                   classifier_proj_size=4, num_buckets=16, max_bucket_distance=40)
    >>> WavLMClassifier(cfg, rngs=nnx.Rngs(0))(jnp.zeros((2, 400))).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models._transformer import SelfAttention
from jsuff.models.base import Architecture, ModelError, register
from jsuff.models.wav2vec2 import Encoder, W2V2Config, Wav2Vec2Classifier

__all__ = ["GatedRelativeAttention", "WavLMClassifier", "WavLMConfig", "relative_position_buckets"]


@dataclasses.dataclass(frozen=True)
class WavLMConfig(W2V2Config):
    """Architecture of a WavLM classifier: :class:`W2V2Config`'s fields plus the bias buckets.

    Attributes:
        num_buckets: relative-position buckets (half for keys before the query, half after).
        max_bucket_distance: the distance from which every position shares the last bucket.
    """

    family: ClassVar[str] = "WavLM"

    num_buckets: int = 320
    max_bucket_distance: int = 800

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.num_buckets < 4:
            problems.append(f"num_buckets must be at least 4, got {self.num_buckets}")
        elif self.max_bucket_distance <= self.num_buckets // 4:
            problems.append(
                f"max_bucket_distance {self.max_bucket_distance} must exceed num_buckets // 4 = "
                f"{self.num_buckets // 4} (the distances that get a bucket each)"
            )
        if not self.feat_proj_layer_norm or self.conv_pos_batch_norm:
            problems.append("WavLM has feat_proj_layer_norm=True and conv_pos_batch_norm=False (HuBERT options)")
        return problems


def relative_position_buckets(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """The bucket of each relative position (key minus query), as transformers' WavLM computes it.

    Example:
        >>> relative_position_buckets(np.arange(-3, 4), num_buckets=8, max_distance=6).tolist()
        [2, 2, 1, 0, 5, 6, 6]
    """
    half = num_buckets // 2
    distance = np.abs(relative)
    max_exact = half // 2
    # float32 throughout and in this order, as torch: the truncation below must see the same bits.
    scaled = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    scaled = scaled / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.minimum((np.float32(max_exact) + scaled).astype(np.int64), half - 1)
    return (relative > 0).astype(np.int64) * half + np.where(distance < max_exact, distance, large)


class GatedRelativeAttention(SelfAttention):
    """``WavLMAttention``: :class:`SelfAttention` with a gated relative position bias.

    Parameters beside the projections: ``gru_rel_pos_const [1, heads, 1, 1]``,
    ``gru_rel_pos_linear`` (head_dim -> 8) and, in the first layer only, ``rel_attn_embed``
    (``embedding [num_buckets, heads]``).
    """

    def __init__(self, cfg: WavLMConfig, *, has_relative_position_bias: bool, rngs: nnx.Rngs) -> None:
        # torch's multi_head_attention_forward scales the query before q @ k.T
        super().__init__(cfg.hidden_size, cfg.num_attention_heads, scale_query=True, rngs=rngs)
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_bucket_distance
        self.gru_rel_pos_const = nnx.Param(jnp.ones((1, self.heads, 1, 1), jnp.float32))
        self.gru_rel_pos_linear = nnx.Linear(self.head_dim, 8, rngs=rngs)
        self.rel_attn_embed = (
            nnx.Embed(cfg.num_buckets, self.heads, rngs=rngs) if has_relative_position_bias else None
        )

    def position_bias(self, length: int) -> jax.Array:
        """The ungated bias ``[1, heads, T, T]`` of a ``T``-frame input (first layer only)."""
        if self.rel_attn_embed is None:
            raise ModelError("only the first WavLM layer holds the relative position table")
        offsets = np.arange(-(length - 1), length)  # key minus query, from -(T-1) to T-1
        table = self.rel_attn_embed.embedding[...][relative_position_buckets(offsets, self.num_buckets, self.max_distance)]
        rows = jax.lax.broadcasted_iota(jnp.int32, (length, length), 0)
        cols = jax.lax.broadcasted_iota(jnp.int32, (length, length), 1)
        bias = jnp.take(table, cols - rows + (length - 1), axis=0)  # [T, T, heads]
        return bias.transpose(2, 0, 1)[None]

    def __call__(self, x: jax.Array, *, position_bias: jax.Array) -> jax.Array:  # type: ignore[override]
        b, t, _ = x.shape
        proj = self.gru_rel_pos_linear(self.split_heads(x))  # the attention input itself, per head
        gates = jax.nn.sigmoid(proj.reshape(b, self.heads, t, 2, 4).sum(-1))
        gate_a, gate_b = gates[..., 0:1], gates[..., 1:2]
        gate = gate_a * (gate_b * self.gru_rel_pos_const[...] - 1.0) + 2.0  # [B, heads, T, 1]
        return super().__call__(x, bias=position_bias, gate=gate)


class WavLMEncoder(Encoder):
    """The wav2vec2 encoder with :class:`GatedRelativeAttention`; the first layer's bias is shared."""

    def attention(self, cfg: W2V2Config, index: int, rngs: nnx.Rngs) -> nnx.Module:
        assert isinstance(cfg, WavLMConfig)
        return GatedRelativeAttention(cfg, has_relative_position_bias=index == 0, rngs=rngs)

    def attention_inputs(self, x: jax.Array) -> dict[str, jax.Array]:
        return {"position_bias": self.layers[0].attention.position_bias(x.shape[1])}


class WavLMClassifier(Wav2Vec2Classifier):
    """WavLM classifier: ``waveforms[B, T]`` -> ``logits[B, C]`` (transformers' module names)."""

    config_class: ClassVar[type[W2V2Config]] = WavLMConfig
    encoder_class: ClassVar[type[Encoder]] = WavLMEncoder


def _build(config: Mapping[str, Any], rngs: nnx.Rngs) -> WavLMClassifier:
    return WavLMClassifier(config, rngs=rngs)


register(
    Architecture(
        "wavlm",
        _build,
        "WavLM audio classifier (HF WavLMForSequenceClassification or dense-tanh head), gated relative position bias",
        "wavlm",
    )
)
