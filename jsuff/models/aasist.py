"""AASIST and AASIST-L: raw-waveform spoofing detectors with spectro-temporal graph attention.

A port of clovaai/aasist ``models/AASIST.py`` (Jung et al., ICASSP 2022) for inference. One
architecture, ``aasist``, covers both released models; the published model config picks the size
(``filts``, ``gat_dims``, ``pool_ratios``, ``temperatures``, ``first_conv``, ``nb_samp``). Class 0
is spoof, class 1 bona fide.

The computation, for ``waveforms[B, T]`` (16 kHz; the published models were trained on ``nb_samp``
= 64600 samples, see :meth:`AasistConfig.input_policy`; any ``T >= taps - 1 + 3**7`` runs):

1. *Front end*: ``filts[0]`` fixed mel-spaced sinc filters of ``first_conv`` (+1 if even) taps,
   valid convolution (:mod:`jsuff.models.sinc`); ``|x|``; a 3×3 max-pool over the (filter, time)
   plane, floor mode; batch norm (one channel); SELU.
2. *Encoder*: six 2-D residual blocks over (spectral, time) with ``filts[1], filts[2], filts[3],
   filts[4], filts[4], filts[4]`` channels: conv (2,3) pad (1,1) → BN → SELU → conv (2,3) pad
   (0,1), plus the input (through a (1,3) conv when the width changes), then a (1,3) max-pool.
3. *Graphs*: spectral nodes ``max_t |e|`` (+ a learned positional table ``pos_S``), temporal
   nodes ``max_f |e|``; one graph-attention layer and one top-k graph pool each.
4. *Heterogeneous stage*: two branches, each a heterogeneous graph-attention layer with a master
   node, a top-k pool of each node type and a second heterogeneous layer added residually; the
   branches meet in an element-wise max.
5. *Readout*: ``[max |T|, mean T, max |S|, mean S, master]`` → linear → 2 logits.

Reproduced on purpose (each also commented where it happens):

* the sinc filters are computed from the config, never stored;
* each non-first residual block's ``bn1`` (and the SELU after it) is computed in the reference and
  its result discarded (``conv1`` reads the block input); its statistics are in the checkpoint but
  have no effect, so this module has no ``bn1`` and the converter drops those keys explicitly;
* the attention vectors ``att_weight*`` are used as ``x @ w`` with their stored ``(out, 1)``
  shape: no transpose;
* attention logits are divided by the layer's temperature before the softmax, and the softmax
  normalises over the *second* node index (``dim=-2`` of ``[B, N, N, 1]``);
* top-k graph pooling keeps ``max(int(N * ratio), 1)`` nodes in descending score order (ties: lower
  node index first, which is ``jax.lax.top_k``'s rule) after scaling every node by its sigmoid
  score; the order matters because the two branches are combined node by node;
* only ``pool_ratios[0..2]`` and ``temperatures[0..2]`` are used (the reference's fourth entries are
  dead); the spectral positional table has ``filts[0] // 3`` rows (23 in the reference, where it is
  hard-coded);
* every batch norm runs in inference mode with its running statistics and PyTorch's eps 1e-5;
* dropout layers are identities at inference and are left out.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cfg = {"nb_samp": 4000, "first_conv": 16, "filts": [70, [1, 4], [4, 4], [4, 8], [8, 8]],
    ...        "gat_dims": [8, 8], "pool_ratios": [0.5, 0.7, 0.5, 0.5],
    ...        "temperatures": [2.0, 2.0, 100.0, 100.0]}
    >>> m = build(cfg, nnx.Rngs(0)); m.eval()
    >>> m(jnp.zeros((2, 4000))).shape
    (2, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models._family import FamilyConfig, init_rngs
from jsuff.models.base import Architecture, InputPolicy, register
from jsuff.models.sinc import mel_sinc_filters, odd_kernel_size, sinc_conv

__all__ = [
    "ARCH",
    "LABELS",
    "Aasist",
    "AasistConfig",
    "build",
    "GraphAttention",
    "GraphPool",
    "HeteroGraphAttention",
    "ResidualBlock2d",
]

ARCH = "aasist"
LABELS = ("spoof", "bonafide")

# PyTorch BatchNorm defaults: eps 1e-5; momentum 0.1 is Flax momentum 0.9.
_BN = {"epsilon": 1e-5, "momentum": 0.9}


@dataclasses.dataclass(frozen=True)
class AasistConfig(FamilyConfig):
    """The published AASIST model config (``model_config`` of ``AASIST.conf``/``AASIST-L.conf``).

    Attributes:
        filts: ``[n_sinc, [in, out] x 4]``: sinc filter count, then the residual blocks' channels.
        gat_dims: ``[d0, d1]``: graph-attention widths (first stage, heterogeneous stage).
        pool_ratios: top-k ratios; entries 0, 1, 2 are used (spectral, temporal, heterogeneous).
        temperatures: attention temperatures; entries 0, 1, 2 are used likewise.
        first_conv: sinc filter length (an even value gets one more tap).
        nb_samp: the clip length the model was trained on (the input policy's length).
        sample_rate: the rate the sinc band edges refer to.
        nb_classes: output classes (2 in every published model).
    """

    family: ClassVar[str] = ARCH
    ignored_keys: ClassVar[tuple[str, ...]] = ("architecture",)

    filts: tuple
    gat_dims: tuple[int, int]
    pool_ratios: tuple[float, ...]
    temperatures: tuple[float, ...]
    first_conv: int
    nb_samp: int = 64600
    sample_rate: int = 16000
    nb_classes: int = 2

    def __post_init__(self) -> None:
        f = self.filts

        def is_pair(p: object) -> bool:
            return isinstance(p, tuple) and len(p) == 2 and all(isinstance(c, int) and c > 0 for c in p)

        if not (len(f) == 5 and isinstance(f[0], int) and all(is_pair(p) for p in f[1:])):
            raise ValueError(f"filts must be [n_sinc, [in, out], [in, out], [in, out], [in, out]], got {f}")
        if f[1][0] != 1:
            raise ValueError(f"filts[1][0] must be 1 (the encoder's input is one channel), got {f[1][0]}")
        for a, b in zip(f[1:], f[2:]):
            if a[1] != b[0]:
                raise ValueError(f"filts: block output {a[1]} does not feed block input {b[0]} in {f}")
        if f[4][0] != f[4][1]:
            raise ValueError(f"filts[4] is repeated three times, so it must be square, got {f[4]}")
        if f[0] < 3:
            raise ValueError(f"filts[0] (sinc filters) must be at least 3, got {f[0]}")
        if len(self.gat_dims) != 2:
            raise ValueError(f"gat_dims must be [d0, d1], got {self.gat_dims}")
        if len(self.pool_ratios) < 3 or not all(0 < r <= 1 for r in self.pool_ratios[:3]):
            raise ValueError(f"pool_ratios needs 3 ratios in (0, 1], got {self.pool_ratios}")
        if len(self.temperatures) < 3 or not all(t > 0 for t in self.temperatures[:3]):
            raise ValueError(f"temperatures needs 3 positive values, got {self.temperatures}")



    @property
    def spectral_nodes(self) -> int:
        return self.filts[0] // 3

    def input_policy(self) -> InputPolicy:
        """``nb_samp`` samples; short clips tiled, long ones cut to their first ``nb_samp``.

        This is the reference's evaluation loader (``data_utils.pad``: ``x[:max_len]`` when long
        enough, else ``np.tile``); its random crop (``pad_random``) is for training only.
        """
        return InputPolicy(length=self.nb_samp, pad="repeat", crop="start")


def _pairwise(x: jax.Array) -> jax.Array:
    """``[B, N, D] -> [B, N, N, D]`` with entry ``(i, j)`` = ``x_i * x_j``."""
    return x[:, :, None, :] * x[:, None, :, :]


def _att_vector(out_dim: int, rngs: nnx.Rngs) -> nnx.Param:
    # Stored as (out, 1) and applied as ``h @ w``, exactly like the reference's parameter.
    return nnx.Param(nnx.initializers.xavier_normal()(rngs.params(), (out_dim, 1)))


class GraphAttention(nnx.Module):
    """Graph attention over fully connected nodes (``GraphAttentionLayer``)."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float, *, rngs: nnx.Rngs):
        self.att_proj = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.att_weight = _att_vector(out_dim, rngs)
        self.proj_with_att = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.proj_without_att = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.bn = nnx.BatchNorm(out_dim, **_BN, rngs=rngs)
        self.temperature = float(temperature)

    def __call__(self, x: jax.Array) -> jax.Array:
        scores = jnp.tanh(self.att_proj(_pairwise(x))) @ self.att_weight[...]
        # Softmax over the second node index, after the temperature (reference: dim=-2).
        att = jax.nn.softmax(scores[..., 0] / self.temperature, axis=2)
        h = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return jax.nn.selu(self.bn(h))


class HeteroGraphAttention(nnx.Module):
    """Heterogeneous graph attention over two node types plus a master node (``HtrgGraphAttentionLayer``)."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float, *, rngs: nnx.Rngs):
        self.proj_type1 = nnx.Linear(in_dim, in_dim, rngs=rngs)
        self.proj_type2 = nnx.Linear(in_dim, in_dim, rngs=rngs)
        self.att_proj = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.att_proj_m = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.att_weight11 = _att_vector(out_dim, rngs)
        self.att_weight22 = _att_vector(out_dim, rngs)
        self.att_weight12 = _att_vector(out_dim, rngs)
        self.att_weight_m = _att_vector(out_dim, rngs)
        self.proj_with_att = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.proj_without_att = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.proj_with_att_m = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.proj_without_att_m = nnx.Linear(in_dim, out_dim, rngs=rngs)
        self.bn = nnx.BatchNorm(out_dim, **_BN, rngs=rngs)
        self.temperature = float(temperature)

    def __call__(
        self, x1: jax.Array, x2: jax.Array, master: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``x1[B, N1, D]``, ``x2[B, N2, D]``, ``master[B or 1, 1, D]`` -> the three updated."""
        n1, n2 = x1.shape[1], x2.shape[1]
        x = jnp.concatenate([self.proj_type1(x1), self.proj_type2(x2)], axis=1)

        # Node attention: one attention vector per block of the (type, type) adjacency; both
        # cross-type blocks share att_weight12.
        t = jnp.tanh(self.att_proj(_pairwise(x)))
        first = np.arange(n1 + n2) < n1
        same1 = (first[:, None] & first[None, :])[None, :, :]
        same2 = (~first[:, None] & ~first[None, :])[None, :, :]
        s11 = (t @ self.att_weight11[...])[..., 0]
        s22 = (t @ self.att_weight22[...])[..., 0]
        s12 = (t @ self.att_weight12[...])[..., 0]
        scores = jnp.where(same1, s11, jnp.where(same2, s22, s12))
        att = jax.nn.softmax(scores / self.temperature, axis=2)

        # Master node: attends over all nodes (it is not batch-normed or activated).
        m = jnp.tanh(self.att_proj_m(x * master)) @ self.att_weight_m[...]
        m_att = jax.nn.softmax(m[..., 0] / self.temperature, axis=1)
        new_master = self.proj_with_att_m(m_att[:, None, :] @ x) + self.proj_without_att_m(master)

        h = self.proj_with_att(att @ x) + self.proj_without_att(x)
        h = jax.nn.selu(self.bn(h))
        return h[:, :n1], h[:, n1:], new_master


class GraphPool(nnx.Module):
    """Top-k graph pooling by a learned sigmoid score (``GraphPool``)."""

    def __init__(self, ratio: float, in_dim: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(in_dim, 1, rngs=rngs)
        self.ratio = float(ratio)

    def __call__(self, h: jax.Array) -> jax.Array:
        scores = jax.nn.sigmoid(self.proj(h))  # [B, N, 1]
        k = max(int(h.shape[1] * self.ratio), 1)  # Python float arithmetic, as the reference
        # Descending scores; equal scores keep the lower node index first.
        _, idx = jax.lax.top_k(scores[..., 0], k)
        return jnp.take_along_axis(h * scores, idx[..., None], axis=1)


class ResidualBlock2d(nnx.Module):
    """``Residual_block`` of the AASIST encoder, channels-last ``[B, H (spectral), W (time), C]``."""

    def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        # The reference's bn1 (on non-first blocks) feeds nothing: conv1 reads the block input.
        # It is therefore not built here; see the module docstring.
        self.conv1 = nnx.Conv(in_ch, out_ch, (2, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_ch, **_BN, rngs=rngs)
        self.conv2 = nnx.Conv(out_ch, out_ch, (2, 3), padding=((0, 0), (1, 1)), rngs=rngs)
        self.conv_downsample = (
            nnx.Conv(in_ch, out_ch, (1, 3), padding=((0, 0), (1, 1)), rngs=rngs) if in_ch != out_ch else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv2(jax.nn.selu(self.bn2(self.conv1(x))))
        identity = x if self.conv_downsample is None else self.conv_downsample(x)
        return nnx.max_pool(out + identity, (1, 3), strides=(1, 3))  # floor mode, as torch


class Aasist(nnx.Module):
    """The AASIST network; ``__call__(waveforms[B, T]) -> logits[B, 2]``."""

    def __init__(self, config: AasistConfig, *, rngs: nnx.Rngs):
        self.config = config
        f = config.filts
        d0, d1 = config.gat_dims
        ratios, temps = config.pool_ratios, config.temperatures
        channels = f[-1][-1]
        self.first_bn = nnx.BatchNorm(1, **_BN, rngs=rngs)
        self.encoder = nnx.List(
            [ResidualBlock2d(i, o, rngs=rngs) for i, o in (f[1], f[2], f[3], f[4], f[4], f[4])]
        )
        self.pos_s = nnx.Param(jax.random.normal(rngs.params(), (1, config.spectral_nodes, channels)))
        self.master1 = nnx.Param(jax.random.normal(rngs.params(), (1, 1, d0)))
        self.master2 = nnx.Param(jax.random.normal(rngs.params(), (1, 1, d0)))
        self.gat_s = GraphAttention(channels, d0, temps[0], rngs=rngs)
        self.gat_t = GraphAttention(channels, d0, temps[1], rngs=rngs)
        # The reference gives all four heterogeneous layers temperatures[2].
        self.htrg_st11 = HeteroGraphAttention(d0, d1, temps[2], rngs=rngs)
        self.htrg_st12 = HeteroGraphAttention(d1, d1, temps[2], rngs=rngs)
        self.htrg_st21 = HeteroGraphAttention(d0, d1, temps[2], rngs=rngs)
        self.htrg_st22 = HeteroGraphAttention(d1, d1, temps[2], rngs=rngs)
        self.pool_s = GraphPool(ratios[0], d0, rngs=rngs)
        self.pool_t = GraphPool(ratios[1], d0, rngs=rngs)
        # ... and all four heterogeneous pools pool_ratios[2].
        self.pool_hs1 = GraphPool(ratios[2], d1, rngs=rngs)
        self.pool_ht1 = GraphPool(ratios[2], d1, rngs=rngs)
        self.pool_hs2 = GraphPool(ratios[2], d1, rngs=rngs)
        self.pool_ht2 = GraphPool(ratios[2], d1, rngs=rngs)
        self.out_layer = nnx.Linear(5 * d1, config.nb_classes, rngs=rngs)

    def front_end(self, waveforms: jax.Array) -> jax.Array:
        """``waveforms[B, T]`` -> ``[B, filts[0] // 3, (T - taps + 1) // 3, 1]``."""
        cfg = self.config
        x = sinc_conv(waveforms, mel_sinc_filters(cfg.filts[0], cfg.first_conv, cfg.sample_rate))
        # torch: max_pool2d(|x|, (3, 3)) on [B, 1, filters, time]; here [B, filters, time, 1].
        x = jnp.swapaxes(jnp.abs(x), 1, 2)[..., None]
        x = nnx.max_pool(x, (3, 3), strides=(3, 3))
        return jax.nn.selu(self.first_bn(x))

    def _branch(
        self,
        out_t: jax.Array,
        out_s: jax.Array,
        master: jax.Array,
        layer1: HeteroGraphAttention,
        layer2: HeteroGraphAttention,
        pool_s: GraphPool,
        pool_t: GraphPool,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        t1, s1, m1 = layer1(out_t, out_s, master)
        s1, t1 = pool_s(s1), pool_t(t1)
        t_aug, s_aug, m_aug = layer2(t1, s1, m1)
        return t1 + t_aug, s1 + s_aug, m1 + m_aug

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        if waveforms.ndim != 2:
            raise ValueError(f"AASIST expects waveforms[B, T], got shape {waveforms.shape}")
        # seven max-pools of 3 along time (front end + six blocks) must leave one temporal node
        shortest = odd_kernel_size(self.config.first_conv) - 1 + 3**7
        if waveforms.shape[1] < shortest:
            raise ValueError(f"AASIST needs clips of at least {shortest} samples, got {waveforms.shape[1]}")
        e = jnp.abs(self._encode(waveforms))  # [B, H, W, C]

        e_s = jnp.max(e, axis=2) + self.pos_s[...]  # spectral nodes: max over time
        out_s = self.pool_s(self.gat_s(e_s))
        e_t = jnp.max(e, axis=1)  # temporal nodes: max over frequency
        out_t = self.pool_t(self.gat_t(e_t))

        # Each branch starts from the learned master node itself ([1, 1, d0], broadcast).
        t1, s1, m1 = self._branch(
            out_t, out_s, self.master1[...], self.htrg_st11, self.htrg_st12, self.pool_hs1, self.pool_ht1
        )
        t2, s2, m2 = self._branch(
            out_t, out_s, self.master2[...], self.htrg_st21, self.htrg_st22, self.pool_hs2, self.pool_ht2
        )
        # Node-by-node maximum of the two branches (node order = each pool's score order).
        out_t, out_s, master = jnp.maximum(t1, t2), jnp.maximum(s1, s2), jnp.maximum(m1, m2)
        hidden = jnp.concatenate(
            [
                jnp.max(jnp.abs(out_t), axis=1),
                jnp.mean(out_t, axis=1),
                jnp.max(jnp.abs(out_s), axis=1),
                jnp.mean(out_s, axis=1),
                master[:, 0, :],
            ],
            axis=1,
        )
        return self.out_layer(hidden)

    def _encode(self, waveforms: jax.Array) -> jax.Array:
        x = self.front_end(waveforms)
        for block in self.encoder:
            x = block(x)
        return x


def build(config: Mapping[str, Any], rngs: nnx.Rngs) -> Aasist:
    """Build a randomly initialised AASIST from its published model config (a JSON mapping)."""
    return Aasist(AasistConfig.from_mapping(config), rngs=init_rngs(rngs))


register(
    Architecture(ARCH, build, "AASIST / AASIST-L spoofing detector (clovaai/aasist), raw 16 kHz", "aasist")
)
