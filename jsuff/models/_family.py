"""Helpers every family module shares.

* :func:`parse_config`: the one config parser. Frozen, hashable config dataclasses from the JSON
  dicts that ``model.json`` and converters carry, with every missing and unknown key named at
  once; :func:`config_to_json` the way back, every field written out (defaults included);
* :class:`FamilyConfig`: the mixin every family's config dataclass inherits, so that each one is
  read, written and asked for its input policy the same way;
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
from typing import Any, ClassVar, Self, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models.base import InputPolicy, ModelError

__all__ = ["FamilyConfig", "config_to_json", "init_rngs", "parse_config"]

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
    except ModelError:
        raise  # the dataclass's own checks already name the family
    except (TypeError, ValueError) as e:
        raise ModelError(f"{arch} config is invalid: {e}") from None


class FamilyConfig:
    """Mixin for the families' frozen config dataclasses: one way to and from ``model.json``.

    A subclass sets ``family`` (the name its error messages use) and, when ``model.json`` may carry
    keys that mean nothing to it, ``ignored_keys``; it overrides :meth:`input_policy` when the
    model wants a fixed input length.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class C(FamilyConfig):
        ...     family = "toy"
        ...     width: int = 2
        >>> C.from_mapping({"width": 3}).to_json()
        {'width': 3}
        >>> C.from_mapping({"depth": 3})
        Traceback (most recent call last):
        ...
        jsuff.models.base.ModelError: toy config does not fit the architecture:
          unknown keys: depth (known: width)
    """

    family: ClassVar[str] = "model"
    ignored_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | Self) -> Self:
        """Parse a config dict with :func:`parse_config` (an instance is returned as is)."""
        if isinstance(config, cls):
            return config
        return parse_config(cls, config, arch=cls.family, ignored=cls.ignored_keys)

    def to_json(self) -> dict[str, Any]:
        """Every field, defaults included (what ``model.json`` stores)."""
        return config_to_json(self)

    def input_policy(self) -> InputPolicy:
        """How clips are fitted to the model's input: any length unless the family says otherwise."""
        return InputPolicy()


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
