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
* **Inside your own jitted code** (:func:`candidate_labels`): the labels and confidences of many
  masked candidates of a clip, traceable, so it composes with ``jax.jit``, ``jax.vmap`` (over
  clips) and ``lax`` loops. :func:`prepare` and the search
  (:func:`jsuff.search.responsibility_maps`) are traceable too; the extraction and ``explain``
  are host-side drivers and say so when traced (:func:`host_only`).
* **Calls** (:func:`model_call`): the public drivers take ``f(model, x)`` (a
  :class:`jsuff.Model` with its own parameters, rate and input policy) or ``f(apply_fn, params,
  x)``; a mix-up is named. :func:`clip_keys` takes a ``jax.random.key`` or an int seed.

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
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jsuff.audio import AudioError, load_audio, validate_waveform
from jsuff.domains import Coefficients, Domain, as_domain

__all__ = [
    "ACCELERATOR_BATCH",
    "CACHE_SIZE",
    "COMPUTE_DTYPES",
    "ApplyFn",
    "Clips",
    "ModelJit",
    "analyze_and_predict",
    "ModelCall",
    "NOT_GIVEN",
    "candidate_labels",
    "cast_params",
    "channel_axis",
    "check_logits",
    "class_logits",
    "clip_array",
    "clip_keys",
    "device_batch",
    "host_only",
    "is_clip_list",
    "layout_hint",
    "masked_logits",
    "model_call",
    "model_jit",
    "model_logits",
    "on_shards",
    "platform_of",
    "predict",
    "prepare",
    "replicate",
    "resolve_axis",
    "resolve_batch",
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


def check_logits(out: Any) -> jax.Array:
    """``out`` if the model returned one array; else a ``TypeError`` naming what it returned.

    Example:
        >>> check_logits((jnp.zeros((1, 2)), jnp.zeros((1, 5, 8))))
        Traceback (most recent call last):
        ...
        TypeError: the model's apply returned a tuple of 2 (shapes (1, 2), (1, 5, 8)); it must return one logits array [B, C]: wrap it, e.g. lambda p, x: apply(p, x)[0]
    """
    if hasattr(out, "ndim") and hasattr(out, "shape"):
        return out
    if isinstance(out, (tuple, list)):
        shapes = ", ".join(str(tuple(v.shape)) if hasattr(v, "shape") else type(v).__name__ for v in out)
        raise TypeError(
            f"the model's apply returned a {type(out).__name__} of {len(out)} (shapes {shapes}); it must return one "
            "logits array [B, C]: wrap it, e.g. lambda p, x: apply(p, x)[0]"
        )
    if isinstance(out, dict):
        raise TypeError(
            f"the model's apply returned a dict with keys {sorted(map(str, out))}; it must return one logits array "
            "[B, C]: wrap it, e.g. lambda p, x: apply(p, x)['logits']"
        )
    raise TypeError(f"the model's apply returned {type(out).__name__}; it must return one logits array [B, C]")


def class_logits(logits: jax.Array) -> jax.Array:
    """``[B, C]`` logits with a one-logit binary model read as ``[0, z]`` (class 1 iff z > 0)."""
    logits = check_logits(logits)
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


def candidate_labels(
    apply_fn: ApplyFn,
    params: Any,
    domain: Domain | str,
    coeffs: Coefficients | jax.Array,
    masks: jax.Array,
    target: jax.Array | int | None = None,
    *,
    batch: int | None = None,
    compute_dtype: str = "float32",
) -> tuple[jax.Array, jax.Array]:
    """Top-1 labels and confidences of K masked candidates of one clip, for your own jitted code.

    Candidate k is ``domain.synthesize(coeffs, masks[k])`` (True = keep); the model classifies it.
    Traceable: call it inside ``jax.jit``, map it over clips with ``jax.vmap`` (batching
    ``coeffs``, ``masks`` and ``target``; close over the model), or in a ``lax`` loop. It is what the
    search and the extraction do per candidate, without their host-side driving.

    Args:
        apply_fn, params: the model, ``apply(params, waveforms[B, T]) -> logits[B, C]`` (for a
            :class:`jsuff.Model`: ``model.apply, model.params``).
        domain: a :class:`jsuff.domains.Domain` or its name (``"rfft"``, ``"stft"``, ``"time"``).
        coeffs: ``domain.analyze(x)`` of one clip, or the clip ``x[T]`` itself (analysed here).
        masks: ``[K, *grid]`` bool.
        target: the label whose softmax confidence is returned (an int or a scalar array);
            ``None``: each candidate's confidence in its own top-1 label.
        batch: candidates per model call (``lax.map`` over chunks, the last padded with empty
            candidates whose results are dropped): memory ``batch x T`` instead of ``K x T``.
            ``None``: all K in one call.
        compute_dtype: ``"float32"`` or ``"bfloat16"`` for the model call (:func:`model_logits`).

    Returns:
        ``labels[K]`` int32 and ``confidence[K]`` float32.

    Example:
        >>> apply = lambda p, x: jnp.abs(jnp.fft.rfft(x))[:, 3:5] * p  # class 1 iff bin 4 is louder
        >>> x = jnp.cos(2 * jnp.pi * 4 * jnp.arange(16.0) / 16)
        >>> masks = jnp.stack([jnp.ones(9, bool), jnp.arange(9) != 4])
        >>> labels, conf = jax.jit(lambda m: candidate_labels(apply, 1.0, "rfft", x, m, 1))(masks)
        >>> labels.tolist()  # the whole clip: 1; without bin 4: silence, the first label
        [1, 0]
    """
    from jsuff.models.base import Model

    if isinstance(apply_fn, Model):
        raise TypeError("candidate_labels takes the model's function and parameters: "
                        "candidate_labels(model.apply, model.params, domain, coeffs, masks, ...)")
    domain = as_domain(domain)
    if not isinstance(coeffs, Coefficients):
        coeffs = domain.analyze(coeffs)
    masks = jnp.asarray(masks, bool)
    k, grid = masks.shape[0], masks.shape[1:]

    def run(m: jax.Array) -> jax.Array:
        waves = jax.vmap(domain.synthesize, in_axes=(None, 0))(coeffs, m)
        return model_logits(apply_fn, params, waves, compute_dtype)

    if batch is None or batch >= k:
        logits = run(masks)
    else:
        if batch < 1:
            raise ValueError(f"batch must be >= 1 or None, got {batch}")
        padded = jnp.concatenate([masks, jnp.zeros((-k % batch, *grid), bool)])
        chunks = jax.lax.map(run, padded.reshape(-1, batch, *grid))
        logits = chunks.reshape(-1, chunks.shape[-1])[:k]
    if target is None:
        probs = jax.nn.softmax(logits, axis=-1)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.max(probs, axis=-1)
    return top1_and_confidence(logits, jnp.broadcast_to(jnp.asarray(target, jnp.int32), (k,)))


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


#: Candidates per model call on an accelerator when none is set (a wide call costs about what a
#: narrow one does there).
ACCELERATOR_BATCH = 64


def resolve_batch(max_batch: int | None, mesh: Mesh | None, axis: str | None, per_device: int = 14) -> int:
    """``max_batch``, or when it is ``None`` the default candidates per model call for the platform
    the model runs on: ``per_device`` per device of the mesh axis on a CPU (the search's 14 mutants
    of one refinement: nothing is padded, and a CPU call costs about its rows, on a smaller working
    set), :data:`ACCELERATOR_BATCH` elsewhere (benchmarks/README.md has the measurements).

    Example:
        >>> resolve_batch(32, None, None), resolve_batch(None, None, None) in (14, ACCELERATOR_BATCH)
        (32, True)
    """
    if max_batch is not None:
        return int(max_batch)
    if platform_of(mesh) != "cpu":
        return ACCELERATOR_BATCH
    return per_device * (1 if mesh is None else int(mesh.shape[resolve_axis(mesh, axis)]))


def platform_of(mesh: Mesh | None) -> str:
    """The platform (``"cpu"``, ``"gpu"``, ``"tpu"``) the model runs on: the mesh's devices', or
    JAX's default backend without a mesh."""
    return jax.default_backend() if mesh is None else str(mesh.devices.flat[0].platform)


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


def clip_keys(key: jax.Array | int, n: int) -> jax.Array:
    """``[n]`` typed PRNG keys, one per clip: ``key`` itself for one clip, ``split(key, n)`` for
    several, or a given ``[n]`` batch of keys (raw ``uint32`` key data is accepted too). An int is a
    seed: ``key=0`` is ``jax.random.key(0)``.

    Example:
        >>> bool((clip_keys(0, 1) == clip_keys(jax.random.key(0), 1)).all())
        True
    """
    if isinstance(key, bool) or not (isinstance(key, (int, np.integer, np.ndarray, jax.Array, list, tuple))):
        raise TypeError(f"key must be a jax.random.key(seed) or an int seed; got {type(key).__name__} {key!r:.60}")
    if isinstance(key, (int, np.integer)) or (
        np.ndim(key) == 0 and jnp.issubdtype(jnp.result_type(key), jnp.integer)
    ):
        return clip_keys(jax.random.key(key if isinstance(key, jax.core.Tracer) else int(key)), n)
    k = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
        k = jax.random.wrap_key_data(k)
    if k.ndim == 0:
        return k[None] if n == 1 else jax.random.split(k, n)
    if k.shape != (n,):
        raise ValueError(f"expected one key or {n} keys, got key array of shape {k.shape}")
    return k


# ----------------------------------------------------------------------------------------------
# Calls: f(model, x) or f(apply_fn, params, x); host-side drivers
# ----------------------------------------------------------------------------------------------


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: The default of a positional argument left out: ``explain(model, x)`` gives two of three.
NOT_GIVEN: Any = _NotGiven()


def host_only(fn: str, *trees: Any) -> None:
    """Refuse JAX tracers: ``fn`` is a host-side driver (it loops, reads results and decides on
    the host), so it cannot run under ``jax.jit``, ``jax.vmap`` or ``jax.grad``.

    Example:
        >>> try:
        ...     jax.jit(lambda x: host_only("explain", x))(jnp.ones(3))
        ... except TypeError as e:
        ...     print(str(e)[:78])
        explain is a host-side driver (its loops and decisions run in Python on concre
    """
    if any(isinstance(leaf, jax.core.Tracer) for t in trees for leaf in jax.tree_util.tree_leaves(t)):
        raise TypeError(
            f"{fn} is a host-side driver (its loops and decisions run in Python on concrete arrays) and cannot be "
            "traced by jax.jit, jax.vmap or jax.grad: call it outside your jitted function; inside one, search with "
            "jsuff.responsibility_maps or evaluate masked candidates with jsuff.evaluate.candidate_labels, which "
            "compose with jit and vmap"
        )


class ModelCall(NamedTuple):
    """A driver's call resolved (:func:`model_call`): the model function, its parameters, the clips
    (for a :class:`jsuff.Model`: read, resampled and fitted to its input), and the Model if any."""

    apply_fn: ApplyFn
    params: Any
    waveforms: Any
    model: Any


def model_call(fn: str, first: Any, second: Any = NOT_GIVEN, third: Any = NOT_GIVEN, *,
               sample_rate: int | None = None) -> ModelCall:
    """Resolve the two forms of a driver's call: ``fn(model, x)`` and ``fn(apply_fn, params, x)``.

    With a :class:`jsuff.Model`, its own parameters are used and the clips are made what the model
    takes: a file path (or a list of them) is read with :func:`jsuff.audio.load_audio` at the
    model's rate; an array at ``sample_rate`` (default: the model's) is resampled to it; every clip
    is fitted to the model's input length (:class:`jsuff.models.InputPolicy`). A list of clips
    stays a list (its clips may differ in length). With ``apply_fn``, ``x`` is used as given.

    Raises:
        TypeError: the arguments do not fit either form (a Model given with params, a Model in
            second place, a Flax module, something that is not a function); the message says
            which call to write.

    Example:
        >>> from jsuff.models import Model
        >>> m = Model.from_function(lambda p, x: x[:, :2] * p, 2.0, sample_rate=8000, labels=("a", "b"))
        >>> model_call("explain", m, np.ones(4)).params
        2.0
        >>> model_call("explain", m, m.params, np.ones(4))
        Traceback (most recent call last):
        ...
        TypeError: explain(model, waveform): a jsuff.Model carries its own parameters, so it takes the waveform second; got a third argument. Call explain(model, x), or explain(model.apply, model.params, x)
    """
    from jsuff.models.base import Model  # models import this module: resolved at call time

    if isinstance(first, Model):
        if third is not NOT_GIVEN:
            raise TypeError(
                f"{fn}(model, waveform): a jsuff.Model carries its own parameters, so it takes the waveform second; "
                f"got a third argument. Call {fn}(model, x), or {fn}(model.apply, model.params, x)"
            )
        if second is NOT_GIVEN:
            raise TypeError(f"{fn}(model, waveform) needs the waveform (an array at the model's rate, or a file path)")
        return ModelCall(first.apply, first.params, _model_input(first, second, sample_rate), first)
    if isinstance(second, Model):
        raise TypeError(f"the second argument of {fn} is a jsuff.Model: pass it first, {fn}(model, x)")
    if type(first).__module__.startswith("flax"):
        raise TypeError(
            f"{fn} got a Flax module ({type(first).__name__}); pass a jsuff.Model (jsuff.Model.from_module(module, "
            "arch=..., config={}, sample_rate=..., labels=[...])) or a pure apply(params, waveforms) and its params"
        )
    if not callable(first):
        raise TypeError(
            f"{fn}: the first argument must be a jsuff.Model or a function apply(params, waveforms[B, T]) -> "
            f"logits[B, C]; got {type(first).__name__}"
        )
    if third is NOT_GIVEN:
        raise TypeError(
            f"{fn}(apply_fn, params, waveform) needs three arguments, got two: add the waveform, or pass a "
            f"jsuff.Model first, {fn}(model, waveform), which carries its parameters"
        )
    if sample_rate is not None:
        raise TypeError(
            f"{fn}: sample_rate= needs a jsuff.Model (an apply function declares no rate): resample the clip "
            "yourself (jsuff.resample(x, rate, model_rate)) or pass a Model"
        )
    return ModelCall(first, second, third, None)


def _model_input(model: Any, x: Any, sample_rate: int | None) -> Any:
    """Clips as ``model`` takes them: files read at its rate, arrays resampled, lengths fitted."""
    host_only("a jsuff.Model's input", x)
    if isinstance(x, Clips):  # already prepared
        return x

    def one(clip: Any) -> np.ndarray:
        if isinstance(clip, (str, bytes, os.PathLike)):  # read at the model's rate from the file's own
            return model.prepare(load_audio(os.fsdecode(clip), model.sample_rate)[0])
        return model.prepare(validate_waveform(clip), sample_rate)

    return [one(c) for c in x] if is_clip_list(x) else one(x)


def is_clip_list(x: Any) -> bool:
    """A list (or tuple) of clips or file paths, not a list of samples.

    Example:
        >>> is_clip_list(["a.wav", np.ones(3)]), is_clip_list([0.1, 0.2])
        (True, False)
    """
    return isinstance(x, (list, tuple)) and bool(x) and (
        isinstance(x[0], (str, bytes, os.PathLike)) or not np.isscalar(x[0]))


#: Arrays with at most this many entries on one axis and many on the other look like channels.
_MAX_CHANNELS = 8


def channel_axis(shape: tuple[int, ...]) -> str:
    """``"last"`` or ``"first"`` when a 2-D ``shape`` looks like one multi-channel clip (a few
    entries on one axis, many on the other), else ``""``."""
    if len(shape) != 2:
        return ""
    a, b = shape
    if b <= _MAX_CHANNELS and a >= 32 * _MAX_CHANNELS:
        return "last"
    if a <= _MAX_CHANNELS and b >= 32 * _MAX_CHANNELS:
        return "first"
    return ""


def layout_hint(shape: tuple[int, ...]) -> str:
    """What a 2-D array of ``shape`` likely is, when it looks like a multi-channel clip (``""``
    otherwise): jsuff explains mono clips.

    Example:
        >>> layout_hint((8000, 2))
        'shape (8000, 2), which looks like one 2-channel clip with channels last; jsuff explains mono clips: mix it down, x.mean(axis=-1) (jsuff.load_audio mixes files to mono)'
    """
    axis = channel_axis(shape)
    if axis == "last":
        return (f"shape {tuple(shape)}, which looks like one {shape[1]}-channel clip with channels last; "
                "jsuff explains mono clips: mix it down, x.mean(axis=-1) (jsuff.load_audio mixes files to mono)")
    if axis == "first":
        return (f"shape {tuple(shape)}, which is {shape[0]} clips (use explain_many) or one {shape[0]}-channel clip "
                "with channels first (jsuff explains mono clips: mix it down, x.mean(axis=0))")
    return ""


def clip_array(waveforms: Any) -> np.ndarray:
    """``waveforms`` (``[T]`` or ``[N, T]``) checked (:func:`jsuff.audio.validate_waveform`) as
    float32, refusing an array that looks like one multi-channel clip with channels last."""
    name = "waveforms" if np.ndim(waveforms) == 2 else "waveform"
    x = validate_waveform(waveforms, name=name)
    if channel_axis(x.shape) == "last":
        raise AudioError(f"{name} has {layout_hint(x.shape)}; as given it would be {x.shape[0]} clips of "
                         f"{x.shape[1]} samples")
    return x


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
    domain: Domain | str,
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
    domain = as_domain(domain)
    traced = isinstance(waveforms, jax.core.Tracer)
    if is_clip_list(waveforms):
        waveforms = [validate_waveform(w, name=f"waveforms[{i}]") for i, w in enumerate(waveforms)]
    if is_clip_list(waveforms) and len({w.shape for w in waveforms}) > 1:
        lengths = ", ".join(str(w.shape[-1]) for w in waveforms[:6])
        raise AudioError(
            f"waveforms are {len(waveforms)} clips of different lengths "
            f"({lengths}{', ...' if len(waveforms) > 6 else ''}): "
            "these steps take clips of one length; jsuff.explain_many takes a list of any lengths (it groups "
            "clips of one length), or fit them first (jsuff.models.fit_length)"
        )
    name = "waveforms" if np.ndim(waveforms) == 2 else "waveform"
    if traced and np.ndim(waveforms) not in (1, 2):
        raise AudioError(f"{name} has shape {waveforms.shape}; expected [T] (one clip) or [B, T] (a batch)")
    x = waveforms.astype(jnp.float32) if traced else clip_array(waveforms)
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
    return on_shards(lambda p, x: check_logits(apply_fn(p, x)), mesh, axis, (params,), (waveforms,))


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
