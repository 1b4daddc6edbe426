"""``bandpower``: a transparent toy classifier whose evidence is known by construction.

The logits are a linear read-out of the log energy in fixed frequency bands::

    e_b(x)   = log(eps + sum_{k in band b} |rfft(x)_k|^2 / T)
    logits   = e(x) @ W + bias          (W: [bands, classes])

With ``W`` the identity (the default), the label is simply the loudest band, so the minimal
sufficient signal must lie inside that band. It is a registered architecture like any ported one,
so it can be saved, loaded by path in a study, and used in tests and examples where the right
answer must be known in advance.

Example:
    >>> import jax.numpy as jnp
    >>> from jsuff.models import build_model
    >>> m = build_model("bandpower", {"sample_rate": 8000, "bands": [[100, 300], [1000, 1500]]},
    ...                 sample_rate=8000, labels=["low", "high"])
    >>> t = jnp.arange(8000) / 8000
    >>> int(m(jnp.sin(2 * jnp.pi * 1200 * t)[None]).argmax())
    1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsuff.models.base import Architecture, ModelError, register

__all__ = ["BandPower"]

_EPS = 1e-8


class BandPower(nnx.Module):
    """See the module docstring. Config: ``sample_rate``, ``bands`` ([[lo_hz, hi_hz], ...]),
    optional ``num_classes`` (default: number of bands) and ``weights``/``bias`` initial values."""

    def __init__(self, config: Mapping[str, Any], rngs: nnx.Rngs):
        bands = np.asarray(config["bands"], dtype=np.float64)
        if bands.ndim != 2 or bands.shape[1] != 2 or len(bands) == 0:
            raise ModelError(f"bandpower: 'bands' must be a list of [lo_hz, hi_hz] pairs, got {config['bands']!r}")
        if np.any(bands[:, 1] <= bands[:, 0]):
            raise ModelError("bandpower: every band needs lo_hz < hi_hz")
        self.sample_rate = int(config["sample_rate"])
        self.bands = tuple(map(tuple, bands.tolist()))
        n_bands = len(bands)
        n_classes = int(config.get("num_classes", n_bands))
        w = config.get("weights")
        w0 = np.eye(n_bands, n_classes, dtype=np.float32) if w is None else np.asarray(w, np.float32)
        if w0.shape != (n_bands, n_classes):
            raise ModelError(f"bandpower: weights must have shape {(n_bands, n_classes)}, got {w0.shape}")
        b0 = np.asarray(config.get("bias", np.zeros(n_classes)), np.float32)
        self.weights = nnx.Param(jnp.asarray(w0))
        self.bias = nnx.Param(jnp.asarray(b0))

    def band_energies(self, waveforms: jax.Array) -> jax.Array:
        t = waveforms.shape[-1]
        power = jnp.abs(jnp.fft.rfft(waveforms, axis=-1)) ** 2 / t
        freqs = np.fft.rfftfreq(t, 1.0 / self.sample_rate)
        sel = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in self.bands], axis=1).astype(np.float32)
        return jnp.log(_EPS + power @ jnp.asarray(sel))

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        return self.band_energies(waveforms) @ self.weights[...] + self.bias[...][None, :]


register(
    Architecture(
        "bandpower",
        lambda config, rngs: BandPower(config, rngs),
        "toy: linear read-out of log band energies (known evidence, for tests and examples)",
        "toy",
    )
)
