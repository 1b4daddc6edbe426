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

A model directory is user input when it is loaded, so :func:`load_model` checks it before use:
``labels`` must be a list of distinct strings, one per output of the model; every parameter must
be finite (also checked when a model is built from converted weights and when it is saved); and
the SHA-256 of every file under ``params/``, recorded in ``model.json`` (``params_sha256``) when it
was saved, must match, so a corrupted file is named instead of loaded. Directories written before
checksums were recorded (``format_version`` 1) still load, with a warning that says how to add one.

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
import importlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.evaluate import predict

__all__ = [
    "ARCHITECTURE_MODULES",
    "CROP_MODES",
    "FORMAT_VERSION",
    "MODEL_JSON",
    "PAD_MODES",
    "PARAMS_DIR",
    "abstract_state",
    "ApplyFn",
    "Architecture",
    "architectures",
    "build_model",
    "check_finite",
    "check_labels",
    "check_params",
    "expected_shapes",
    "fit_length",
    "flatten",
    "get_architecture",
    "InputPolicy",
    "load_model",
    "Model",
    "ModelError",
    "num_outputs",
    "Params",
    "register",
    "save_model",
    "sha256_file",
    "unflatten_like",
    "UnknownArchitectureError",
]

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]

# 2: model.json records params_sha256. Version 1 directories (no checksum) still load.
FORMAT_VERSION = 2
MODEL_JSON = "model.json"
PARAMS_DIR = "params"


class ModelError(ValueError):
    """A model directory, architecture or config that jsuff cannot use; the message says why."""


class UnknownArchitectureError(ModelError):
    """An architecture name that is not registered; the message lists the supported ones."""


# ----------------------------------------------------------------------------------------------
# Fitting a clip to the model's input length
# ----------------------------------------------------------------------------------------------

PAD_MODES = ("zero", "repeat")
CROP_MODES = ("start", "center")


@dataclasses.dataclass(frozen=True)
class InputPolicy:
    """How a clip is fitted to a model's input length.

    Attributes:
        length: samples the model expects, or ``None`` when it takes any length.
        pad: ``"zero"`` appends zeros; ``"repeat"`` tiles the clip (AASIST's policy).
        crop: ``"start"`` keeps the first ``length`` samples; ``"center"`` the middle ones.
        pads_internally: the model pads a shorter clip to ``length`` itself (Whisper's front end
            pads every clip to 30 s), so callers leave it as it is: a clip is explained over its
            own samples, not over the padding, and its sufficient signal is as long as the clip.
            A longer clip is still cropped to ``length`` (the model hears no more).
    """

    length: int | None = None
    pad: str = "zero"
    crop: str = "start"
    pads_internally: bool = False

    def __post_init__(self) -> None:
        if self.pad not in PAD_MODES:
            raise ModelError(f"InputPolicy.pad must be one of {PAD_MODES}, got {self.pad!r}")
        if self.crop not in CROP_MODES:
            raise ModelError(f"InputPolicy.crop must be one of {CROP_MODES}, got {self.crop!r}")
        if self.length is not None and self.length <= 0:
            raise ModelError(f"InputPolicy.length must be positive, got {self.length}")
        if not isinstance(self.pads_internally, bool):
            raise ModelError(f"InputPolicy.pads_internally must be true or false, got {self.pads_internally!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit_length(waveform: np.ndarray, policy: InputPolicy) -> np.ndarray:
    """Fit the last axis of ``waveform`` to ``policy.length`` (no-op when it is ``None``, and for a
    shorter clip when the model pads it itself).

    Example:
        >>> fit_length(np.arange(3.0), InputPolicy(length=7, pad="repeat")).tolist()
        [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
        >>> fit_length(np.arange(3.0), InputPolicy(length=7, pads_internally=True)).tolist()
        [0.0, 1.0, 2.0]
    """
    x = np.asarray(waveform)
    n = policy.length
    t = x.shape[-1]
    if n is None or t == n or (t < n and policy.pads_internally):
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

    def __repr__(self) -> str:
        """One line: architecture, rate, labels (the first five, each cut to 24 characters), parameter
        count, input policy (not the parameters: a DistilHuBERT-sized model has 1,809 lines of them).

        Example:
            >>> Model.from_function(lambda p, x: x, {"w": jnp.zeros((3, 4))}, sample_rate=16000,
            ...                     labels=[f"c{i}" for i in range(12)], input=InputPolicy(64600, pad="repeat"))
            Model(arch='function', sample_rate=16000, labels=12 ['c0', 'c1', 'c2', 'c3', 'c4', ...], params=12, input=64600 samples (pad repeat, crop start))
        """
        shown = ", ".join(repr(lbl if len(lbl) <= 24 else lbl[:23] + "~") for lbl in self.labels[:5])
        shown += ", ..." if len(self.labels) > 5 else ""
        return (f"Model(arch={self.arch!r}, sample_rate={self.sample_rate}, labels={len(self.labels)} [{shown}], "
                f"params={_count(self.params)}, input={_policy_text(self.input)})")

    __str__ = __repr__


def _count(params: Params) -> str:
    """Parameter count as people write it (12, 3.4k, 23.5M)."""
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _policy_text(p: InputPolicy) -> str:
    if p.length is None:
        return "any length"
    if p.pads_internally:
        return f"up to {p.length} samples (shorter: padded by the model; longer: crop {p.crop})"
    return f"{p.length} samples (pad {p.pad}, crop {p.crop})"


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
        renamed: ``(old, new)`` parameter-path renames (``"attn/query"`` -> ``"attn/q_proj"``)
            made after directories of this architecture were saved; :func:`load_model` reads a
            directory with the old names through them.
    """

    name: str
    build: Callable[[Mapping[str, Any], nnx.Rngs], nnx.Module]
    description: str = ""
    family: str = ""
    renamed: tuple[tuple[str, str], ...] = ()


_REGISTRY: dict[str, Architecture] = {}

#: Every architecture jsuff ships, and the family module under ``jsuff.models`` that registers it
#: (its :attr:`Architecture.family`). :func:`get_architecture` imports only the module it needs, so
#: loading one model does not import every family. A new family adds its names here
#: (``tests/test_models_base.py`` checks this table against the family modules).
ARCHITECTURE_MODULES: dict[str, str] = {
    "aasist": "aasist",
    "ast": "ast",
    "bandpower": "toy",
    "crepe": "crepe",
    "data2vec_audio": "data2vec_audio",
    "hubert": "wav2vec2",
    "javad": "javad",
    "melcnn": "melcnn",
    "musicnn": "musicnn",
    "musicnn_vgg": "musicnn",
    "pulsevad": "pulsevad",
    "rawnet2": "rawnet2",
    "silero_vad": "silero",
    "wav2vec2": "wav2vec2",
    "wavlm": "wavlm",
    "whisper": "whisper",
}


def register(arch: Architecture) -> Architecture:
    """Add an architecture to the registry (family modules call this at import time)."""
    if arch.name in _REGISTRY and _REGISTRY[arch.name] is not arch:
        raise ModelError(f"architecture {arch.name!r} is registered twice")
    _REGISTRY[arch.name] = arch
    return arch


def architectures() -> dict[str, Architecture]:
    """All architectures by name: every family of :data:`ARCHITECTURE_MODULES` (imported here)
    and any other registered one."""
    for module in sorted(set(ARCHITECTURE_MODULES.values())):
        importlib.import_module(f"jsuff.models.{module}")
    return dict(sorted(_REGISTRY.items()))


def get_architecture(name: str) -> Architecture:
    """The architecture ``name``, importing its family module on first use.

    Raises:
        UnknownArchitectureError: no such architecture; the message lists the supported ones.
    """
    if name not in _REGISTRY and name in ARCHITECTURE_MODULES:
        importlib.import_module(f"jsuff.models.{ARCHITECTURE_MODULES[name]}")
    if name not in _REGISTRY:
        supported = sorted(set(ARCHITECTURE_MODULES) | set(_REGISTRY))
        raise UnknownArchitectureError(f"unknown architecture {name!r}; supported: {', '.join(supported)}")
    return _REGISTRY[name]


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
        files = [f["path"] for f in (source or {}).get("files", []) if isinstance(f, Mapping) and "path" in f]
        what = f"parameters for {arch}" + (f" (from {', '.join(files)})" if files else "")
        check_params(flatten(pure), flat_params, what=what)
        check_finite(flat_params, what=what)
        arrays = unflatten_like(
            {k: jnp.asarray(np.asarray(v), dtype=flatten(pure)[k].dtype) for k, v in flat_params.items()},
            pure,
        )
        nnx.replace_by_pure_dict(state, arrays)
        module = nnx.merge(graphdef, state)
    model = Model.from_module(
        module, arch=arch, config=config, sample_rate=sample_rate, labels=labels, input=input, source=source
    )
    check_labels(model, what=f"labels for {arch}")
    return model


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


def check_finite(flat: Mapping[str, Any], *, what: str) -> None:
    """Raise one :class:`ModelError` naming every tensor of ``flat`` that holds NaN or Inf.

    Example:
        >>> check_finite({"w": np.array([1.0, np.nan])}, what="demo")
        Traceback (most recent call last):
        ...
        jsuff.models.base.ModelError: demo: non-finite weights in 1 tensor: w (1 NaN of 2 values)
    """
    bad = []
    for key in sorted(flat):
        a = np.asarray(flat[key])
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            continue
        a = a.astype(np.float64) if a.dtype.itemsize < 4 else a  # bfloat16/float16 via float64
        if not np.isfinite(a).all():
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            kinds = " and ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "Inf")) if n)
            bad.append(f"{key} ({kinds} of {a.size} values)")
    if bad:
        raise ModelError(f"{what}: non-finite weights in {len(bad)} tensor{'s' * (len(bad) > 1)}: " + "; ".join(bad))


def num_outputs(model: Model) -> int:
    """The number of logits ``model.apply`` returns per clip, found by tracing it (no compute).

    The probe clip is ``model.input.length`` samples; for a model that takes any length, the
    shortest of 1, 4 and 30 seconds that it accepts (some need a few seconds, e.g. javad's windows).
    """
    lengths = [model.input.length] if model.input.length else [model.sample_rate * s for s in (1, 4, 30)]
    for length in lengths:
        try:
            out = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct((1, length), jnp.float32))
            break
        except Exception as e:  # a clip too short for it, or a config it cannot trace
            error = f"{type(e).__name__}: {e}"
    else:
        raise ModelError(f"cannot trace {model.arch} on a [1, {length}] clip to count its outputs: {error}")
    if len(getattr(out, "shape", ())) != 2 or out.shape[0] != 1:
        raise ModelError(f"{model.arch} returns {getattr(out, 'shape', type(out).__name__)} for one clip, not [1, C]")
    return int(out.shape[1])


def check_labels(model: Model, *, what: str) -> None:
    """Labels are distinct strings, one per output of the model; else a :class:`ModelError`."""
    labels = model.labels
    not_str = [f"{i} ({type(v).__name__} {v!r})" for i, v in enumerate(labels) if not isinstance(v, str)]
    if not_str:
        raise ModelError(f"{what}: labels must be strings; not a string: label " + ", ".join(not_str))
    seen: dict[str, list[int]] = {}
    for i, v in enumerate(labels):
        seen.setdefault(v, []).append(i)
    dup = [f"{v!r} (at {', '.join(map(str, at))})" for v, at in seen.items() if len(at) > 1]
    if dup:
        raise ModelError(f"{what}: duplicate labels " + ", ".join(dup) + "; each output needs its own name")
    n = num_outputs(model)
    if len(labels) != n:
        raise ModelError(
            f"{what}: {len(labels)} labels for a model with {n} outputs; the labels must name every output, in order"
        )


# ----------------------------------------------------------------------------------------------
# Model directories
# ----------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _new_dir(parent: Path, prefix: str) -> Path:
    """A fresh, uniquely named directory under ``parent``, with the permissions the umask gives.

    ``tempfile.mkdtemp`` would make it 0700 whatever the umask, and the model directory it becomes
    would keep that mode.
    """
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ModelError(f"cannot create a temporary directory in {parent}")


def _params_checksums(params_dir: Path) -> dict[str, str]:
    """SHA-256 of every file under ``params_dir``, keyed by its POSIX path relative to it."""
    return {
        p.relative_to(params_dir).as_posix(): sha256_file(p) for p in sorted(params_dir.rglob("*")) if p.is_file()
    }


def _verify_checksums(root: Path, recorded: Any, meta_path: Path) -> None:
    params_dir = root / PARAMS_DIR
    if not isinstance(recorded, Mapping) or not all(isinstance(v, str) for v in recorded.values()):
        raise ModelError(f"{meta_path}: 'params_sha256' must map file names to SHA-256 hex digests")
    present = {p.relative_to(params_dir).as_posix() for p in params_dir.rglob("*") if p.is_file()}
    missing = sorted(set(recorded) - present)
    extra = sorted(f for f in present - set(recorded) if not f.rsplit("/", 1)[-1].startswith("."))
    changed = sorted(f for f in set(recorded) & present if sha256_file(params_dir / f) != recorded[f])
    if missing or extra or changed:
        parts = [f"{params_dir} is corrupt: its files do not match the checksums in {meta_path}"]
        if changed:
            parts.append("  changed since the model was saved: " + ", ".join(str(params_dir / f) for f in changed))
        if missing:
            parts.append("  missing: " + ", ".join(str(params_dir / f) for f in missing))
        if extra:
            parts.append("  not written with the model: " + ", ".join(str(params_dir / f) for f in extra))
        parts.append("  re-convert or re-save the model, or restore the directory from a copy")
        raise ModelError("\n".join(parts))


def save_model(model: Model, dest: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a model directory, atomically: ``dest`` appears complete or not at all.

    Only models built from a registered architecture can be saved (``load_model`` must be able
    to rebuild the module from ``model.json``). The parameters must be finite; ``model.json``
    records the SHA-256 of every parameter file, which :func:`load_model` verifies.
    """
    import orbax.checkpoint as ocp

    dest = Path(dest).absolute()
    get_architecture(model.arch)  # fail before writing anything
    if dest.exists() and not overwrite:
        raise ModelError(f"{dest} already exists (pass overwrite=True to replace it)")
    pure = nnx.to_pure_dict(model.params)
    check_finite(flatten(pure), what=f"cannot save {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_dir(dest.parent, f".{dest.name}.")
    try:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(tmp / PARAMS_DIR, pure)
        ckpt.wait_until_finished()
        ckpt.close()
        meta = {
            "format_version": FORMAT_VERSION,
            "arch": model.arch,
            "config": dict(model.config),
            "labels": list(model.labels),
            "sample_rate": model.sample_rate,
            "input": model.input.to_json(),
            "source": dict(model.source),
            "params_sha256": _params_checksums(tmp / PARAMS_DIR),
        }
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _renamed_path(path: str, renamed: Sequence[tuple[str, str]]) -> str:
    # Whole path segments only: "attn/out" renames ".../attn/out/kernel", not ".../attn/out_proj/...".
    padded = f"/{path}/"
    for old, new in renamed:
        padded = padded.replace(f"/{old}/", f"/{new}/")
    return padded[1:-1]


def _restore(ckpt: Any, params_dir: Path, target: dict, renamed: Sequence[tuple[str, str]]) -> dict:
    """The saved parameters laid out as ``target``; with ``renamed``, a directory saved under the
    old parameter names is read as saved and its paths renamed."""
    if renamed:
        expected = flatten(target)
        if set(flatten(dict(ckpt.metadata(params_dir).item_metadata))) != set(expected):
            flat = {_renamed_path(k, renamed): v for k, v in flatten(ckpt.restore(params_dir)).items()}
            check_params(expected, flat, what=f"parameters in {params_dir}")
            return unflatten_like(flat, target)
    return ckpt.restore(params_dir, target)


def _checkpointer(ocp: Any) -> Any:
    """orbax's checkpointer for reading a model directory in this process alone. Under
    ``jax.distributed`` (a study shared by several processes) orbax would otherwise make every
    process take part in each restore; here each process loads its models on its own."""
    if jax.process_count() == 1:
        return ocp.StandardCheckpointer()
    only_me = ocp.options.MultiprocessingOptions(primary_host=None, active_processes={jax.process_index()})
    return ocp.StandardCheckpointer(multiprocessing_options=only_me)


def _this_process(target: dict) -> dict:
    """``target`` placed on this process's first device when there are several processes (the
    saved single-device sharding names a device another process may own)."""
    if jax.process_count() == 1:
        return target
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), target)


def _read_meta(root: Path) -> dict[str, Any]:
    """``model.json`` of ``root``, with every field's type checked (the file is user input)."""
    meta_path = root / MODEL_JSON
    if not meta_path.is_file():
        raise ModelError(f"{root} is not a jsuff model directory (no {MODEL_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{meta_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path} must hold a JSON object, got {type(meta).__name__}")
    for key in ("arch", "config", "labels", "sample_rate"):
        if key not in meta:
            raise ModelError(f"{meta_path} lacks the field {key!r}")
    version = meta.get("format_version", 1)
    expected = {
        "arch": (str, "a string"),
        "config": (dict, "an object"),
        "labels": (list, "a list of strings, one per output"),
        "input": (dict, "an object"),
        "source": (dict, "an object"),
        "format_version": (int, "an integer"),
    }
    for key, (kind, text) in expected.items():
        if key in meta and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            raise ModelError(f"{meta_path}: {key!r} must be {text}, got {type(meta[key]).__name__} {meta[key]!r:.60}")
    rate = meta["sample_rate"]
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ModelError(f"{meta_path}: 'sample_rate' must be a positive integer (Hz), got {rate!r:.60}")
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{meta_path} has format_version {version}; this jsuff reads up to {FORMAT_VERSION} (upgrade jsuff)"
        )
    if version >= 2 and "params_sha256" not in meta:
        raise ModelError(f"{meta_path} (format_version {version}) lacks 'params_sha256'; the file was altered")
    return meta


def _declared_padding(module: nnx.Module, policy: InputPolicy, recorded: bool) -> InputPolicy:
    """A directory saved before ``InputPolicy.pads_internally`` existed says nothing about it: take
    the architecture's word (Whisper pads internally) when the recorded length is the one it
    declares."""
    declare = getattr(getattr(module, "config", None), "input_policy", None)
    if recorded or declare is None:
        return policy
    declared = declare()
    if declared.pads_internally and declared.length == policy.length:
        return dataclasses.replace(policy, pads_internally=True)
    return policy


def load_model(path: str | os.PathLike) -> Model:
    """Load a model directory written by :func:`save_model` or ``jsuff convert``.

    Raises:
        ModelError: the directory, its ``model.json`` or its parameters are missing or unusable:
            labels that are not distinct strings naming every output, a parameter file whose
            checksum differs from the recorded one, non-finite weights. The message names the file.
    """
    import orbax.checkpoint as ocp

    root = Path(path).absolute()
    meta = _read_meta(root)
    meta_path = root / MODEL_JSON
    spec = get_architecture(meta["arch"])
    config = meta["config"]
    try:
        policy = InputPolicy(**meta.get("input", {}))
    except (TypeError, ModelError) as e:  # unknown keys, bad values
        raise ModelError(f"{meta_path}: bad 'input' {meta['input']!r}: {e}") from None
    module = nnx.eval_shape(lambda: spec.build(config, nnx.Rngs(0)))
    policy = _declared_padding(module, policy, "pads_internally" in meta.get("input", {}))
    graphdef, state = nnx.split(module)

    def as_model(state: nnx.State) -> Model:
        return Model.from_module(
            nnx.merge(graphdef, state), arch=meta["arch"], config=config, sample_rate=meta["sample_rate"],
            labels=meta["labels"], input=policy, source=meta.get("source", {}),
        )

    check_labels(as_model(state), what=str(meta_path))  # on shapes alone, before reading any weight
    if not (root / PARAMS_DIR).is_dir():
        raise ModelError(f"{root} has no {PARAMS_DIR}/ checkpoint")
    if "params_sha256" in meta:
        _verify_checksums(root, meta["params_sha256"], meta_path)
    else:
        warnings.warn(
            f"{root} records no checksum of its parameters (written before jsuff recorded them), so "
            "corruption cannot be detected; add one by re-saving it: "
            "jsuff.models.save_model(jsuff.load_model(p), p, overwrite=True)",
            UserWarning,
            stacklevel=2,
        )
    try:
        ckpt = _checkpointer(ocp)
        restored = _restore(ckpt, root / PARAMS_DIR, _this_process(nnx.to_pure_dict(state)), spec.renamed)
        ckpt.close()
    except ModelError:
        raise
    except Exception as e:  # orbax raises many types; the user needs the path and the reason
        raise ModelError(f"cannot read parameters from {root / PARAMS_DIR}: {e}") from None
    check_finite(flatten(restored), what=str(root / PARAMS_DIR))
    nnx.replace_by_pure_dict(state, restored)
    return as_model(state)
