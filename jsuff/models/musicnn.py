"""The musicnn music taggers (PyPI ``musicnn`` 0.1.0, ISC): both architectures and their front end.

Architectures ``musicnn`` (``MTT_musicnn``, ``MSD_musicnn``) and ``musicnn_vgg`` (``MTT_vgg``,
``MSD_vgg``): 50 pre-sigmoid tag logits per clip, labels = the model's tag names (set by the
converter from the package's tag lists).

Front end (the package's ``extractor.batch_data``, in JAX), on 16 kHz mono:

1. centred STFT, ``n_fft`` 512, hop 256, periodic Hann, the clip zero-padded by 256 samples on each
   side (librosa >= 0.10's ``pad_mode="constant"``): ``F = 1 + T // 256`` frames; power ``|X|^2``;
2. 96 Slaney-scale, Slaney-normalised mel filters from 0 to 8 kHz (``librosa.filters.mel``);
3. the energies cast to float16, then ``log10(10000 x + 1)`` in float16 arithmetic, exactly as
   NumPy evaluates the package's expression. That map depends only on the float16 value, so it is a
   table over all 31,745 non-negative float16 values (+0 to +inf), built once by NumPy from the
   package's formula and applied by lookup (XLA's float32 ``log10`` differs by an ulp and would put
   a few values per patch on the next float16 step). Energies above about 6.55 overflow ``10000 x`` to
   float16 ``inf``, so loud bins become ``+inf``: the package does this too, and its models still
   return finite logits (see *Non-finite values* below; :func:`headroom` gives the largest gain
   that avoids it);
4. non-overlapping patches of 187 frames (3 s) at frames 0, 187, 374, ... while a whole patch
   fits (the package's ``batch_data`` with its default ``input_overlap=False``).

Clip logits. A clip with one patch (``47,616 <= T < 95,488`` samples, e.g. 3 s) gives that patch's
logits, as the package does. A longer clip gives ``P = (F - 187) // 187 + 1`` patches (the package
drops the last, partial one) pooled as the *logit of the mean tag probability*:

    ``logit_k = log(mean_p sigmoid(z_pk)) - log(mean_p sigmoid(-z_pk))``,

computed with ``log_sigmoid`` and ``logsumexp``. Its sigmoid is the mean of the patches' tag
probabilities, the package's own clip-level summary (``tagger.top_tags`` averages the taggram over
time), so the argmax is the package's top tag. A clip shorter than 47,616 samples (2.976 s) has no
whole patch; the package's extractor fails on it, and so does this model, with a
:class:`~jsuff.models.base.ModelError` that says so (pad or lengthen clips beforehand).

Networks (``models.py`` of the package; every batch norm is ``tf.layers.batch_normalization``,
epsilon 1e-3, in inference mode; every convolution and dense layer has a bias):

* ``musicnn``: batch norm on the input patch ``[187, 96]``; front end of two timbral convolutions
  (7 frames x 38 and x 67 mel bands, 204 filters, time padded 3 + 3, valid in frequency) and three
  temporal ones (128, 64, 32 frames x 1 band, 51 filters, TF ``same`` padding), each ReLU -> batch
  norm -> max over frequency, concatenated to 561 channels per frame; mid-end of three convolutions
  over 7 frames (64 filters, ReLU, batch norm; the 2nd and 3rd residual), densely connected:
  ``[front, mid1, mid2, mid3]`` = 753 channels; back-end max and mean over time, flattened
  *interleaved* per channel (``max_0, mean_0, max_1, ...``, TF's flatten of ``[753, 2]``), batch
  norm, dense 200 + ReLU, batch norm, dense 50.
* ``musicnn_vgg``: batch norm on the input; five blocks of 3x3 ``same`` convolution (128 filters),
  ReLU, batch norm, valid max-pooling (4x1 stride 2x2, then 2x2/2 three times, then 4x4/4):
  187 x 96 -> 92x48 -> 46x24 -> 23x12 -> 11x6 -> 2x1; flattened (time, frequency, channel);
  dense 50. Dropout is off in inference.

Non-finite values. Where the front end yields ``+inf``, convolutions give ``+-inf`` or NaN
(``inf - inf``). TensorFlow's CPU ReLU returns 0 for NaN (it computes ``max(x, 0)`` in an order that
drops the NaN), so NaN never survives a ReLU there; ``jax.nn.relu`` would keep it. :func:`tf_relu`
reproduces TensorFlow's rule (``x if x > 0 else 0``), which is what makes the four musicnn models'
logits on such clips match the package's (for ``musicnn`` every such clip collapses to one constant
logit vector: the dense layer's inputs are all NaN, its ReLU outputs all 0).

Example:
    >>> import jax.numpy as jnp
    >>> patches(jnp.zeros((2, 10 * SAMPLE_RATE))).shape  # 10 s: three whole 3 s patches
    (2, 3, 187, 96)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models._family import FamilyConfig, init_rngs
from jsuff.models._detectors import module_of
from jsuff.models.base import Architecture, Model, ModelError, register
from jsuff.models.logmel import frame_signal, mel_filter_bank, power_spectrum, windowed

__all__ = [
    "BN_EPS",
    "HOP",
    "MIN_SAMPLES",
    "Musicnn",
    "MusicnnConfig",
    "MusicnnVgg",
    "NUM_TAGS",
    "N_FFT",
    "N_MELS",
    "PATCH_FRAMES",
    "SAMPLE_RATE",
    "TEMPORAL_FILTERS",
    "TEMPORAL_FRAMES",
    "TIMBRAL_BANDS",
    "TIMBRAL_FILTERS",
    "VggConfig",
    "compress",
    "headroom",
    "largest_finite_energy",
    "log_compression_table",
    "log_mel",
    "mel_energies",
    "num_patches",
    "patch_logits_fn",
    "patches",
    "pool_patch_logits",
    "tf_relu",
]

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as the package computes it
MIN_SAMPLES = (PATCH_FRAMES - 1) * HOP  # the shortest clip with one whole patch: 47,616 samples
BN_EPS = 1e-3  # tf.layers.batch_normalization's default
NUM_TAGS = 50


# ----------------------------------------------------------------------------------------------
# Front end
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def log_compression_table() -> np.ndarray:
    """``log10(10000 h + 1)`` in NumPy float16 arithmetic for every float16 ``h`` from +0 to +inf.

    Indexed by the float16 bit pattern (0x0000 .. 0x7C00), returned as float32. Energies whose
    float16 value is 6.5547 (the step after 6.5508) or more give ``+inf`` (``10000 h`` overflows
    float16), as in the package.

    Example:
        >>> t = log_compression_table()
        >>> t.shape, float(t[0]), float(t[0x3C00]), bool(np.isinf(t[-1]))
        ((31745,), 0.0, 4.0, True)
    """
    h = np.arange(0x7C01, dtype=np.uint16).view(np.float16)
    with np.errstate(over="ignore"):
        table = np.log10(np.float16(10000) * h + np.float16(1))
    if table.dtype != np.float16:  # the package relies on NumPy keeping float16 here
        raise ModelError(f"NumPy evaluated the float16 log compression in {table.dtype}")
    out = table.astype(np.float32)
    out.setflags(write=False)
    return out


def mel_energies(waveforms: jax.Array) -> jax.Array:
    """``librosa.feature.melspectrogram`` with the package's settings: ``[B, T] -> [B, F, 96]``.

    Example:
        >>> mel_energies(jnp.zeros((1, 1000))).shape
        (1, 4, 96)
    """
    if waveforms.ndim != 2 or waveforms.shape[-1] == 0:
        raise ModelError(f"musicnn expects waveforms [B, T] with T > 0, got {waveforms.shape}")
    half = N_FFT // 2
    x = jnp.pad(waveforms.astype(jnp.float32), ((0, 0), (half, half)))  # center=True, zero padding
    frames = frame_signal(x, N_FFT, HOP)
    power = power_spectrum(windowed(frames), N_FFT)  # [B, F, 257]
    filters = mel_filter_bank(
        N_FFT // 2 + 1, N_MELS, 0.0, SAMPLE_RATE / 2, SAMPLE_RATE,
        norm="slaney", mel_scale="slaney", top_bin_hz=SAMPLE_RATE / 2,
    )
    return power @ jnp.asarray(filters, jnp.float32)


def compress(energies: jax.Array) -> jax.Array:
    """The package's float16 cast and ``log10(10000 x + 1)``, by table (float32 out).

    Example:
        >>> compress(jnp.array([0.0, 1.0, 7.0])).tolist()
        [0.0, 4.0, inf]
    """
    bits = jax.lax.bitcast_convert_type(energies.astype(jnp.float16), jnp.uint16).astype(jnp.int32)
    table = jnp.asarray(log_compression_table())
    return jnp.take(table, bits, mode="fill", fill_value=jnp.nan)  # NaN (or negative) energy -> NaN


def log_mel(waveforms: jax.Array) -> jax.Array:
    """The package's log-mel spectrogram ``[B, F, 96]`` (``batch_data``'s ``audio_rep``)."""
    return compress(mel_energies(waveforms))


@functools.lru_cache(maxsize=1)
def largest_finite_energy() -> float:
    """The largest mel energy that does not become ``+inf`` in the front end (a float16 value).

    Example:
        >>> largest_finite_energy()
        6.55078125
    """
    table = log_compression_table()
    bits = np.flatnonzero(np.isfinite(table)).max()
    return float(np.uint16(bits).view(np.float16))


def headroom(waveforms: jax.Array) -> jax.Array:
    """Per clip ``[B]``: the largest gain ``g`` for which ``g * waveform`` has no ``+inf`` log-mel value.

    Mel energies scale with ``g**2``, so ``g = sqrt(largest_finite_energy() / max energy)``; scale
    clips by less than ``g`` to keep the package's float16 overflow out of a study (``inf`` when
    the clip is silent).

    Example:
        >>> headroom(jnp.zeros((1, 1000))).tolist()
        [inf]
    """
    peak = jnp.max(mel_energies(waveforms), axis=(1, 2))
    return jnp.sqrt(jnp.float32(largest_finite_energy()) / peak)


def num_patches(num_samples: int) -> int:
    """Whole 187-frame patches the package cuts from a clip of ``num_samples`` (0 if too short).

    Example:
        >>> num_patches(48000), num_patches(47615), num_patches(10 * 16000)
        (1, 0, 3)
    """
    frames = 1 + num_samples // HOP
    return 0 if frames < PATCH_FRAMES else (frames - PATCH_FRAMES) // PATCH_FRAMES + 1


def patches(waveforms: jax.Array) -> jax.Array:
    """The package's input patches: ``[B, T] -> [B, P, 187, 96]`` (see the module docstring).

    Raises:
        ModelError: the clip is shorter than one patch (47,616 samples).
    """
    p = num_patches(waveforms.shape[-1])
    if p == 0:
        raise ModelError(
            f"musicnn needs clips of at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s at "
            f"16 kHz) to cut one {PATCH_FRAMES}-frame patch, got {waveforms.shape[-1]}; the package fails on "
            "shorter clips too: pad or lengthen them first"
        )
    mel = log_mel(waveforms)[:, : p * PATCH_FRAMES]
    return mel.reshape(mel.shape[0], p, PATCH_FRAMES, N_MELS)


def pool_patch_logits(logits: jax.Array) -> jax.Array:
    """``[B, P, C] -> [B, C]``: the logit of the mean tag probability over patches.

    Example:
        >>> z = jnp.array([[[0.0, 2.0], [0.0, -2.0]]])
        >>> pool_patch_logits(z).round(6).tolist()
        [[0.0, 0.0]]
    """
    if logits.shape[1] == 1:  # one patch: its logits, bit for bit
        return logits[:, 0]
    return jax.nn.logsumexp(jax.nn.log_sigmoid(logits), axis=1) - jax.nn.logsumexp(
        jax.nn.log_sigmoid(-logits), axis=1
    )


def tf_relu(x: jax.Array) -> jax.Array:
    """ReLU as TensorFlow's CPU kernels compute it: NaN -> 0 (``jax.nn.relu`` keeps NaN).

    Example:
        >>> tf_relu(jnp.array([jnp.nan, -jnp.inf, 2.0])).tolist()
        [0.0, 0.0, 2.0]
    """
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def _max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
    """``tf.layers.max_pooling2d`` with valid padding over ``[N, H, W, C]``."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "VALID")


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MusicnnConfig(FamilyConfig):
    """``musicnn`` sizes (the shipped models: 64 mid-end filters, 200 back-end units; the
    package's ``MSD_musicnn_big``, not shipped in the wheel, would be 512 and 500)."""

    family = "musicnn"

    num_classes: int = NUM_TAGS
    midend_filters: int = 64
    backend_units: int = 200

    def __post_init__(self) -> None:
        if min(self.num_classes, self.midend_filters, self.backend_units) < 1:
            raise ModelError(f"musicnn sizes must be positive, got {self}")


@dataclasses.dataclass(frozen=True)
class VggConfig(FamilyConfig):
    """``musicnn_vgg`` sizes (the shipped models: 128 filters in every block)."""

    family = "musicnn_vgg"

    num_classes: int = NUM_TAGS
    filters: int = 128

    def __post_init__(self) -> None:
        if min(self.num_classes, self.filters) < 1:
            raise ModelError(f"musicnn_vgg sizes must be positive, got {self}")


def _bn(n: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(n, epsilon=BN_EPS, rngs=rngs)


def _tf_same(k: int) -> tuple[int, int]:
    # TF "same": the odd pixel of an even kernel's padding goes after.
    return ((k - 1) // 2, k // 2)


TIMBRAL_BANDS = (int(0.4 * N_MELS), int(0.7 * N_MELS))  # 38 and 67, as the package rounds them
TEMPORAL_FRAMES = (128, 64, 32)
TIMBRAL_FILTERS = int(1.6 * 128)  # 204
TEMPORAL_FILTERS = int(1.6 * 32)  # 51


class _Tagger(nnx.Module):
    """What both networks share: waveforms -> patches -> ``self.patch_logits`` (pre-sigmoid tag
    logits of log-mel patches ``[N, 187, 96] -> [N, C]``) -> pooled clip logits."""

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        """Clip logits ``[B, C]`` (one patch: its logits; more: the pooled rule of the module doc)."""
        x = patches(waveforms)
        b, p = x.shape[:2]
        z = self.patch_logits(x.reshape(b * p, PATCH_FRAMES, N_MELS))
        return pool_patch_logits(z.reshape(b, p, -1))


class Musicnn(_Tagger):
    """The ``musicnn`` network (timbral + temporal front end, dense mid-end, pooled back-end)."""

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        self.config = cfg = MusicnnConfig.from_mapping(config)
        rngs = init_rngs(rngs)
        self.input_bn = _bn(1, rngs)
        self.timbral = nnx.List(
            [nnx.Conv(1, TIMBRAL_FILTERS, (7, w), padding="VALID", rngs=rngs) for w in TIMBRAL_BANDS]
        )
        self.temporal = nnx.List(
            [nnx.Conv(1, TEMPORAL_FILTERS, (k, 1), padding="VALID", rngs=rngs) for k in TEMPORAL_FRAMES]
        )
        self.front_bns = nnx.List(
            [_bn(TIMBRAL_FILTERS, rngs) for _ in TIMBRAL_BANDS] + [_bn(TEMPORAL_FILTERS, rngs) for _ in TEMPORAL_FRAMES]
        )
        front = len(TIMBRAL_BANDS) * TIMBRAL_FILTERS + len(TEMPORAL_FRAMES) * TEMPORAL_FILTERS
        f = cfg.midend_filters
        self.midend = nnx.List([nnx.Conv(c, f, 7, padding="VALID", rngs=rngs) for c in (front, f, f)])
        self.mid_bns = nnx.List([_bn(f, rngs) for _ in range(3)])
        pooled = 2 * (front + 3 * f)
        self.pool_bn = _bn(pooled, rngs)
        self.dense = nnx.Linear(pooled, cfg.backend_units, rngs=rngs)
        self.dense_bn = _bn(cfg.backend_units, rngs)
        self.out = nnx.Linear(cfg.backend_units, cfg.num_classes, rngs=rngs)

    def patch_logits(self, mel: jax.Array) -> jax.Array:
        x = self.input_bn(mel[..., None])  # [N, 187, 96, 1]
        feats = []
        for conv, bn in zip(self.timbral, self.front_bns[:2]):
            y = bn(tf_relu(conv(jnp.pad(x, ((0, 0), (3, 3), (0, 0), (0, 0))))))
            feats.append(jnp.max(y, axis=2))  # max over the remaining mel bands
        for conv, bn, k in zip(self.temporal, self.front_bns[2:], TEMPORAL_FRAMES):
            y = bn(tf_relu(conv(jnp.pad(x, ((0, 0), _tf_same(k), (0, 0), (0, 0))))))
            feats.append(jnp.max(y, axis=2))
        h = jnp.concatenate(feats, axis=-1)  # [N, 187, 561]
        dense = [h]
        for i, (conv, bn) in enumerate(zip(self.midend, self.mid_bns)):
            y = bn(tf_relu(conv(jnp.pad(h, ((0, 0), (3, 3), (0, 0))))))
            h = y if i == 0 else y + h  # the 2nd and 3rd convolutions are residual
            dense.append(h)
        h = jnp.concatenate(dense, axis=-1)  # [N, 187, 753]
        # TF concatenates [max, mean] on a last axis of size 2 and flattens: interleaved.
        pooled = jnp.stack([jnp.max(h, axis=1), jnp.mean(h, axis=1)], axis=-1).reshape(h.shape[0], -1)
        y = self.dense_bn(tf_relu(self.dense(self.pool_bn(pooled))))
        return self.out(y)


class MusicnnVgg(_Tagger):
    """The package's ``vgg`` network (five conv / batch-norm / max-pool blocks, one dense layer)."""

    POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        self.config = cfg = VggConfig.from_mapping(config)
        rngs = init_rngs(rngs)
        f = cfg.filters
        self.input_bn = _bn(1, rngs)
        self.convs = nnx.List(
            [nnx.Conv(1 if i == 0 else f, f, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs) for i in range(5)]
        )
        self.bns = nnx.List([_bn(f, rngs) for _ in range(5)])
        t, m = PATCH_FRAMES, N_MELS
        for (wt, wm), (st, sm) in self.POOLS:
            t, m = (t - wt) // st + 1, (m - wm) // sm + 1
        self.out = nnx.Linear(t * m * f, cfg.num_classes, rngs=rngs)

    def patch_logits(self, mel: jax.Array) -> jax.Array:
        x = self.input_bn(mel[..., None])
        for conv, bn, (window, strides) in zip(self.convs, self.bns, self.POOLS):
            x = _max_pool(bn(tf_relu(conv(x))), window, strides)
        return self.out(x.reshape(x.shape[0], -1))  # flattened (time, frequency, channel) like TF


def patch_logits_fn(model: Model) -> Callable[[Any, jax.Array], jax.Array]:
    """A converted model's network alone, as a pure ``fn(params, mel[N, 187, 96]) -> logits[N, C]``.

    It takes log-mel patches (the package's ``batch_data`` output) instead of waveforms.

    Example:
        >>> # fn = patch_logits_fn(model); jax.jit(fn)(model.params, patches(x)[0])  # per-patch logits
    """
    graphdef, _ = nnx.split(module_of(model))

    def fn(params: Any, mel: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params).patch_logits(mel)

    return fn


register(
    Architecture(
        "musicnn", Musicnn,
        "musicnn tagger (PyPI musicnn, MTT/MSD): 50 tag logits per 3 s patch; clip = logit of mean probability",
        "musicnn",
    )
)
register(
    Architecture(
        "musicnn_vgg", MusicnnVgg,
        "musicnn's VGG tagger (PyPI musicnn, MTT/MSD): 50 tag logits per 3 s patch; clip = logit of mean probability",
        "musicnn",
    )
)
