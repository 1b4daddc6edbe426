"""The model contract: a pure ``apply(params, waveforms[B, T]) -> logits[B, C]`` with its metadata.

A jsuff model is everything the search and the studies need to know about a classifier:

* ``apply``: pure and jittable, waveform in (the model's own front end is inside), logits out;
* ``params``: the pytree ``apply`` takes (an ``nnx.State`` for ported Flax modules);
* ``sample_rate``, ``labels``, ``arch``, ``config``;
* ``input``: how a clip is fitted to the length the model expects (:class:`InputPolicy`).

Ported architectures are ``flax.nnx`` modules registered with :func:`register`; a model directory
on disk is ``model.json`` (architecture, config, labels, sample rate, input policy, source checksum)
plus ``params/`` (an orbax checkpoint of the module's pure-dict state). :func:`save_model` writes
one atomically and :func:`load_model` reads it back.

Example:
    >>> import jax.numpy as jnp
    >>> m = Model.from_function(lambda p, x: x[:, :2] * p, jnp.float32(1.0), sample_rate=16000,
    ...                         labels=("a", "b"))
    >>> m(jnp.ones((1, 8))).shape
    (1, 2)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.evaluate import predict

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
PARAMS_DIR = "params"


class ModelError(ValueError):
    """A model directory, architecture or config that jsuff cannot use; the message says why."""


class UnknownArchitectureError(ModelError):
    """An architecture name that is not registered; the message lists the supported ones."""


# ----------------------------------------------------------------------------------------------
# Fitting a clip to the model's input length
# ----------------------------------------------------------------------------------------------

_PAD_MODES = ("zero", "repeat")
_CROP_MODES = ("start", "center")


@dataclasses.dataclass(frozen=True)
class InputPolicy:
    """How a clip is fitted to a model's input length.

    Attributes:
        length: samples the model expects, or ``None`` when it takes any length.
        pad: ``"zero"`` appends zeros; ``"repeat"`` tiles the clip (AASIST's policy).
        crop: ``"start"`` keeps the first ``length`` samples; ``"center"`` the middle ones.
    """

    length: int | None = None
    pad: str = "zero"
    crop: str = "start"

    def __post_init__(self) -> None:
        if self.pad not in _PAD_MODES:
            raise ModelError(f"InputPolicy.pad must be one of {_PAD_MODES}, got {self.pad!r}")
        if self.crop not in _CROP_MODES:
            raise ModelError(f"InputPolicy.crop must be one of {_CROP_MODES}, got {self.crop!r}")
        if self.length is not None and self.length <= 0:
            raise ModelError(f"InputPolicy.length must be positive, got {self.length}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit_length(waveform: np.ndarray, policy: InputPolicy) -> np.ndarray:
    """Fit the last axis of ``waveform`` to ``policy.length`` (no-op when it is ``None``).

    Example:
        >>> fit_length(np.arange(3.0), InputPolicy(length=7, pad="repeat")).tolist()
        [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    """
    x = np.asarray(waveform)
    n = policy.length
    t = x.shape[-1]
    if n is None or t == n:
        return x
    if t == 0:
        raise ModelError("cannot fit an empty waveform to the model's input length")
    if t > n:
        start = 0 if policy.crop == "start" else (t - n) // 2
        return x[..., start : start + n]
    if policy.pad == "repeat":
        reps = -(-n // t)
        return np.concatenate([x] * reps, axis=-1)[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - t)]
    return np.pad(x, pad)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A classifier as jsuff sees it. See the module docstring for the fields."""

    apply: ApplyFn
    params: Params
    sample_rate: int
    labels: tuple[str, ...]
    arch: str = "function"
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    input: InputPolicy = InputPolicy()
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def from_function(
        cls,
        apply: ApplyFn,
        params: Params,
        *,
        sample_rate: int,
        labels: Sequence[str],
        input: InputPolicy = InputPolicy(),
        arch: str = "function",
        config: Mapping[str, Any] | None = None,
    ) -> Model:
        """Wrap any pure ``apply(params, x[B, T]) -> logits[B, C]`` (toy models, user code)."""
        return cls(apply, params, int(sample_rate), tuple(labels), arch, dict(config or {}), input)

    @classmethod
    def from_module(
        cls,
        module: nnx.Module,
        *,
        arch: str,
        config: Mapping[str, Any],
        sample_rate: int,
        labels: Sequence[str],
        input: InputPolicy = InputPolicy(),
        source: Mapping[str, Any] | None = None,
    ) -> Model:
        """Split an nnx module into a pure apply function over its state (inference mode)."""
        module.eval()  # batch norm uses running stats, dropout is off
        graphdef, state = nnx.split(module)

        def apply(params: nnx.State, waveforms: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, params)(waveforms)

        return cls(
            apply, state, int(sample_rate), tuple(labels), arch, dict(config), input, dict(source or {})
        )

    def prepare(self, waveform: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Resample a float waveform (``[T]`` or ``[B, T]``) to this model's rate and fit its length."""
        x = np.asarray(waveform, dtype=np.float32)
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            from jsuff.audio import resample

            x = resample(x, int(sample_rate), self.sample_rate)
        return fit_length(x, self.input).astype(np.float32)

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        """Logits for ``waveforms[B, T]`` (jitted; already at the model's rate and length)."""
        return predict(self.apply, self.params, waveforms)


# ----------------------------------------------------------------------------------------------
# Architecture registry
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    Attributes:
        name: the name used in ``model.json`` and ``jsuff convert --arch``.
        build: ``build(config, rngs) -> nnx.Module`` with random initialisation; the module's
            ``__call__`` takes ``waveforms[B, T]`` and returns ``logits[B, C]``.
        description: one line for ``jsuff models``.
        family: the family file that defines it (``wav2vec2``, ``aasist`` ...).
    """

    name: str
    build: Callable[[Mapping[str, Any], nnx.Rngs], nnx.Module]
    description: str = ""
    family: str = ""


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture to the registry (family modules call this at import time)."""
    if arch.name in _REGISTRY and _REGISTRY[arch.name] is not arch:
        raise ModelError(f"architecture {arch.name!r} is registered twice")
    _REGISTRY[arch.name] = arch
    return arch


def architectures() -> dict[str, Architecture]:
    """All registered architectures by name."""
    import jsuff.models  # noqa: F401  (imports every family so they register)

    return dict(sorted(_REGISTRY.items()))


def get_architecture(name: str) -> Architecture:
    archs = architectures()
    if name not in archs:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; supported: {', '.join(archs) or '(none)'}"
        )
    return archs[name]


def abstract_state(arch: str, config: Mapping[str, Any]) -> nnx.State:
    """The module's state as shapes only (no allocation): what a converter must produce."""
    spec = get_architecture(arch)
    module = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(0)))
    return nnx.split(module)[1]


def expected_shapes(arch: str, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Flat ``{"a/b/kernel": shape}`` of every parameter and statistic the module holds."""
    return {k: tuple(v.shape) for k, v in flatten(nnx.to_pure_dict(abstract_state(arch, config))).items()}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a/b/c": leaf}`` (integer keys of lists become their digits)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, path + "/"))
        else:
            out[path] = v
    return out


def unflatten_like(flat: Mapping[str, Any], like: Mapping[Any, Any], prefix: str = "") -> dict:
    """Inverse of :func:`flatten`, keyed exactly like ``like`` (keeps integer keys integers)."""
    out: dict[Any, Any] = {}
    for k, v in like.items():
        path = f"{prefix}{k}"
        out[k] = unflatten_like(flat, v, path + "/") if isinstance(v, Mapping) else flat[path]
    return out


def build_model(
    arch: str,
    config: Mapping[str, Any],
    flat_params: Mapping[str, np.ndarray] | None = None,
    *,
    sample_rate: int,
    labels: Sequence[str],
    input: InputPolicy = InputPolicy(),
    source: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Model:
    """Build a registered architecture; fill it from ``flat_params`` when given.

    ``flat_params`` must hold exactly the keys of :func:`expected_shapes` with those shapes;
    otherwise one :class:`ModelError` lists every missing, unexpected and mis-shaped key.
    """
    spec = get_architecture(arch)
    if flat_params is None:
        module = spec.build(config, nnx.Rngs(seed))
    else:
        module = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(seed)))
        graphdef, state = nnx.split(module)
        pure = nnx.to_pure_dict(state)
        check_params(flatten(pure), flat_params, what=f"parameters for {arch}")
        arrays = unflatten_like(
            {k: jnp.asarray(np.asarray(v), dtype=flatten(pure)[k].dtype) for k, v in flat_params.items()},
            pure,
        )
        nnx.replace_by_pure_dict(state, arrays)
        module = nnx.merge(graphdef, state)
    return Model.from_module(
        module, arch=arch, config=config, sample_rate=sample_rate, labels=labels, input=input, source=source
    )


def check_params(expected: Mapping[str, Any], got: Mapping[str, Any], *, what: str) -> None:
    """Raise one :class:`ModelError` naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mis = sorted(
        f"{k}: got {tuple(np.shape(got[k]))}, expected {tuple(expected[k].shape)}"
        for k in set(expected) & set(got)
        if tuple(np.shape(got[k])) != tuple(expected[k].shape)
    )
    if missing or unexpected or mis:
        parts = [f"{what} do not match the architecture:"]
        if missing:
            parts.append(f"  missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            parts.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        if mis:
            parts.append(f"  mis-shaped ({len(mis)}): " + "; ".join(mis))
        raise ModelError("\n".join(parts))


# ----------------------------------------------------------------------------------------------
# Model directories
# ----------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: Model, dest: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a model directory, atomically: ``dest`` appears complete or not at all.

    Only models built from a registered architecture can be saved (``load_model`` must be able
    to rebuild the module from ``model.json``).
    """
    import orbax.checkpoint as ocp

    dest = Path(dest).absolute()
    get_architecture(model.arch)  # fail before writing anything
    if dest.exists() and not overwrite:
        raise ModelError(f"{dest} already exists (pass overwrite=True to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        meta = {
            "format_version": FORMAT_VERSION,
            "arch": model.arch,
            "config": dict(model.config),
            "labels": list(model.labels),
            "sample_rate": model.sample_rate,
            "input": model.input.to_json(),
            "source": dict(model.source),
        }
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        pure = nnx.to_pure_dict(model.params)
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(tmp / PARAMS_DIR, pure)
        ckpt.wait_until_finished()
        ckpt.close()
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def load_model(path: str | os.PathLike) -> Model:
    """Load a model directory written by :func:`save_model` or ``jsuff convert``.

    Raises:
        ModelError: the directory, its ``model.json`` or its parameters are missing or unusable.
    """
    import orbax.checkpoint as ocp

    root = Path(path).absolute()
    meta_path = root / MODEL_JSON
    if not meta_path.is_file():
        raise ModelError(f"{root} is not a jsuff model directory (no {MODEL_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{meta_path} is not valid JSON: {e}") from None
    for key in ("arch", "config", "labels", "sample_rate"):
        if key not in meta:
            raise ModelError(f"{meta_path} lacks the field {key!r}")
    spec = get_architecture(meta["arch"])
    config = meta["config"]
    module = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(0)))
    graphdef, state = nnx.split(module)
    target = nnx.to_pure_dict(state)
    if not (root / PARAMS_DIR).is_dir():
        raise ModelError(f"{root} has no {PARAMS_DIR}/ checkpoint")
    try:
        ckpt = ocp.StandardCheckpointer()
        restored = ckpt.restore(root / PARAMS_DIR, target)
        ckpt.close()
    except Exception as e:  # orbax raises many types; the user needs the path and the reason
        raise ModelError(f"cannot read parameters from {root / PARAMS_DIR}: {e}") from None
    nnx.replace_by_pure_dict(state, restored)
    return Model.from_module(
        nnx.merge(graphdef, state),
        arch=meta["arch"],
        config=config,
        sample_rate=int(meta["sample_rate"]),
        labels=meta["labels"],
        input=InputPolicy(**meta.get("input", {})),
        source=meta.get("source", {}),
    )
