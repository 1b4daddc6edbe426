"""wav2vec2, HuBERT and DistilHuBERT audio classifiers, ported from Hugging Face transformers.

One Flax module serves the whole family; :class:`W2V2Config` flags pick the variant:

* feature encoder: a stack of strided 1-D convolutions over the raw waveform, either
  ``feat_extract_norm="group"`` (group norm with one group per channel on the first conv only, the
  base models) or ``"layer"`` (layer norm after every conv, the large / XLS-R models), with or
  without ``conv_bias``;
* feature projection: optional layer norm (HuBERT's ``feat_proj_layer_norm``; always on for
  wav2vec2), then a linear map to ``hidden_size``;
* encoder: a grouped, weight-normed positional convolution added to its input, then transformer
  layers either post-LN (``do_stable_layer_norm=False``: the encoder's layer norm comes first, each
  layer normalises after its residual additions) or pre-LN "stable layer norm" (each layer
  normalises before attention and feed-forward, the encoder's layer norm comes last). HuBERT's
  ``conv_pos_batch_norm`` variant puts a batch norm before a plain positional conv;
* head: ``"sequence_classification"`` is transformers' ``*ForSequenceClassification`` (optional
  softmax-weighted sum over all hidden states, projector, mean over time, classifier);
  ``"dense_tanh"`` is the common custom "speech classification" head (pool over time by
  mean/sum/max, dense, tanh, out_proj) that many emotion checkpoints use.

DistilHuBERT is a HuBERT with two layers and no feature-projection layer norm. WavLM
(:mod:`jsuff.models.wavlm`) and Data2Vec-audio (:mod:`jsuff.models.data2vec_audio`) are this module
with another attention or positional embedding: :class:`Wav2Vec2Classifier` builds its parts
through :class:`Encoder` methods that those families override.

The front end is in JAX: when ``do_normalize`` is set (from the checkpoint's
``preprocessor_config.json``), each waveform is normalised to zero mean and unit variance exactly as
``Wav2Vec2FeatureExtractor`` does it, ``(x - mean) / sqrt(var + 1e-7)``.

Padding: there is no attention mask. A classifier here always sees whole clips, every sample of
which is signal, so every frame is attended to and pooled, as transformers does when it is called
without ``attention_mask``. A clip that was zero-padded to a batch length is therefore classified
with its padding, not as the unpadded clip.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cfg = W2V2Config(num_labels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=20, conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2),
    ...                  num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
    ...                  classifier_proj_size=4)
    >>> Wav2Vec2Classifier(cfg, rngs=nnx.Rngs(0))(jnp.zeros((2, 400))).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._family import FamilyConfig
from jsuff.models._transformer import ACTIVATIONS, SelfAttention, activation, layer_norm
from jsuff.models.base import Architecture, ModelError, register

__all__ = [
    "TORCH_NORM_EPS",
    "Encoder",
    "EncoderLayer",
    "FeatureEncoder",
    "FeatureProjection",
    "PositionalConv",
    "W2V2Config",
    "Wav2Vec2Classifier",
    "normalize_waveform",
    "same_pad_conv",
]

# Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm adds this inside the square root.
NORMALIZE_EPS = 1e-7
# PyTorch's default epsilon for the feature encoder's GroupNorm/LayerNorm and the positional conv's
# BatchNorm1d: transformers builds those without passing config.layer_norm_eps.
TORCH_NORM_EPS = 1e-5

_HEADS = ("sequence_classification", "dense_tanh")
_POOLING = ("mean", "sum", "max")
_FEAT_NORMS = ("group", "layer")


@dataclasses.dataclass(frozen=True)
class W2V2Config(FamilyConfig):
    """Architecture of a wav2vec2 / HuBERT classifier (field names and defaults as transformers').

    Attributes:
        num_labels: classes the head outputs.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: transformer sizes.
        hidden_act: activation of the transformer feed-forward (a name in
            :data:`jsuff.models._transformer.ACTIVATIONS`).
        layer_norm_eps: epsilon of the feature projection's and the encoder's layer norms.
        feat_extract_norm: ``"group"`` or ``"layer"`` (see the module docstring).
        feat_extract_activation: activation of the feature encoder and the positional conv.
        conv_dim, conv_kernel, conv_stride: channels, kernel sizes and strides of the conv stack.
        conv_bias: whether the feature encoder's convs have a bias.
        feat_proj_layer_norm: layer norm before the feature projection (HuBERT option).
        num_conv_pos_embeddings: kernel size of the positional conv.
        num_conv_pos_embedding_groups: groups of the positional conv.
        conv_pos_batch_norm: batch norm before a plain positional conv instead of weight norm.
        do_stable_layer_norm: pre-LN ("stable") encoder instead of post-LN.
        head: ``"sequence_classification"`` or ``"dense_tanh"``.
        use_weighted_layer_sum: sequence-classification head only: classify a softmax-weighted sum
            of all hidden states instead of the last one.
        classifier_proj_size: sequence-classification head only: projector width.
        pooling_mode: dense-tanh head only: ``"mean"``, ``"sum"`` or ``"max"`` over time.
        do_normalize: normalise each waveform to zero mean and unit variance first.
    """

    family: ClassVar[str] = "wav2vec2/HuBERT"

    num_labels: int = 2
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_proj_layer_norm: bool = True
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    conv_pos_batch_norm: bool = False
    do_stable_layer_norm: bool = False
    head: str = "sequence_classification"
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    pooling_mode: str = "mean"
    do_normalize: bool = False

    def __post_init__(self) -> None:
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problems = self.problems()
        if problems:
            raise ModelError(f"invalid {self.family} config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with this config, one line per problem (subclasses add their own)."""
        problems = []
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride) >= 1:
            problems.append(
                "conv_dim, conv_kernel and conv_stride must have the same (non-zero) length, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups "
                f"{self.num_conv_pos_embedding_groups}"
            )
        for name, value, allowed in (
            ("feat_extract_norm", self.feat_extract_norm, _FEAT_NORMS),
            ("head", self.head, _HEADS),
            ("pooling_mode", self.pooling_mode, _POOLING),
            ("hidden_act", self.hidden_act, tuple(ACTIVATIONS)),
            ("feat_extract_activation", self.feat_extract_activation, tuple(ACTIVATIONS)),
        ):
            if value not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.num_labels < 1:
            problems.append(f"num_labels must be positive, got {self.num_labels}")
        return problems

    def num_frames(self, num_samples: int) -> int:
        """Frames the feature encoder gives for ``num_samples`` (PyTorch's valid-conv length).

        Example:
            >>> W2V2Config().num_frames(16000)
            49
        """
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
        return n


def normalize_waveform(x: jax.Array) -> jax.Array:
    """Per-waveform zero mean, unit variance over the last axis, as ``Wav2Vec2FeatureExtractor``.

    Example:
        >>> y = normalize_waveform(jnp.array([[1.0, 2.0, 3.0]]))
        >>> [round(float(v), 4) for v in y[0]]
        [-1.2247, 0.0, 1.2247]
    """
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)  # population variance, as numpy's var
    return (x - mean) / jnp.sqrt(var + NORMALIZE_EPS)


# ----------------------------------------------------------------------------------------------
# Feature encoder and projection
# ----------------------------------------------------------------------------------------------


class _ChannelNorm(nnx.Module):
    """``torch.nn.GroupNorm(C, C)`` on channels-last ``[B, T, C]``: each channel normalised over time.

    Written out rather than ``nnx.GroupNorm(C, num_groups=C)``, which computes the same statistics
    through a ``[B, T, C, 1]`` reshape that XLA on CPU runs several times slower (30 ms against 5 ms
    on the first conv's output at batch 16, 1 s clips). The parameters keep GroupNorm's names.
    """

    def __init__(self, channels: int) -> None:
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = jnp.mean(x, axis=1, keepdims=True)
        centred = x - mean
        var = jnp.mean(centred * centred, axis=1, keepdims=True)  # two-pass, as torch
        return centred * jax.lax.rsqrt(var + TORCH_NORM_EPS) * self.scale[...][None, None] + self.bias[...][None, None]


class _ConvLayer(nnx.Module):
    """Conv1d (valid, strided) -> optional norm -> activation, channels-last."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, *, bias: bool, norm: str | None,
                 act: str, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(cin, cout, (kernel,), (stride,), padding="VALID", use_bias=bias, rngs=rngs)
        # One group per channel = per-channel statistics over time (torch GroupNorm(C, C)). Both
        # norms use torch's default eps and the two-pass variance, not E[x^2] - E[x]^2.
        if norm == "group":
            self.layer_norm = _ChannelNorm(cout)
        elif norm == "layer":
            self.layer_norm = layer_norm(cout, TORCH_NORM_EPS, rngs)
        else:
            self.layer_norm = None
        self.act = activation(act)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.act(x)


class FeatureEncoder(nnx.Module):
    """The strided conv stack over the raw waveform: ``[B, T]`` -> ``[B, frames, conv_dim[-1]]``."""

    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        layers = []
        cin = 1
        for i, (cout, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            if cfg.feat_extract_norm == "layer":
                norm = "layer"
            else:  # "group": only the first conv is normalised
                norm = "group" if i == 0 else None
            layers.append(
                _ConvLayer(cin, cout, k, s, bias=cfg.conv_bias, norm=norm, act=cfg.feat_extract_activation, rngs=rngs)
            )
            cin = cout
        self.conv_layers = nnx.List(layers)

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        x = waveforms[:, :, None]  # [B, T, 1]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nnx.Module):
    """Optional layer norm, then a linear map from ``conv_dim[-1]`` to ``hidden_size``."""

    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        c = cfg.conv_dim[-1]
        self.layer_norm = layer_norm(c, cfg.layer_norm_eps, rngs) if cfg.feat_proj_layer_norm else None
        self.projection = nnx.Linear(c, cfg.hidden_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.projection(x)


# ----------------------------------------------------------------------------------------------
# Transformer encoder
# ----------------------------------------------------------------------------------------------


def same_pad_conv(channels: int, kernel: int, groups: int, rngs: nnx.Rngs) -> tuple[nnx.Conv, bool]:
    """A grouped conv over time padded as torch's ``padding=kernel // 2``, and whether the last frame
    must be dropped (transformers' ``SamePadLayer``: an even kernel gives one frame too many)."""
    conv = nnx.Conv(channels, channels, (kernel,), padding=((kernel // 2, kernel // 2),),
                    feature_group_count=groups, rngs=rngs)
    return conv, kernel % 2 == 0


class PositionalConv(nnx.Module):
    """Grouped conv over time whose output is added to the encoder input (wav2vec2's positions)."""

    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        h = cfg.hidden_size
        self.batch_norm = (
            nnx.BatchNorm(h, epsilon=TORCH_NORM_EPS, use_running_average=True, rngs=rngs)
            if cfg.conv_pos_batch_norm
            else None
        )
        # The weight-norm (g, v) pair is folded into this kernel by the converter.
        self.conv, self.drop_last = same_pad_conv(h, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, rngs)
        self.act = activation(cfg.feat_extract_activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        y = self.conv(x)
        if self.drop_last:
            y = y[:, :-1]
        return self.act(y)


class _FeedForward(nnx.Module):
    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        self.intermediate_dense = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs)
        self.output_dense = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
    """One transformer layer, post-LN or pre-LN ("stable"), around the ``attention`` it is given.

    Keyword arguments of ``__call__`` go to the attention (WavLM's position bias).
    """

    def __init__(self, cfg: W2V2Config, attention: nnx.Module, rngs: nnx.Rngs) -> None:
        eps = cfg.layer_norm_eps
        self.attention = attention
        self.layer_norm = layer_norm(cfg.hidden_size, eps, rngs)
        self.feed_forward = _FeedForward(cfg, rngs)
        self.final_layer_norm = layer_norm(cfg.hidden_size, eps, rngs)
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array, **attention_inputs: jax.Array) -> jax.Array:
        if self.stable:  # pre-LN
            x = x + self.attention(self.layer_norm(x), **attention_inputs)
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x, **attention_inputs))  # post-LN
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nnx.Module):
    """Positional embedding, layer norm and transformer layers.

    Families that differ only here override :meth:`positional` (Data2Vec-audio's conv stack),
    :meth:`attention` (WavLM's gated relative position bias) and :meth:`attention_inputs` (what
    every layer's attention receives besides its input).
    """

    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        self.pos_conv_embed = self.positional(cfg, rngs)
        self.layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)
        self.layers = nnx.List(
            [EncoderLayer(cfg, self.attention(cfg, i, rngs), rngs) for i in range(cfg.num_hidden_layers)]
        )
        self.stable = cfg.do_stable_layer_norm

    def positional(self, cfg: W2V2Config, rngs: nnx.Rngs) -> nnx.Module:
        """The module whose output is added to the encoder's input."""
        return PositionalConv(cfg, rngs)

    def attention(self, cfg: W2V2Config, index: int, rngs: nnx.Rngs) -> nnx.Module:
        """Layer ``index``'s attention (no mask: every frame is signal, see the module docstring)."""
        return SelfAttention(cfg.hidden_size, cfg.num_attention_heads, rngs=rngs)

    def attention_inputs(self, x: jax.Array) -> dict[str, jax.Array]:
        """Keyword inputs of every layer's attention, computed once from the first layer's input."""
        return {}

    def __call__(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """Hidden states as transformers 5 records them, and the last hidden state.

        The recorded states are the input of the first layer and the output of every layer. In the
        stable (pre-LN) encoder the last of them is taken *before* the encoder's final layer norm
        (transformers 5 records layer outputs; 4.x recorded the normalised one).
        """
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        extra = self.attention_inputs(x)
        states = [x]
        for layer in self.layers:
            x = layer(x, **extra)
            states.append(x)
        last = self.layer_norm(x) if self.stable else x
        return states, last


# ----------------------------------------------------------------------------------------------
# Heads and the classifier
# ----------------------------------------------------------------------------------------------


class _DenseTanhHead(nnx.Module):
    def __init__(self, hidden: int, num_labels: int, rngs: nnx.Rngs) -> None:
        self.dense = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out_proj = nnx.Linear(hidden, num_labels, rngs=rngs)

    def __call__(self, pooled: jax.Array) -> jax.Array:
        return self.out_proj(jnp.tanh(self.dense(pooled)))


class Wav2Vec2Classifier(nnx.Module):
    """wav2vec2 / HuBERT / DistilHuBERT classifier: ``waveforms[B, T]`` -> ``logits[B, C]``.

    Submodule and parameter names follow transformers' module names (``feature_extractor``,
    ``feature_projection``, ``encoder``, ``projector``, ``classifier`` ...) so the converter's key
    map reads row by row. A family that shares this layout sets ``config_class`` and
    ``encoder_class``.
    """

    config_class: ClassVar[type[W2V2Config]] = W2V2Config
    encoder_class: ClassVar[type[Encoder]] = Encoder

    def __init__(self, config: W2V2Config | Mapping[str, Any], *, rngs: nnx.Rngs) -> None:
        cfg = self.config_class.from_mapping(config)
        self.config = cfg
        self.feature_extractor = FeatureEncoder(cfg, rngs)
        self.feature_projection = FeatureProjection(cfg, rngs)
        self.encoder = self.encoder_class(cfg, rngs)
        if cfg.head == "sequence_classification":
            n_states = cfg.num_hidden_layers + 1  # the encoder input and every layer's output
            self.layer_weights = (
                nnx.Param(jnp.full((n_states,), 1.0 / n_states, jnp.float32)) if cfg.use_weighted_layer_sum else None
            )
            self.projector = nnx.Linear(cfg.hidden_size, cfg.classifier_proj_size, rngs=rngs)
            self.classifier = nnx.Linear(cfg.classifier_proj_size, cfg.num_labels, rngs=rngs)
        else:
            self.classifier = _DenseTanhHead(cfg.hidden_size, cfg.num_labels, rngs)

    def _check_length(self, waveforms: jax.Array) -> None:
        if waveforms.ndim != 2:
            raise ModelError(f"expected waveforms [batch, samples], got shape {tuple(waveforms.shape)}")
        if self.config.num_frames(waveforms.shape[1]) < 1:
            raise ModelError(
                f"a clip of {waveforms.shape[1]} samples is shorter than the feature encoder's "
                f"receptive field; it gives no frames"
            )

    def features(self, waveforms: jax.Array) -> jax.Array:
        """Feature-encoder output ``[B, frames, conv_dim[-1]]`` (after the front end)."""
        self._check_length(waveforms)
        x = waveforms.astype(jnp.float32)
        if self.config.do_normalize:
            x = normalize_waveform(x)
        # The normalisation runs in float32; a half-precision input (jsuff.search's bfloat16
        # candidate evaluation) gets its dtype back after it, so the layers run in that dtype.
        low = waveforms.dtype in (jnp.bfloat16, jnp.float16)
        return self.feature_extractor(x.astype(waveforms.dtype) if low else x)

    def hidden_states(self, waveforms: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """``(hidden_states, last_hidden_state)``: transformers' ``output_hidden_states`` view."""
        return self.encoder(self.feature_projection(self.features(waveforms)))

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        states, last = self.hidden_states(waveforms)
        cfg = self.config
        if cfg.head == "dense_tanh":
            if cfg.pooling_mode == "mean":
                pooled = jnp.mean(last, axis=1)
            elif cfg.pooling_mode == "sum":
                pooled = jnp.sum(last, axis=1)
            else:
                pooled = jnp.max(last, axis=1)
            return self.classifier(pooled)
        if self.layer_weights is not None:
            w = jax.nn.softmax(self.layer_weights[...])
            x = jnp.einsum("l,lbtd->btd", w, jnp.stack(states))
        else:
            x = last
        return self.classifier(jnp.mean(self.projector(x), axis=1))


def _build(config: Mapping[str, Any], rngs: nnx.Rngs, *, arch: str) -> Wav2Vec2Classifier:
    cfg = W2V2Config.from_mapping(config)
    if arch == "wav2vec2" and (not cfg.feat_proj_layer_norm or cfg.conv_pos_batch_norm):
        # transformers' Wav2Vec2 always normalises before the projection and has no batch-norm
        # positional conv; those are HuBERT options.
        raise ModelError("wav2vec2 needs feat_proj_layer_norm=True and conv_pos_batch_norm=False (use 'hubert')")
    return Wav2Vec2Classifier(cfg, rngs=rngs)


register(
    Architecture(
        "wav2vec2",
        functools.partial(_build, arch="wav2vec2"),
        "wav2vec2 / XLS-R audio classifier (HF sequence-classification or dense-tanh head)",
        "wav2vec2",
    )
)
register(
    Architecture(
        "hubert",
        functools.partial(_build, arch="hubert"),
        "HuBERT / DistilHuBERT audio classifier (HF sequence-classification or dense-tanh head)",
        "wav2vec2",
    )
)
