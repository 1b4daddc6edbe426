"""RawNet2 anti-spoofing: the ASVspoof 2021 baseline (Tak et al., ICASSP 2021).

A port of the layout of clovaai/aasist ``models/RawNet2Spoof.py`` for inference, configurable from
its published model config (``filts``, ``first_conv``, ``blocks``, ``gru_node``, ``nb_gru_layer``,
``nb_fc_node``, ``nb_classes``, ``nb_samp``). Class 0 is spoof, class 1 bona fide.

The computation, for ``waveforms[B, T]`` at 16 kHz (trained on ``nb_samp`` samples, see
:meth:`RawNet2Config.input_policy`; any ``T >= taps - 1 + 3**(1 + blocks)`` runs), channels last
``[B, time, filters]``:

1. ``filts[0]`` fixed mel-spaced sinc filters of ``first_conv`` (+1 if even) taps, valid
   convolution (:mod:`jsuff.models.sinc`); ``|x|``; max-pool 3 (floor); batch norm; SELU.
2. ``blocks[0]`` residual blocks with ``filts[1]`` channels, then ``blocks[1]`` with ``filts[2]``
   (the first block of a group maps ``in -> out``, the rest ``out -> out``): conv 3 pad 1 → BN →
   LeakyReLU(0.3) → conv 3 pad 1, plus the input (through a 1×1 conv when the width changes), then
   max-pool 3. After each block, *filter-wise feature map scaling* (FMS): ``s = sigmoid(linear(
   mean_t x))`` and ``x = x * s + s``.
3. Batch norm, SELU, a ``nb_gru_layer``-layer GRU (batch first, zero initial state); the last time
   step → ``fc1_gru`` (the hidden embedding) → ``fc2_gru`` → log-softmax.

The module returns the reference's output, the *log-softmax* (valid logits: same argmax and
softmax). ``__call__(x, return_hidden=True)`` also returns the ``fc1_gru`` output;
:func:`hidden_apply` gives that for a loaded :class:`~jsuff.models.base.Model`.

Reproduced on purpose:

* the sinc filters are computed, not stored;
* each non-first block's ``bn1`` (and LeakyReLU) is computed in the reference and discarded
  (``conv1`` reads the block input): the module has no ``bn1`` and the converter drops its keys;
* the GRU follows ``torch.nn.GRU``: gates in the order (r, z, n), each with an input bias and a
  hidden bias, and the n gate's hidden term *including its bias* inside ``r * (...)``:
  ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``;
* batch norms use running statistics and eps 1e-5.

The reference ignores ``blocks`` and always builds 2 + 4 blocks (and mutates ``filts[2][0]``);
here ``blocks`` defaults to ``[2, 4]``, which is that layout, and other values size the network.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cfg = {"first_conv": 128, "filts": [8, [8, 8], [8, 16]], "gru_node": 16,
    ...        "nb_gru_layer": 1, "nb_fc_node": 8, "nb_classes": 2}
    >>> m = build(cfg, nnx.Rngs(0)); m.eval()
    >>> m(jnp.zeros((2, 16000))).shape
    (2, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._family import FamilyConfig, init_rngs
from jsuff.models.base import Architecture, InputPolicy, Model, Params, get_architecture, register
from jsuff.models.sinc import mel_sinc_filters, odd_kernel_size, sinc_conv

__all__ = [
    "ARCH",
    "LABELS",
    "build",
    "GRULayer",
    "hidden_apply",
    "RawNet2",
    "RawNet2Config",
    "ResidualBlock1d",
]

ARCH = "rawnet2"
LABELS = ("spoof", "bonafide")

# PyTorch BatchNorm defaults: eps 1e-5; momentum 0.1 is Flax momentum 0.9.
_BN = {"epsilon": 1e-5, "momentum": 0.9}
_LEAKY_SLOPE = 0.3  # nn.LeakyReLU(negative_slope=0.3) in the residual blocks


@dataclasses.dataclass(frozen=True)
class RawNet2Config(FamilyConfig):
    """The published RawNet2 model config (``model_config`` of ``RawNet2_baseline.conf``).

    Attributes:
        filts: ``[n_sinc, [in, out], [in, out], ...]``: entries 1 and 2 size the two block
            groups (later entries, present in published configs, are unused, as in the reference).
        first_conv: sinc filter length (an even value gets one more tap).
        gru_node: GRU hidden size.
        nb_gru_layer: GRU layers.
        nb_fc_node: width of ``fc1_gru`` (the hidden embedding).
        nb_classes: output classes.
        blocks: residual blocks in each of the two groups.
        in_channels: must be 1 (the sinc front end takes mono audio).
        nb_samp: the clip length the model was trained on (the input policy's length).
        sample_rate: the rate the sinc band edges refer to.
    """

    family: ClassVar[str] = ARCH
    ignored_keys: ClassVar[tuple[str, ...]] = ("architecture",)

    filts: tuple
    first_conv: int
    gru_node: int
    nb_gru_layer: int
    nb_fc_node: int
    nb_classes: int = 2
    blocks: tuple[int, int] = (2, 4)
    in_channels: int = 1
    nb_samp: int = 64600
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        f = self.filts
        if not (
            len(f) >= 3
            and isinstance(f[0], int)
            and all(isinstance(p, tuple) and len(p) == 2 for p in f[1:3])
        ):
            raise ValueError(f"filts must be [n_sinc, [in, out], [in, out], ...], got {f}")
        if f[1][0] != f[0] or f[2][0] != f[1][1]:
            raise ValueError(f"filts channels do not chain: sinc {f[0]} -> {f[1]} -> {f[2]}")
        if self.in_channels != 1:
            raise ValueError(f"the sinc front end takes one input channel, got in_channels={self.in_channels}")
        if len(self.blocks) != 2 or min(self.blocks) < 1:
            raise ValueError(f"blocks must be two positive counts, got {self.blocks}")
        for name in ("first_conv", "gru_node", "nb_gru_layer", "nb_fc_node", "nb_classes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")



    def input_policy(self) -> InputPolicy:
        """``nb_samp`` samples; short clips tiled, long ones cut to their first ``nb_samp`` (the
        ASVspoof 2021 baseline's evaluation loader, the same ``pad`` as AASIST's)."""
        return InputPolicy(length=self.nb_samp, pad="repeat", crop="start")

    def block_channels(self) -> list[tuple[int, int]]:
        """``(in, out)`` of every residual block, in order."""
        out = []
        for group, count in enumerate(self.blocks):
            c_in, c_out = self.filts[1 + group]
            out += [(c_in, c_out)] + [(c_out, c_out)] * (count - 1)
        return out


class ResidualBlock1d(nnx.Module):
    """``Residual_block`` of RawNet2, channels-last ``[B, T, C]``."""

    def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        # No bn1: the reference computes it and discards the result (conv1 reads the input).
        self.conv1 = nnx.Conv(in_ch, out_ch, (3,), padding=((1, 1),), rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_ch, **_BN, rngs=rngs)
        self.conv2 = nnx.Conv(out_ch, out_ch, (3,), padding=((1, 1),), rngs=rngs)
        self.conv_downsample = (
            nnx.Conv(in_ch, out_ch, (1,), padding="VALID", rngs=rngs) if in_ch != out_ch else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv1(x)
        out = self.conv2(jax.nn.leaky_relu(self.bn2(out), _LEAKY_SLOPE))
        identity = x if self.conv_downsample is None else self.conv_downsample(x)
        return nnx.max_pool(out + identity, (3,), strides=(3,))  # floor mode, as torch


class GRULayer(nnx.Module):
    """One ``torch.nn.GRU`` layer (batch first), gate order (r, z, n) in the 3H axis."""

    def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.ih = nnx.Linear(in_dim, 3 * hidden, rngs=rngs)  # weight_ih_l{k}, bias_ih_l{k}
        self.hh = nnx.Linear(hidden, 3 * hidden, rngs=rngs)  # weight_hh_l{k}, bias_hh_l{k}
        self.hidden = hidden

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x[B, T, D]`` -> every step's hidden state ``[B, T, H]`` (zero initial state)."""
        H = self.hidden
        gi = self.ih(x)  # all input projections at once, biases b_i* included
        w_hh, b_hh = self.hh.kernel[...], self.hh.bias[...][None, :]

        def step(h: jax.Array, gi_t: jax.Array) -> tuple[jax.Array, jax.Array]:
            gh = h @ w_hh + b_hh  # hidden biases b_h* included, so b_hn sits inside r * (...)
            r = jax.nn.sigmoid(gi_t[:, :H] + gh[:, :H])
            z = jax.nn.sigmoid(gi_t[:, H : 2 * H] + gh[:, H : 2 * H])
            n = jnp.tanh(gi_t[:, 2 * H :] + r * gh[:, 2 * H :])
            h = (1.0 - z) * n + z * h
            return h, h

        h0 = jnp.zeros((x.shape[0], H), x.dtype)
        _, hs = jax.lax.scan(step, h0, jnp.swapaxes(gi, 0, 1))
        return jnp.swapaxes(hs, 0, 1)


class RawNet2(nnx.Module):
    """The RawNet2 anti-spoofing network; ``__call__(waveforms[B, T]) -> log_probs[B, C]``."""

    def __init__(self, config: RawNet2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.first_bn = nnx.BatchNorm(config.filts[0], **_BN, rngs=rngs)
        chans = config.block_channels()
        self.blocks = nnx.List([ResidualBlock1d(i, o, rngs=rngs) for i, o in chans])
        self.attention = nnx.List([nnx.Linear(o, o, rngs=rngs) for _, o in chans])
        width = chans[-1][1]
        self.bn_before_gru = nnx.BatchNorm(width, **_BN, rngs=rngs)
        self.gru = nnx.List(
            [
                GRULayer(width if k == 0 else config.gru_node, config.gru_node, rngs=rngs)
                for k in range(config.nb_gru_layer)
            ]
        )
        self.fc1_gru = nnx.Linear(config.gru_node, config.nb_fc_node, rngs=rngs)
        self.fc2_gru = nnx.Linear(config.nb_fc_node, config.nb_classes, rngs=rngs)

    def __call__(
        self, waveforms: jax.Array, return_hidden: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Log-softmax outputs ``[B, C]``; with ``return_hidden`` also the ``fc1_gru`` output."""
        if waveforms.ndim != 2:
            raise ValueError(f"RawNet2 expects waveforms[B, T], got shape {waveforms.shape}")
        cfg = self.config
        # max-pools of 3 along time (front end + every block) must leave one step for the GRU
        shortest = odd_kernel_size(cfg.first_conv) - 1 + 3 ** (1 + len(self.blocks))
        if waveforms.shape[1] < shortest:
            raise ValueError(f"RawNet2 needs clips of at least {shortest} samples, got {waveforms.shape[1]}")
        x = sinc_conv(waveforms, mel_sinc_filters(cfg.filts[0], cfg.first_conv, cfg.sample_rate))
        x = nnx.max_pool(jnp.abs(x), (3,), strides=(3,))
        x = jax.nn.selu(self.first_bn(x))
        for block, fms in zip(self.blocks, self.attention):
            x = block(x)
            s = jax.nn.sigmoid(fms(jnp.mean(x, axis=1)))[:, None, :]  # per-filter scale
            x = x * s + s
        x = jax.nn.selu(self.bn_before_gru(x))
        for layer in self.gru:
            x = layer(x)
        hidden = self.fc1_gru(x[:, -1, :])
        out = jax.nn.log_softmax(self.fc2_gru(hidden), axis=-1)
        return (out, hidden) if return_hidden else out


def build(config: Mapping[str, Any], rngs: nnx.Rngs) -> RawNet2:
    """Build a randomly initialised RawNet2 from its model config (a JSON mapping)."""
    return RawNet2(RawNet2Config.from_mapping(config), rngs=init_rngs(rngs))


def hidden_apply(model: Model) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
    """A pure ``f(params, waveforms) -> (log_probs, fc1_gru hidden)`` for a RawNet2 ``model``.

    Example:
        >>> from jsuff.models.base import build_model
        >>> cfg = {"first_conv": 128, "filts": [8, [8, 8], [8, 16]], "gru_node": 16,
        ...        "nb_gru_layer": 1, "nb_fc_node": 8}
        >>> m = build_model("rawnet2", cfg, sample_rate=16000, labels=LABELS)
        >>> [a.shape for a in hidden_apply(m)(m.params, jnp.zeros((1, 16000)))]
        [(1, 2), (1, 8)]
    """
    if model.arch != ARCH:
        raise ValueError(f"hidden_apply needs a {ARCH} model, got {model.arch!r}")
    spec = get_architecture(ARCH)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: spec.build(model.config, nnx.Rngs(0))))

    def apply(params: Params, waveforms: jax.Array) -> tuple[jax.Array, jax.Array]:
        module = nnx.merge(graphdef, params)
        module.eval()
        return module(waveforms, return_hidden=True)

    return apply


register(Architecture(ARCH, build, "RawNet2 anti-spoofing (ASVspoof 2021 baseline), raw 16 kHz", "rawnet2"))
