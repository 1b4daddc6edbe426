"""Running a model: the one place where jsuff calls ``apply(params, waveforms)``.

The search, extraction, :func:`jsuff.explain.explain`, studies and :class:`jsuff.models.Model` all
evaluate models through this module:

* **Clips in** (:func:`prepare`): validate N clips of one length, analyse them into the domain's
  coefficients and classify them, once, in one jitted call (:func:`analyze_and_predict`).
* **Logits** (traceable): :func:`model_logits` runs the model in a compute dtype
  (:func:`cast_params`) and reads a one-logit binary model as ``[0, z]`` (:func:`class_logits`);
  :func:`masked_logits` synthesises masked candidates and classifies them;
  :func:`top1_and_confidence` turns logits into labels and target confidences.
* **Sharding**: :func:`on_shards` runs a batch split over one mesh axis (``jax.shard_map``, each
  device synthesising and classifying its own share), :func:`replicate` places parameters on every
  device, :func:`device_batch` rounds a call size to the device count, :func:`resolve_axis` picks
  the axis.
* **Compilation** (:func:`model_jit`): every jitted function that calls a model is compiled per
  ``(function, apply_fn, static settings)`` and kept in one bounded least-recently-used cache of
  :data:`CACHE_SIZE` entries. An entry holds its apply function (a strong reference, so a function
  is never mistaken for a later one that reuses its ``id``) and XLA's executables for it; an entry
  pushed out frees both. Pass the same apply function object to reuse a compilation.
* :func:`predict`: logits of many waveforms in fixed-size, optionally sharded batches.

Example:
    >>> import jax.numpy as jnp
    >>> apply = lambda p, x: x[:, :2] * p  # a "model" with 2 logits
    >>> predict(apply, 2.0, jnp.ones((5, 8)), batch=2).tolist()[4]
    [2.0, 2.0]
    >>> class_logits(jnp.array([[0.5], [-1.0]])).argmax(-1).tolist()  # one logit: class 1 iff > 0
    [1, 0]
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jsuff.audio import AudioError, validate_waveform
from jsuff.domains import Coefficients, Domain

__all__ = [
    "CACHE_SIZE",
    "COMPUTE_DTYPES",
    "ApplyFn",
    "Clips",
    "ModelJit",
    "analyze_and_predict",
    "cast_params",
    "class_logits",
    "clip_keys",
    "device_batch",
    "masked_logits",
    "model_jit",
    "model_logits",
    "on_shards",
    "predict",
    "prepare",
    "replicate",
    "resolve_axis",
    "top1_and_confidence",
]

#: ``apply(params, waveforms[B, T]) -> logits[B, C]``, pure and jittable.
ApplyFn = Callable[[Any, jax.Array], jax.Array]

#: Dtypes a model can be evaluated in (``SearchConfig.compute_dtype``).
COMPUTE_DTYPES = ("float32", "bfloat16")

#: Compiled model-calling functions kept at once (least recently used first out). A study keeps
#: about five per model (analysis, search evaluation, extraction, prediction, the loop reference),
#: so this holds a dozen models' worth before anything is compiled again.
CACHE_SIZE = 64


# ----------------------------------------------------------------------------------------------
# Compilation: one jit path, one bounded cache
# ----------------------------------------------------------------------------------------------

_CACHE: collections.OrderedDict[tuple, Callable] = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()


def _compiled(fn: Callable, apply_fn: ApplyFn, static: tuple[tuple[str, Any], ...]) -> Callable:
    """``jax.jit(fn)`` with ``apply_fn`` and the ``static`` keywords bound, from the cache."""
    key = (fn, apply_fn, static)
    with _CACHE_LOCK:
        jitted = _CACHE.pop(key, None)
        if jitted is None:
            jitted = jax.jit(functools.partial(fn, apply_fn=apply_fn, **dict(static)))
        _CACHE[key] = jitted  # most recently used last
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return jitted


class ModelJit:
    """A function that calls a model, jitted through the shared cache (see :func:`model_jit`).

    Call it as the undecorated function, with ``apply_fn`` and the static settings as keywords.
    """

    def __init__(self, fn: Callable, static_argnames: tuple[str, ...]) -> None:
        self.fn = fn
        self.static_argnames = tuple(static_argnames)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, apply_fn: ApplyFn, **kwargs: Any) -> Any:
        static = tuple((k, kwargs.pop(k)) for k in self.static_argnames if k in kwargs)
        return _compiled(self.fn, apply_fn, static)(*args, **kwargs)

    def cache_size(self, apply_fn: ApplyFn | None = None) -> int:
        """How many compiled versions JAX holds for this function (for ``apply_fn`` only, if
        given), summed over the cached entries: JAX's own count, so a retrace shows here."""
        with _CACHE_LOCK:
            entries = [f for (fn, a, _), f in _CACHE.items() if fn is self.fn and (apply_fn is None or a is apply_fn)]
        return sum(f._cache_size() for f in entries)


def model_jit(static_argnames: tuple[str, ...] = ()) -> Callable[[Callable], ModelJit]:
    """Decorator: jit a function that takes the model's ``apply_fn`` (and ``static_argnames``) as
    keywords, through the one bounded cache of compiled model calls (:data:`CACHE_SIZE`).

    ``apply_fn`` and the static settings pick the cache entry (they must be hashable; functions
    hash by identity, which is safe here because the entry holds the function); within an entry
    JAX compiles once per shape and dtype of the other arguments.

    Example:
        >>> @model_jit(static_argnames=("scale",))
        ... def scaled(params, x, *, apply_fn, scale):
        ...     return apply_fn(params, x) * scale
        >>> model = lambda p, x: x + p
        >>> float(scaled(1.0, jnp.zeros(2), apply_fn=model, scale=3.0)[0])
        3.0
        >>> scaled.cache_size(model)
        1
    """
    return lambda fn: ModelJit(fn, static_argnames)


# ----------------------------------------------------------------------------------------------
# Logits (traceable)
# ----------------------------------------------------------------------------------------------


def class_logits(logits: jax.Array) -> jax.Array:
    """``[B, C]`` logits with a one-logit binary model read as ``[0, z]`` (class 1 iff z > 0)."""
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits [B, C], got shape {logits.shape}")
    if logits.shape[1] == 1:
        return jnp.concatenate([jnp.zeros_like(logits), logits], axis=1)
    return logits


def cast_params(params: Any, compute_dtype: str) -> Any:
    """``params`` with every floating leaf cast to ``compute_dtype`` (others untouched)."""
    if compute_dtype == "float32":
        return params
    dt = jnp.dtype(compute_dtype)
    return jax.tree_util.tree_map(
        lambda a: a.astype(dt) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, params
    )


def model_logits(apply_fn: ApplyFn, params: Any, waves: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``class_logits(apply(params, waves))`` in ``compute_dtype``, returned as float32 (traceable).

    For ``"bfloat16"`` the waveforms and floating parameters are cast to bfloat16 and the model is
    traced under standard dtype promotion, so a model that does part of its work in float32 (an
    FFT front end, float32 constants) still runs: those ops promote to float32. Which layers then
    really run in bfloat16 depends on the model: wav2vec2/HuBERT hand their normalised waveform
    back in the input's dtype, so the conv stack and transformer run in bfloat16; AST and Whisper
    compute their float32 fbank/log-mel front end and, from there on, float32 activations meet
    bfloat16 weights and promote to float32 (bfloat16-rounded weights, float32 arithmetic). XLA's
    FFTs take float32 only: a model that applies an FFT to its input without casting it to
    float32 first fails with XLA's "RFFT input must be float32" error.
    """
    if compute_dtype == "float32":
        return class_logits(apply_fn(params, waves))
    with jax.numpy_dtype_promotion("standard"):
        logits = apply_fn(cast_params(params, compute_dtype), waves.astype(compute_dtype))
    return class_logits(logits.astype(jnp.float32))


def masked_logits(
    apply_fn: ApplyFn,
    params: Any,
    domain: Domain,
    coeffs: Coefficients,
    clip: jax.Array,
    masks: jax.Array,
    mesh: Mesh | None = None,
    axis: str | None = None,
    compute_dtype: str = "float32",
) -> jax.Array:
    """Logits ``[B, C]`` of ``domain.synthesize(coeffs[clip[b]], masks[b])`` for each b (traceable).

    ``coeffs`` is batched over clips; ``clip[B]`` picks each candidate's clip. Synthesis is float32;
    the model call runs in ``compute_dtype`` (see :func:`model_logits`).
    """

    def local(params: Any, coeffs: Coefficients, clip: jax.Array, masks: jax.Array) -> jax.Array:
        picked = jax.tree_util.tree_map(lambda a: a[clip], coeffs)
        return model_logits(apply_fn, params, jax.vmap(domain.synthesize)(picked, masks), compute_dtype)

    return on_shards(local, mesh, axis, (params, coeffs), (clip, masks))


def top1_and_confidence(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Top-1 label ``[B]`` (int32) and softmax confidence of ``targets[B]`` (float32)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    conf = jnp.take_along_axis(probs, targets.astype(jnp.int32)[:, None], axis=1)[:, 0]
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), conf


# ----------------------------------------------------------------------------------------------
# Sharding
# ----------------------------------------------------------------------------------------------


def on_shards(
    fn: Callable[..., Any], mesh: Mesh | None, axis: str | None, replicated: tuple, sharded: tuple
) -> Any:
    """``fn(*replicated, *sharded)``, each device running it on its own share of the leading
    (candidate) axis of every ``sharded`` array (``jax.shard_map``); outputs are concatenated
    along that axis. Without a mesh, one plain call.

    Per-candidate work (synthesis, the model's own FFTs) stays on its device. Left to the SPMD
    partitioner, an FFT whose batch axis is sharded is all-gathered and computed whole on every
    device, so more devices made the search slower. The leading axes must divide by the device
    count of ``axis`` (see :func:`device_batch`).
    """
    if mesh is None:
        return fn(*replicated, *sharded)
    specs = (PartitionSpec(),) * len(replicated) + (PartitionSpec(axis),) * len(sharded)
    # check_vma=False: a model's own lax.scan starting from a fresh (unvarying) carry, as recurrent
    # layers do, would fail shard_map's varying-axis type check; fn uses no collectives
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(axis), check_vma=False)(
        *replicated, *sharded
    )


def replicate(params: Any, mesh: Mesh | None) -> Any:
    """``params`` placed on every device of ``mesh`` (candidates are split, the model is not).

    Parameters restored from a checkpoint are committed to one device; without this, a jitted call
    that also sees mesh-sharded candidates would refuse the mix of devices.
    """
    if mesh is None:
        return params
    return jax.device_put(params, NamedSharding(mesh, PartitionSpec()))


def device_batch(max_batch: int, total: int, mesh: Mesh | None, axis: str | None) -> int:
    """Chunk size: ``max_batch`` (or fewer when there is less to do), rounded up to a multiple of
    the mesh axis' device count so each device gets an equal share."""
    b = max(1, min(max_batch, total))
    if mesh is not None:
        d = mesh.shape[axis]
        b = -(-b // d) * d
    return b


def resolve_axis(mesh: Mesh | None, axis: str | None) -> str | None:
    """The mesh axis candidates are sharded over (the first one unless named)."""
    if mesh is None:
        return None
    if axis is None:
        return mesh.axis_names[0]
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r}; its axes are {mesh.axis_names}")
    return axis


# ----------------------------------------------------------------------------------------------
# Clips in: validate, analyse, predict once
# ----------------------------------------------------------------------------------------------


@model_jit(static_argnames=("domain",))
def analyze_and_predict(
    params: Any, waveforms: jax.Array, *, apply_fn: ApplyFn, domain: Domain
) -> tuple[Coefficients, jax.Array]:
    """Batched coefficients ``domain.analyze(waveforms[n])`` and class logits ``[N, C]`` (jitted)."""
    coeffs = jax.vmap(domain.analyze)(waveforms)
    return coeffs, class_logits(apply_fn(params, waveforms))


def clip_keys(key: jax.Array, n: int) -> jax.Array:
    """``[n]`` typed PRNG keys, one per clip: ``key`` itself for one clip, ``split(key, n)`` for
    several, or a given ``[n]`` batch of keys (raw ``uint32`` key data is accepted too)."""
    k = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
        k = jax.random.wrap_key_data(k)
    if k.ndim == 0:
        return k[None] if n == 1 else jax.random.split(k, n)
    if k.shape != (n,):
        raise ValueError(f"expected one key or {n} keys, got key array of shape {k.shape}")
    return k


class Clips(NamedTuple):
    """N clips of one length, validated, analysed and classified once (:func:`prepare`).

    Attributes:
        waveforms: ``[N, T]`` float32, checked.
        coeffs: ``domain.analyze`` of each clip (batched, on the device).
        logits: ``[N, C]`` the model's class logits on the clips.
        targets: ``[N]`` int32, the labels to explain (given, or each clip's top-1).
        confidence: ``[N]`` float32 softmax confidence of the target on each clip.

    The arrays stay on the device (nothing waits for them), as they come from the model.
    """

    waveforms: np.ndarray
    coeffs: Coefficients
    logits: jax.Array
    targets: jax.Array
    confidence: jax.Array


def prepare(
    apply_fn: ApplyFn,
    params: Any,
    waveforms: Any,
    *,
    domain: Domain,
    min_box_size: int = 1,
    targets: Any = None,
    allow_silence: bool = True,
) -> Clips:
    """Validate ``waveforms`` (``[T]`` or ``[N, T]``), analyse and classify them (N model queries).

    Traceable: inside ``jax.jit`` or ``jax.vmap``, traced waveforms are checked for their shape
    only and traced targets are not range-checked (their values are not known yet).

    Raises:
        AudioError: a clip is empty or non-finite, its grid has fewer than ``min_box_size``
            cells, or (``allow_silence=False``) it is all zeros.
        ValueError: ``targets`` out of range for the model's classes.

    Example:
        >>> from jsuff.domains import RFFT
        >>> c = prepare(lambda p, x: x[:, :3], None, jnp.eye(8)[1], domain=RFFT())
        >>> c.waveforms.shape, c.targets.tolist()
        ((1, 8), [1])
    """
    name = "waveforms" if np.ndim(waveforms) == 2 else "waveform"
    traced = isinstance(waveforms, jax.core.Tracer)
    if traced and np.ndim(waveforms) not in (1, 2):
        raise AudioError(f"{name} has shape {waveforms.shape}; expected [T] (one clip) or [B, T] (a batch)")
    x = waveforms.astype(jnp.float32) if traced else validate_waveform(np.asarray(waveforms), name=name)
    x = x[None] if x.ndim == 1 else x
    cells = int(np.prod(domain.grid_shape(x.shape[1])))
    if cells < min_box_size:
        raise AudioError(
            f"{name} is too short: {x.shape[1]} samples give a {domain.name} grid of {cells} cells, "
            f"fewer than min_box_size={min_box_size}: there is nothing to search"
        )
    if not allow_silence and not traced:
        silent = np.flatnonzero(~np.any(x != 0, axis=-1))
        if silent.size:
            which = name if x.shape[0] == 1 else f"{name}[{', '.join(map(str, silent.tolist()))}]"
            raise AudioError(f"{which} is all zeros (silence): there is no signal to explain")
    coeffs, logits = analyze_and_predict(params, jnp.asarray(x), apply_fn=apply_fn, domain=domain)
    n, c = logits.shape
    if targets is None:
        tgt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        tgt = jnp.broadcast_to(jnp.asarray(targets, jnp.int32), (n,))
        if not isinstance(tgt, jax.core.Tracer) and bool(((tgt < 0) | (tgt >= c)).any()):
            raise ValueError(f"targets {np.asarray(tgt).tolist()} out of range for {c} classes")
    conf = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), tgt[:, None], axis=1)[:, 0]
    return Clips(x, coeffs, logits, tgt, conf)


# ----------------------------------------------------------------------------------------------
# Prediction in batches
# ----------------------------------------------------------------------------------------------


@model_jit(static_argnames=("mesh", "axis"))
def _logits(params: Any, waveforms: jax.Array, *, apply_fn: ApplyFn, mesh: Mesh | None, axis: str | None) -> jax.Array:
    return on_shards(apply_fn, mesh, axis, (params,), (waveforms,))


def predict(
    apply_fn: ApplyFn,
    params: Any,
    waveforms: Any,
    *,
    batch: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> jax.Array:
    """The model's logits on ``waveforms[N, T]`` as it returns them (float32, jitted).

    Args:
        batch: waveforms per call; the last call is padded to the same size, so there is one
            compilation per ``(batch, T)``. ``None``: all N in one call.
        mesh, mesh_axis: split each call over the devices of one mesh axis (the first unless
            named); ``batch`` is rounded up to a multiple of their count.

    Returns:
        ``[N, C]`` logits (read a one-logit model with :func:`class_logits`).
    """
    # host arrays stay on the host and go to the device one call at a time
    x = waveforms.astype(jnp.float32) if isinstance(waveforms, jax.Array) else np.asarray(waveforms, np.float32)
    xp = jnp if isinstance(x, jax.Array) else np
    n = x.shape[0]
    axis = resolve_axis(mesh, mesh_axis)
    params = replicate(params, mesh)
    b = device_batch(n if batch is None else batch, n, mesh, axis)
    sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec(axis))
    out = []
    for s in range(0, max(n, 1), b):
        chunk = x[s : s + b]
        real = chunk.shape[0]
        if real < b:
            chunk = xp.concatenate([chunk, xp.zeros((b - real, *chunk.shape[1:]), chunk.dtype)])
        chunk = jnp.asarray(chunk) if sharding is None else jax.device_put(chunk, sharding)
        logits = _logits(params, chunk, apply_fn=apply_fn, mesh=mesh, axis=axis)
        out.append(logits if real == b else logits[:real])
    return out[0] if len(out) == 1 else jnp.concatenate(out)
