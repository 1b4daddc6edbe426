"""Transformer encoder pieces shared by the ported Hugging Face families (AST, Whisper; wav2vec2 uses
:func:`attention` and :func:`gelu_exact`).

Both reproduce the PyTorch numerics of ``transformers`` on purpose:

* LayerNorm takes its epsilon from the checkpoint's config and computes the variance as
  ``mean((x - mean)**2)`` like ``torch.nn.LayerNorm`` (Flax's default ``E[x**2] - E[x]**2`` loses
  precision when the mean is large, and its default epsilon 1e-6 is wrong for both families);
* ``"gelu"`` is the exact (erf) GELU, as in ``transformers.activations.ACT2FN``;
* attention scales either the scores (AST, ViT style) or the query before the product (Whisper);
  the two orders differ in the last bits, so the block keeps whichever its reference uses.

Parameter names (the Flax paths the converters' key maps target)::

    attn_norm/{scale,bias}  attn/{query,key,value,out}/{kernel,bias}
    mlp_norm/{scale,bias}   mlp/{fc1,fc2}/{kernel,bias}

Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> block = PreNormBlock(8, 2, 16, eps=1e-5, rngs=nnx.Rngs(0))
    >>> block(jnp.ones((1, 3, 8))).shape
    (1, 3, 8)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Self

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models.base import ModelError


class DictConfig:
    """Mixin for the families' frozen config dataclasses: to and from ``model.json`` dicts."""

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Self:
        """Build from a config dict; unknown keys are one error naming them all."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(config) - names)
        if unknown:
            raise ModelError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


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


# transformers' ACT2FN names for the activations these families use.
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation ``transformers`` calls ``name`` (``"gelu"`` is the exact erf form).

    Example:
        >>> float(activation("relu")(jnp.float32(-1.0)))
        0.0
    """
    if name not in _ACTIVATIONS:
        raise ModelError(f"unsupported activation {name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


def _dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float | None) -> jax.Array:
    scores = q @ jnp.swapaxes(k, -1, -2)
    if scale is not None:
        scores = scores * scale
    return jax.nn.softmax(scores, axis=-1) @ v


def _looped_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float | None) -> jax.Array:
    lead = q.shape[:-2]
    flat = [a.reshape(-1, *a.shape[-2:]) for a in (q, k, v)]
    out = jax.lax.map(lambda qkv: _dense_attention(*qkv, scale), tuple(flat))
    return out.reshape(*lead, *out.shape[-2:])


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float | None = None) -> jax.Array:
    """``softmax(q @ k.T [* scale]) @ v`` for ``q, k, v [..., T, D]`` (no mask), one head at a time on CPU.

    ``scale`` multiplies the scores (AST, wav2vec2); pass None when the query is already scaled
    (Whisper). On CPU the heads (every leading index) go through a ``lax.map`` one by one: XLA's
    CPU batched dot over the whole ``[B, H, T, T]`` score tensor runs 3-5x slower than a loop whose
    ``[T, T]`` scores stay in cache (measured on wav2vec2 at 800 frames). Each head's arithmetic is
    the same as the batched form's, so results agree to float32 round-off. Elsewhere (GPU) the
    batched form runs as is.

    Example:
        >>> q = jnp.ones((2, 3, 5, 4))
        >>> attention(q, q, q, scale=0.5).shape
        (2, 3, 5, 4)
    """
    return jax.lax.platform_dependent(
        q, k, v,
        cpu=functools.partial(_looped_attention, scale=scale),
        default=functools.partial(_dense_attention, scale=scale),
    )


def layer_norm(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """``torch.nn.LayerNorm(dim, eps)``: the checkpoint's epsilon and the two-pass variance."""
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with separate query/key/value/output projections.

    Args:
        dim: model width.
        heads: number of heads (``dim`` must divide evenly).
        qkv_bias: whether query and value carry a bias.
        key_bias: whether the key carries one (Whisper's ``k_proj`` has none).
        scale_query: scale the query before ``q @ k.T`` (Whisper) rather than the scores (AST).
        rngs: initialisation keys.
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
        self.query = nnx.Linear(dim, dim, use_bias=qkv_bias, rngs=rngs)
        self.key = nnx.Linear(dim, dim, use_bias=qkv_bias and key_bias, rngs=rngs)
        self.value = nnx.Linear(dim, dim, use_bias=qkv_bias, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        scale = self.head_dim**-0.5

        def heads(y: jax.Array) -> jax.Array:
            return y.reshape(b, t, self.heads, self.head_dim).transpose(0, 2, 1, 3)

        q = self.query(x)
        if self.scale_query:
            q = q * scale
        q, k, v = heads(q), heads(self.key(x)), heads(self.value(x))
        out = attention(q, k, v, scale=None if self.scale_query else scale)
        return self.out(out.transpose(0, 2, 1, 3).reshape(b, t, d))


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


def random_normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float = 0.02) -> nnx.Param:
    """A parameter drawn from N(0, std²) (random initialisation of tokens and embeddings)."""
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))
