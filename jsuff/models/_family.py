"""Helpers the family modules share (AASIST, RawNet2, mel-CNN and the detector ports).

* :func:`parse_config`: frozen, hashable config dataclasses from the JSON dicts that
  ``model.json`` and converters carry, with every missing and unknown key named at once;
  :func:`config_to_json` the way back, every field written out (defaults included);
* :func:`init_rngs`: a cheap-to-compile PRNG for random initialisation.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class C:
    ...     dims: tuple
    ...     rate: int = 16000
    >>> parse_config(C, {"dims": [1, [2, 3]]}, arch="toy")
    C(dims=(1, (2, 3)), rate=16000)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models.base import ModelError

T = TypeVar("T")


def _frozen(value: Any) -> Any:
    # JSON lists become tuples so that the config is hashable (a static jit argument).
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def config_to_json(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict, defaults written out (tuples become lists)."""
    return {f.name: _json(getattr(config, f.name)) for f in dataclasses.fields(config)}


def parse_config(cls: type[T], config: Mapping[str, Any], *, arch: str, ignored: tuple[str, ...] = ()) -> T:
    """Build the dataclass ``cls`` from ``config``, naming every missing and unknown key at once.

    Args:
        cls: a frozen dataclass whose fields are the config keys.
        config: the JSON mapping.
        arch: the architecture name, for the error message.
        ignored: keys that may appear and carry no meaning here (e.g. ``"architecture"``).

    Raises:
        ModelError: missing required keys or unknown keys (typos must not pass silently), or a
            value the dataclass's own checks reject.
    """
    if not isinstance(config, Mapping):
        raise ModelError(f"{arch} config must be a JSON object, got {type(config).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    no_default = dataclasses.MISSING
    required = [n for n, f in fields.items() if f.default is no_default and f.default_factory is no_default]
    missing = [n for n in required if n not in config]
    unknown = sorted(k for k in config if k not in fields and k not in ignored)
    if missing or unknown:
        parts = [f"{arch} config does not fit the architecture:"]
        if missing:
            parts.append(f"  missing keys: {', '.join(missing)}")
        if unknown:
            parts.append(f"  unknown keys: {', '.join(unknown)} (known: {', '.join(fields)})")
        raise ModelError("\n".join(parts))
    try:
        return cls(**{k: _frozen(v) for k, v in config.items() if k in fields})
    except (TypeError, ValueError) as e:
        raise ModelError(f"{arch} config is invalid: {e}") from None


def init_rngs(rngs: nnx.Rngs) -> nnx.Rngs:
    """Re-key ``rngs`` with JAX's ``"rbg"`` PRNG for parameter initialisation.

    Eager initialisation with the default threefry PRNG compiles one random-bits program per
    parameter shape, and XLA compiles threefry slowly: ~13 s of CPU for a small mel-CNN and ~24 s
    for AASIST on 2 cores, against ~2 s and ~7 s with ``"rbg"`` (XLA's RngBitGenerator). The new
    key is derived from ``rngs``, so a seed still fixes the weights (on a given backend: ``rbg``
    streams may differ between CPU and GPU). Only initial values change; nothing else uses it.
    """
    data = jax.random.key_data(rngs.params())  # threefry: uint32[2]; rbg wants uint32[4]
    return nnx.Rngs(params=jax.random.wrap_key_data(jnp.concatenate([data, data]), impl="rbg"))
