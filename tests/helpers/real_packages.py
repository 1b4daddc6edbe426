"""Helpers for the parity tests against real packages (tests/test_real_*.py).

* :func:`require`: skip cleanly, with the reason, when a package is not installed;
* :func:`load_isolated`: import a package's own submodules from their files without running its
  ``__init__`` (torchcrepe's and pulsevad's import torchaudio, which cannot be imported here);
* :func:`clips`: short synthetic 16 kHz test clips: a tone, noise, a crude speech-like signal;
* :func:`check_jit_eager_vmap`: a model's ``apply`` gives the same logits jitted, eagerly, vmapped
  over clips and in a loop over clips.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import jax
import numpy as np
import pytest

SR = 16000


def require(module: str, distribution: str) -> None:
    """Skip the calling test module when ``module`` is not installed (nothing is imported)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{distribution} is not installed; `make setup-real` installs it (pip install --no-deps {distribution})",
            allow_module_level=True,
        )


@contextmanager
def load_isolated(package: str, *submodules: str, exports: tuple[str, ...] = ()) -> Iterator[types.ModuleType]:
    """Import ``package.<sub>`` for each of ``submodules`` (in order) from the installed files.

    The package itself is an empty stand-in module whose ``__path__`` is the real directory, so
    its ``__init__`` never runs; the names in each ``exports`` submodule's ``__all__`` are copied
    onto it, as ``from .x import *`` in the real ``__init__`` would. ``sys.modules`` is restored on
    exit; the loaded modules keep working.
    """
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, package
    saved = {k: v for k, v in sys.modules.items() if k == package or k.startswith(package + ".")}
    stub = types.ModuleType(package)
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
    stub.__spec__.submodule_search_locations = stub.__path__
    for k in saved:
        del sys.modules[k]
    sys.modules[package] = stub
    try:
        for sub in submodules:
            mod = importlib.import_module(f"{package}.{sub}")
            if sub in exports:
                stub.__dict__.update({n: getattr(mod, n) for n in mod.__all__})
        yield stub
    finally:
        for k in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[k]
        sys.modules.update(saved)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Glottal pulses (f0 gliding 110-150 Hz) through three formant resonators, in 4 Hz syllables."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    phase = np.cumsum(2 * np.pi * (130 + 20 * np.sin(2 * np.pi * 1.5 * t)) / SR)
    pulses = np.diff(np.floor(phase / (2 * np.pi)), prepend=0.0) + 0.01 * rng.standard_normal(n)
    voiced = np.zeros(n)
    for formant, bandwidth in ((700.0, 110.0), (1220.0, 120.0), (2600.0, 160.0)):
        r = np.exp(-np.pi * bandwidth / SR)
        a = [1.0, -2 * r * np.cos(2 * np.pi * formant / SR), r * r]
        voiced += lfilter([1.0 - r], a, pulses)
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 0.5
    x = voiced * envelope
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def clips(seconds: float, seed: int = 0) -> np.ndarray:
    """``[3, seconds * 16000]`` float32: a 220 Hz tone, white noise, a speech-like signal."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * t)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(n)
    return np.stack([tone, noise, speech_like(seconds, seed)]).astype(np.float32)


def check_jit_eager_vmap(model, x: np.ndarray, atol: float) -> None:
    """jit == eager on ``x[B, T]``; vmap over single clips == a loop over them == the batch."""
    x = jax.numpy.asarray(x)
    jitted = jax.jit(model.apply)
    out = jitted(model.params, x)
    np.testing.assert_allclose(out, model.apply(model.params, x), atol=atol)
    batched = jax.jit(jax.vmap(lambda xi: model.apply(model.params, xi[None])[0]))(x)
    loop = np.stack([jitted(model.params, x[i : i + 1])[0] for i in range(x.shape[0])])
    np.testing.assert_allclose(batched, loop, atol=atol)
    np.testing.assert_allclose(batched, out, atol=atol)
