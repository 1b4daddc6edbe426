"""Transformer pieces every ported Hugging Face family shares: the activation table, attention,
the self-attention module, layer norm and the pre-LN encoder block.

They reproduce the PyTorch numerics of ``transformers`` on purpose:

* LayerNorm takes its epsilon from the checkpoint's config and computes the variance as
  ``mean((x - mean)**2)`` like ``torch.nn.LayerNorm`` (Flax's default ``E[x**2] - E[x]**2`` loses
  precision when the mean is large, and its default epsilon 1e-6 is wrong for every family);
* ``"gelu"`` is the exact (erf) GELU, as in ``transformers.activations.ACT2FN``;
* attention scales either the scores (AST, wav2vec2) or the query before the product (Whisper,
  and ``torch.nn.functional.multi_head_attention_forward``, which WavLM calls); the two orders
  differ in the last bits, so each family keeps whichever its reference uses.

:class:`SelfAttention` is the one attention module (parameters ``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``, transformers' names). A family whose attention adds a bias to the scores (WavLM's
gated relative position bias) subclasses it and passes ``bias`` and ``gate`` to its ``__call__``.

Parameter names of :class:`PreNormBlock` (the Flax paths the AST and Whisper key maps target)::

    attn_norm/{scale,bias}  attn/{q_proj,k_proj,v_proj,out_proj}/{kernel,bias}
    mlp_norm/{scale,bias}   mlp/{fc1,fc2}/{kernel,bias}

Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> block = PreNormBlock(8, 2, 16, eps=1e-5, rngs=nnx.Rngs(0))
    >>> block(jnp.ones((1, 3, 8))).shape
    (1, 3, 8)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models.base import ModelError

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_RENAMED",
    "FeedForward",
    "PreNormBlock",
    "SelfAttention",
    "activation",
    "attention",
    "gelu_exact",
    "layer_norm",
    "random_normal",
]


# ----------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------


def gelu_exact(x: jax.Array) -> jax.Array:
    """transformers' ``"gelu"``: the exact erf GELU ``x/2 * (1 + erf(x/sqrt(2)))``, torch's own form.

    ``jax.nn.gelu(x, approximate=False)`` is the same function computed through ``erfc``, which XLA
    on CPU evaluates about 4x slower; the two agree to float32 round-off.

    Example:
        >>> round(float(gelu_exact(jnp.float32(1.0))), 4)
        0.8413
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * 2**-0.5))


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def _linear(x: jax.Array) -> jax.Array:
    return x


#: transformers' ``ACT2FN`` names the ported families use (``hidden_act``,
#: ``feat_extract_activation``, ``activation_function``), each with torch's numerics.
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


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation ``transformers`` calls ``name`` (``"gelu"`` is the exact erf form).

    Raises:
        ModelError: a name the table does not hold; the message lists the supported ones.

    Example:
        >>> float(activation("relu")(jnp.float32(-1.0)))
        0.0
    """
    if name not in ACTIVATIONS:
        raise ModelError(f"unsupported activation {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------


def _scores(q: jax.Array, k: jax.Array, scale: float | None, bias: jax.Array | None,
            gate: jax.Array | None) -> jax.Array:
    scores = q @ jnp.swapaxes(k, -1, -2)
    if scale is not None:
        scores = scores * scale
    if bias is not None:
        scores = scores + (bias if gate is None else gate * bias)
    return scores


def _dense_attention(q, k, v, bias, gate, *, scale):
    return jax.nn.softmax(_scores(q, k, scale, bias, gate), axis=-1) @ v


def _head_slice(a: jax.Array | None, lead: tuple[int, ...], index: tuple[jax.Array, ...]) -> jax.Array | None:
    # The [T, S] (or [T, 1]) matrix of `a` for one head; `a` has q's rank and broadcasts over the
    # leading axes, so an axis of size 1 is indexed at 0 and nothing is materialised per head.
    if a is None:
        return None
    return a[tuple(0 if a.shape[j] == 1 else index[j] for j in range(len(lead)))]


def _looped_attention(q, k, v, bias, gate, *, scale):
    lead = q.shape[:-2]
    flat = [x.reshape(-1, *x.shape[-2:]) for x in (q, k, v)]

    def one(args):
        qi, ki, vi, i = args
        index = jnp.unravel_index(i, lead)
        b, g = _head_slice(bias, lead, index), _head_slice(gate, lead, index)
        return _dense_attention(qi, ki, vi, b, g, scale=scale)

    out = jax.lax.map(one, (*flat, jnp.arange(math.prod(lead))))
    return out.reshape(*lead, *out.shape[-2:])


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,
    gate: jax.Array | None = None,
) -> jax.Array:
    """``softmax(q @ k.T [* scale] [+ gate * bias]) @ v`` for ``q [..., T, D]``, ``k, v [..., S, D]``
    (no mask), one head at a time on CPU.

    Args:
        q, k, v: queries, keys and values; the leading axes (batch, heads) are independent.
        scale: multiplies the scores (AST, wav2vec2); None when the query is already scaled.
        bias: added to the scores (WavLM's relative position bias); q's rank, each leading axis
            q's size or 1 (broadcast), the last two ``[T, S]``.
        gate: multiplies ``bias`` before it is added: q's rank, last two axes ``[T, 1]``, leading
            axes as for ``bias``. Ignored without a bias.

    On CPU the heads (every leading index) go through a ``lax.map`` one by one: XLA's CPU batched
    dot over the whole ``[B, H, T, T]`` score tensor runs 3-5x slower than a loop whose ``[T, T]``
    scores stay in cache (measured on wav2vec2 at 800 frames). A broadcast bias is indexed per
    head inside the loop, never expanded to ``[B, H, T, S]``. Each head's arithmetic is the same as
    the batched form's, so results agree to float32 round-off. Elsewhere (GPU) the batched form
    runs as is.

    Example:
        >>> q = jnp.ones((2, 3, 5, 4))
        >>> attention(q, q, q, scale=0.5).shape
        (2, 3, 5, 4)
        >>> attention(q, q, q, scale=0.5, bias=jnp.zeros((1, 3, 5, 5))).shape
        (2, 3, 5, 4)
    """
    for name, a in (("bias", bias), ("gate", gate)):
        if a is not None and a.ndim != q.ndim:
            raise ModelError(f"attention {name} must have the queries' rank {q.ndim}, got shape {a.shape}")
    return jax.lax.platform_dependent(
        q, k, v, bias, gate,
        cpu=functools.partial(_looped_attention, scale=scale),
        default=functools.partial(_dense_attention, scale=scale),
    )


class SelfAttention(nnx.Module):
    """Multi-head self-attention: ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` projections.

    Args:
        dim: model width.
        heads: number of heads (``dim`` must divide evenly).
        qkv_bias: whether query, key and value carry a bias.
        key_bias: whether the key carries one (Whisper's ``k_proj`` has none).
        scale_query: scale the query before ``q @ k.T`` (Whisper, torch's
            ``multi_head_attention_forward``) rather than the scores (AST, wav2vec2).
        rngs: initialisation keys.

    Subclasses extend it by computing a score ``bias`` (and its ``gate``) and passing them to
    ``SelfAttention.__call__`` (see :func:`attention` for their shapes), as WavLM's gated relative
    position bias does.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qkv_bias: bool = True,
        key_bias: bool = True,
        scale_query: bool = False,
        rngs: nnx.Rngs,
    ):
        if dim % heads:
            raise ModelError(f"hidden size {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale_query = scale_query
        self.q_proj = nnx.Linear(dim, dim, use_bias=qkv_bias, rngs=rngs)
        self.k_proj = nnx.Linear(dim, dim, use_bias=qkv_bias and key_bias, rngs=rngs)
        self.v_proj = nnx.Linear(dim, dim, use_bias=qkv_bias, rngs=rngs)
        self.out_proj = nnx.Linear(dim, dim, rngs=rngs)

    def split_heads(self, y: jax.Array) -> jax.Array:
        """``[B, T, dim]`` -> ``[B, heads, T, head_dim]``."""
        b, t, _ = y.shape
        return y.reshape(b, t, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def __call__(self, x: jax.Array, *, bias: jax.Array | None = None, gate: jax.Array | None = None) -> jax.Array:
        b, t, d = x.shape
        scale = self.head_dim**-0.5
        q = self.q_proj(x)
        if self.scale_query:
            q = q * scale
        q, k, v = self.split_heads(q), self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))
        out = attention(q, k, v, scale=None if self.scale_query else scale, bias=bias, gate=gate)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def layer_norm(dim: int, eps: float, rngs: nnx.Rngs, *, affine: bool = True) -> nnx.LayerNorm:
    """``torch.nn.LayerNorm(dim, eps, elementwise_affine=affine)``: the checkpoint's epsilon and the
    two-pass variance."""
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, use_scale=affine, use_bias=affine, rngs=rngs)


class FeedForward(nnx.Module):
    """``fc2(act(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int, act: str, rngs: nnx.Rngs):
        self.act = activation(act)
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class PreNormBlock(nnx.Module):
    """A pre-LayerNorm encoder layer: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    This is ``ASTLayer`` and ``WhisperEncoderLayer`` alike (dropout is off at inference).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        *,
        eps: float,
        act: str = "gelu",
        qkv_bias: bool = True,
        key_bias: bool = True,
        scale_query: bool = False,
        rngs: nnx.Rngs,
    ):
        self.attn_norm = layer_norm(dim, eps, rngs)
        self.attn = SelfAttention(
            dim, heads, qkv_bias=qkv_bias, key_bias=key_bias, scale_query=scale_query, rngs=rngs
        )
        self.mlp_norm = layer_norm(dim, eps, rngs)
        self.mlp = FeedForward(dim, ffn_dim, act, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


#: ``Architecture.renamed`` rows for the AST and Whisper blocks: directories saved before the
#: families shared :class:`SelfAttention` name its projections ``query``, ``key``, ``value``, ``out``.
ATTENTION_RENAMED: tuple[tuple[str, str], ...] = (
    ("attn/query", "attn/q_proj"),
    ("attn/key", "attn/k_proj"),
    ("attn/value", "attn/v_proj"),
    ("attn/out", "attn/out_proj"),
)


def random_normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float = 0.02) -> nnx.Param:
    """A parameter drawn from N(0, std²) (random initialisation of tokens and embeddings)."""
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))
