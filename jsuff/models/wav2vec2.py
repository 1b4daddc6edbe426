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

DistilHuBERT is a HuBERT with two layers and no feature-projection layer norm.

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
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._transformer import attention, gelu_exact
from jsuff.models.base import Architecture, ModelError, register

__all__ = ["ACTIVATIONS", "W2V2Config", "Wav2Vec2Classifier", "normalize_waveform"]

# Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm adds this inside the square root.
NORMALIZE_EPS = 1e-7
# PyTorch's default epsilon for the feature encoder's GroupNorm/LayerNorm and the positional conv's
# BatchNorm1d: transformers builds those without passing config.layer_norm_eps.
TORCH_NORM_EPS = 1e-5


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def _linear(x: jax.Array) -> jax.Array:
    return x


#: transformers ``ACT2FN`` names this port supports (``hidden_act``, ``feat_extract_activation``).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu_exact,  # the exact erf form, not jax's tanh default
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": _linear,
}

_HEADS = ("sequence_classification", "dense_tanh")
_POOLING = ("mean", "sum", "max")
_FEAT_NORMS = ("group", "layer")


@dataclasses.dataclass(frozen=True)
class W2V2Config:
    """Architecture of a wav2vec2 / HuBERT classifier (field names and defaults as transformers').

    Attributes:
        num_labels: classes the head outputs.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: transformer sizes.
        hidden_act: activation of the transformer feed-forward (an :data:`ACTIVATIONS` name).
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
        if problems:
            raise ModelError("invalid wav2vec2/HuBERT config: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> W2V2Config:
        """Build from a ``model.json`` config dict; unknown keys are an error that names them.

        Example:
            >>> W2V2Config.from_mapping({"num_labels": 4, "conv_bias": True}).conv_bias
            True
        """
        if isinstance(config, W2V2Config):
            return config
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ModelError(f"unknown wav2vec2/HuBERT config keys: {', '.join(unknown)}")
        return cls(**dict(config))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists) that :meth:`from_mapping` reads back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

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
                 activation: str, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(cin, cout, (kernel,), (stride,), padding="VALID", use_bias=bias, rngs=rngs)
        # One group per channel = per-channel statistics over time (torch GroupNorm(C, C)). Both
        # norms use torch's default eps and the two-pass variance, not E[x^2] - E[x]^2.
        if norm == "group":
            self.layer_norm = _ChannelNorm(cout)
        elif norm == "layer":
            self.layer_norm = nnx.LayerNorm(cout, epsilon=TORCH_NORM_EPS, use_fast_variance=False, rngs=rngs)
        else:
            self.layer_norm = None
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return ACTIVATIONS[self.activation](x)


class _FeatureEncoder(nnx.Module):
    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        layers = []
        cin = 1
        for i, (cout, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            if cfg.feat_extract_norm == "layer":
                norm = "layer"
            else:  # "group": only the first conv is normalised
                norm = "group" if i == 0 else None
            layers.append(
                _ConvLayer(cin, cout, k, s, bias=cfg.conv_bias, norm=norm,
                           activation=cfg.feat_extract_activation, rngs=rngs)
            )
            cin = cout
        self.conv_layers = nnx.List(layers)

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        x = waveforms[:, :, None]  # [B, T, 1]
        for layer in self.conv_layers:
            x = layer(x)
        return x  # [B, frames, conv_dim[-1]]


class _FeatureProjection(nnx.Module):
    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        c = cfg.conv_dim[-1]
        self.layer_norm = (
            nnx.LayerNorm(c, epsilon=cfg.layer_norm_eps, use_fast_variance=False, rngs=rngs)
            if cfg.feat_proj_layer_norm
            else None
        )
        self.projection = nnx.Linear(c, cfg.hidden_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.projection(x)


# ----------------------------------------------------------------------------------------------
# Transformer encoder
# ----------------------------------------------------------------------------------------------


class _PositionalConv(nnx.Module):
    """Grouped conv over time whose output is added to the encoder input (wav2vec2's positions)."""

    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        h, k = cfg.hidden_size, cfg.num_conv_pos_embeddings
        self.batch_norm = (
            nnx.BatchNorm(h, epsilon=TORCH_NORM_EPS, use_running_average=True, rngs=rngs)
            if cfg.conv_pos_batch_norm
            else None
        )
        # torch pads k//2 on both sides; the weight-norm (g, v) pair is folded into this kernel.
        self.conv = nnx.Conv(
            h, h, (k,), padding=((k // 2, k // 2),), feature_group_count=cfg.num_conv_pos_embedding_groups,
            rngs=rngs,
        )
        # With an even kernel that padding gives one frame too many; transformers' SamePadLayer
        # drops the last one.
        self.drop_last = k % 2 == 0
        self.activation = cfg.feat_extract_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        y = self.conv(x)
        if self.drop_last:
            y = y[:, :-1]
        return ACTIVATIONS[self.activation](y)


class _Attention(nnx.Module):
    def __init__(self, hidden: int, heads: int, rngs: nnx.Rngs) -> None:
        self.heads = heads
        self.q_proj = nnx.Linear(hidden, hidden, rngs=rngs)
        self.k_proj = nnx.Linear(hidden, hidden, rngs=rngs)
        self.v_proj = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out_proj = nnx.Linear(hidden, hidden, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h = x.shape
        d = h // self.heads
        q, k, v = (
            p(x).reshape(b, t, self.heads, d).transpose(0, 2, 1, 3) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = attention(q, k, v, scale=d**-0.5)  # no mask: every frame is signal (module doc)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, h))


class _FeedForward(nnx.Module):
    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        self.intermediate_dense = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs)
        self.output_dense = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs)
        self.activation = cfg.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(ACTIVATIONS[self.activation](self.intermediate_dense(x)))


class _EncoderLayer(nnx.Module):
    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        eps = cfg.layer_norm_eps
        self.attention = _Attention(cfg.hidden_size, cfg.num_attention_heads, rngs)
        self.layer_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=eps, use_fast_variance=False, rngs=rngs)
        self.feed_forward = _FeedForward(cfg, rngs)
        self.final_layer_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=eps, use_fast_variance=False, rngs=rngs)
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stable:  # pre-LN
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))  # post-LN
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nnx.Module):
    def __init__(self, cfg: W2V2Config, rngs: nnx.Rngs) -> None:
        self.pos_conv_embed = _PositionalConv(cfg, rngs)
        self.layer_norm = nnx.LayerNorm(
            cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False, rngs=rngs
        )
        self.layers = nnx.List([_EncoderLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """Hidden states as transformers 5 records them, and the last hidden state.

        The recorded states are the input of the first layer and the output of every layer. In the
        stable (pre-LN) encoder the last of them is taken *before* the encoder's final layer norm
        (transformers 5 records layer outputs; 4.x recorded the normalised one).
        """
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        states = [x]
        for layer in self.layers:
            x = layer(x)
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
    map reads row by row.
    """

    def __init__(self, config: W2V2Config | Mapping[str, Any], *, rngs: nnx.Rngs) -> None:
        cfg = W2V2Config.from_mapping(config)
        self.config = cfg
        self.feature_extractor = _FeatureEncoder(cfg, rngs)
        self.feature_projection = _FeatureProjection(cfg, rngs)
        self.encoder = _Encoder(cfg, rngs)
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
