"""Domains: the grid of things a sufficient signal keeps or removes, and the way back to a waveform.

A domain turns a clip ``x[T]`` into :class:`Coefficients` over a grid (:meth:`Domain.analyze`) and
turns coefficients plus a boolean keep-mask over that grid back into a waveform of length ``T``
(:meth:`Domain.synthesize`; jittable, and vmappable over the mask and the coefficients).

* :class:`RFFT` (the default, as in the FreqReX papers): the ``T // 2 + 1`` bins of one real FFT
  of the whole clip; synthesis is ``irfft(kept, n=T)``. Kept bins keep magnitude and phase.
* :class:`STFT`: frequency x frame tiles of a centred (zero-padded) STFT with a configurable
  window; synthesis is weighted overlap-add with the original phase.
* :class:`Time`: fixed segments of ``segment`` samples (``segment=1``: single samples).

Removed cells take the *mask value* (``fill``): ``"zero"`` (removal, the default), ``"noise"``
(complex/real Gaussian noise at ``noise_level`` times the clip's RMS coefficient magnitude, drawn
from the fixed ``noise_seed`` so synthesis stays deterministic) or ``"mean"`` (the clip's mean
coefficient magnitude, with each cell's original phase or sign). The fill is computed once by
``analyze`` and carried in the coefficients, so ``synthesize(coeffs, mask)`` needs nothing else.

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.sin(jnp.arange(1000, dtype=jnp.float32) / 7)
    >>> d = RFFT()
    >>> d.grid_shape(1000)
    (501,)
    >>> z = d.analyze(x)
    >>> bool(jnp.abs(d.synthesize(z, jnp.ones(501, bool)) - x).max() < 1e-5)
    True
    >>> float(jnp.abs(d.synthesize(z, jnp.zeros(501, bool))).max())
    0.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DOMAINS", "FILLS", "RFFT", "STFT", "Coefficients", "Domain", "Time", "as_domain", "get_domain"]

FILLS = ("zero", "noise", "mean")


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["values", "fill"], meta_fields=["num_samples"]
)
@dataclasses.dataclass(frozen=True)
class Coefficients:
    """A clip in a domain: ``values`` over the grid (plus trailing per-cell axes for segments),
    ``fill`` (what a removed cell becomes, same shape) and the clip's ``num_samples`` (static).

    A pytree: batching ``analyze`` with ``jax.vmap`` batches ``values`` and ``fill``.
    """

    values: jax.Array
    fill: jax.Array
    num_samples: int


@dataclasses.dataclass(frozen=True)
class Domain:
    """Base of the domains; holds the mask-value options shared by all of them.

    Attributes:
        fill: ``"zero"`` | ``"noise"`` | ``"mean"``: what removed cells become (see module doc).
        noise_level: for ``"noise"``: noise RMS relative to the clip's RMS coefficient magnitude.
        noise_seed: for ``"noise"``: the fixed seed of the noise (same clip, same noise).
    """

    name: ClassVar[str] = ""
    #: ``synthesize(coeffs, mask)`` is affine in the mask: ``s(A | B) = s(A) + s(B) - s(empty)`` for
    #: disjoint A, B (the inverse transform is linear and removed cells take a fixed fill). The
    #: search relies on it to build a refinement's mutants from sums (``SearchConfig.linear_synthesis``);
    #: a subclass whose synthesis is not affine must set it False.
    affine: ClassVar[bool] = True

    fill: str = dataclasses.field(default="zero", kw_only=True)
    noise_level: float = dataclasses.field(default=0.1, kw_only=True)
    noise_seed: int = dataclasses.field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"{type(self).__name__}.fill must be one of {FILLS}, got {self.fill!r}")
        if not (self.noise_level >= 0 and math.isfinite(self.noise_level)):
            raise ValueError(f"noise_level must be finite and >= 0, got {self.noise_level}")

    # -- what each domain defines --------------------------------------------------------------

    def grid_shape(self, num_samples: int) -> tuple[int, ...]:
        """The grid over which masks are defined, for a clip of ``num_samples`` samples."""
        raise NotImplementedError

    def _forward(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _inverse(self, values: jax.Array, num_samples: int) -> jax.Array:
        raise NotImplementedError

    def cell_energy(self, coeffs: Coefficients) -> jax.Array:
        """Energy of each grid cell (``[*grid]``, float32), for the energy fraction kept."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------

    def analyze(self, x: jax.Array) -> Coefficients:
        """Coefficients of one clip ``x[T]`` (vmap it for a batch)."""
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 1:
            raise ValueError(f"{type(self).__name__}.analyze takes one clip [T], got shape {x.shape}")
        values = self._forward(x)
        return Coefficients(values, self._fill_values(values), int(x.shape[0]))

    def synthesize(self, coeffs: Coefficients, mask: jax.Array) -> jax.Array:
        """Waveform ``[T]`` keeping the cells where ``mask[*grid]`` is True (others take the fill)."""
        v = coeffs.values
        mask = jnp.asarray(mask, bool)
        grid = v.shape[: mask.ndim]
        if mask.shape != grid:
            raise ValueError(f"mask shape {mask.shape} does not match the grid {grid}")
        m = mask.reshape(mask.shape + (1,) * (v.ndim - mask.ndim))
        return self._inverse(jnp.where(m, v, coeffs.fill), coeffs.num_samples)

    def _fill_values(self, v: jax.Array) -> jax.Array:
        if self.fill == "zero":
            return jnp.zeros_like(v)
        mag = jnp.abs(v)
        if self.fill == "mean":
            # the clip's mean magnitude with each cell's own phase (sign for real values)
            safe = jnp.where(mag > 0, mag, jnp.ones_like(mag))
            phase = jnp.where(mag > 0, v / safe.astype(v.dtype), jnp.ones_like(v))
            return jnp.mean(mag).astype(v.dtype) * phase
        rms = jnp.sqrt(jnp.mean(mag * mag))
        # one flat draw (multi-dimensional draws compile slowly on CPU), reshaped
        size = int(np.prod(v.shape))
        if jnp.iscomplexobj(v):
            pair = jax.random.normal(jax.random.key(self.noise_seed), (2 * size,), jnp.float32)
            noise = jax.lax.complex(pair[:size], pair[size:]) / jnp.complex64(np.sqrt(2.0))
        else:
            noise = jax.random.normal(jax.random.key(self.noise_seed), (size,), jnp.float32)
        return (jnp.float32(self.noise_level) * rms).astype(v.dtype) * noise.reshape(v.shape).astype(v.dtype)

    def to_json(self) -> dict[str, Any]:
        """``{"name": ..., **fields}``: what a summary or config file records."""
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class RFFT(Domain):
    """One real FFT of the whole clip: grid = ``T // 2 + 1`` frequency bins."""

    name: ClassVar[str] = "rfft"

    def grid_shape(self, num_samples: int) -> tuple[int, ...]:
        return (int(num_samples) // 2 + 1,)

    def _forward(self, x: jax.Array) -> jax.Array:
        return jnp.fft.rfft(x).astype(jnp.complex64)

    def _inverse(self, values: jax.Array, num_samples: int) -> jax.Array:
        return jnp.fft.irfft(values, n=num_samples).astype(jnp.float32)

    def cell_energy(self, coeffs: Coefficients) -> jax.Array:
        # Parseval for a one-sided spectrum: every bin but DC (and Nyquist for even T) stands for
        # two conjugate bins of the full FFT.
        g = coeffs.values.shape[-1]
        w = np.full(g, 2.0, np.float32)
        w[0] = 1.0
        if coeffs.num_samples % 2 == 0:
            w[-1] = 1.0
        return jnp.abs(coeffs.values) ** 2 * jnp.asarray(w / coeffs.num_samples)


@dataclasses.dataclass(frozen=True)
class STFT(Domain):
    """Frequency x frame tiles of a centred STFT; grid = ``(n_fft // 2 + 1, frames)``.

    The clip is zero-padded by ``n_fft // 2`` on both sides (and at the end up to a whole frame);
    synthesis is windowed overlap-add divided by the summed squared window, cropped back to ``T``.

    Attributes:
        n_fft: frame length (and FFT size).
        hop: frame step; must leave no sample uncovered by the window (checked).
        window: any name ``scipy.signal.get_window`` accepts (periodic form).
    """

    name: ClassVar[str] = "stft"

    n_fft: int = 512
    hop: int = 128
    window: str = "hann"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_fft < 2 or self.hop < 1 or self.hop > self.n_fft:
            raise ValueError(f"STFT needs n_fft >= 2 and 1 <= hop <= n_fft, got n_fft={self.n_fft}, hop={self.hop}")
        _window(self.window, self.n_fft)  # fail early on an unknown window

    def _layout(self, num_samples: int) -> tuple[int, int, int]:
        pad = self.n_fft // 2
        padded = num_samples + 2 * pad
        frames = 1 + max(0, -(-(padded - self.n_fft) // self.hop))
        return pad, frames, (frames - 1) * self.hop + self.n_fft

    def grid_shape(self, num_samples: int) -> tuple[int, ...]:
        return (self.n_fft // 2 + 1, self._layout(int(num_samples))[1])

    def _frames_index(self, frames: int) -> np.ndarray:
        return np.arange(frames)[:, None] * self.hop + np.arange(self.n_fft)[None, :]

    def _forward(self, x: jax.Array) -> jax.Array:
        t = x.shape[0]
        pad, frames, total = self._layout(t)
        self._norm(t)  # refuse a window/hop pair that cannot reconstruct every sample
        xp = jnp.pad(x, (pad, total - t - pad))
        win = jnp.asarray(_window(self.window, self.n_fft))
        seg = xp[self._frames_index(frames)] * win.reshape(1, -1)
        return jnp.fft.rfft(seg, axis=-1).T.astype(jnp.complex64)

    def _norm(self, num_samples: int) -> np.ndarray:
        pad, frames, total = self._layout(num_samples)
        w2 = _window(self.window, self.n_fft) ** 2
        wss = np.zeros(total, np.float64)
        np.add.at(wss, self._frames_index(frames), np.broadcast_to(w2, (frames, self.n_fft)))
        inner = wss[pad : pad + num_samples]
        if inner.min() <= 1e-8:
            raise ValueError(
                f"STFT(n_fft={self.n_fft}, hop={self.hop}, window={self.window!r}) leaves samples "
                "with no window weight; it cannot reconstruct the clip (use a smaller hop)"
            )
        return (1.0 / inner).astype(np.float32)

    def _inverse(self, values: jax.Array, num_samples: int) -> jax.Array:
        pad, frames, total = self._layout(num_samples)
        win = jnp.asarray(_window(self.window, self.n_fft))
        seg = jnp.fft.irfft(values.T, n=self.n_fft, axis=-1).astype(jnp.float32) * win.reshape(1, -1)
        if self.n_fft % self.hop == 0:
            # overlap-add as k shifted dense adds of hop-sized blocks: a scatter-add is slow on
            # CPU, and slower still under vmap (the search synthesises many candidates at once)
            k = self.n_fft // self.hop
            blocks = seg.reshape(frames, k, self.hop)
            out = sum(jnp.pad(blocks[:, j], ((j, k - 1 - j), (0, 0))) for j in range(k)).reshape(-1)
        else:
            out = jnp.zeros(total, jnp.float32).at[self._frames_index(frames)].add(seg)
        return out[pad : pad + num_samples] * jnp.asarray(self._norm(num_samples))

    def cell_energy(self, coeffs: Coefficients) -> jax.Array:
        return jnp.abs(coeffs.values) ** 2


@dataclasses.dataclass(frozen=True)
class Time(Domain):
    """Fixed segments of the waveform: grid = ``ceil(T / segment)`` segments (the last may be
    partial).

    Attributes:
        segment: samples per grid cell (1: every sample is a cell).
    """

    name: ClassVar[str] = "time"

    segment: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segment < 1:
            raise ValueError(f"Time.segment must be >= 1, got {self.segment}")

    def grid_shape(self, num_samples: int) -> tuple[int, ...]:
        return (-(-int(num_samples) // self.segment),)

    def _forward(self, x: jax.Array) -> jax.Array:
        g = self.grid_shape(x.shape[0])[0]
        return jnp.pad(x, (0, g * self.segment - x.shape[0])).reshape(g, self.segment)

    def _inverse(self, values: jax.Array, num_samples: int) -> jax.Array:
        return values.reshape(-1)[:num_samples]

    def cell_energy(self, coeffs: Coefficients) -> jax.Array:
        return jnp.sum(coeffs.values**2, axis=-1)


@functools.lru_cache(maxsize=32)
def _window_cached(name: str, n: int) -> np.ndarray:
    from scipy.signal import get_window

    try:
        w = np.asarray(get_window(name, n, fftbins=True), np.float32)
    except (ValueError, TypeError) as e:
        raise ValueError(f"unknown STFT window {name!r}: {e}") from None
    w.setflags(write=False)
    return w


def _window(name: str, n: int) -> np.ndarray:
    return _window_cached(name, int(n))


DOMAINS: dict[str, type[Domain]] = {"rfft": RFFT, "stft": STFT, "time": Time}


def get_domain(name: str, **kwargs: Any) -> Domain:
    """A domain by name (``"rfft"``, ``"stft"``, ``"time"``) with its options, for configs and the CLI.

    Example:
        >>> get_domain("stft", n_fft=256, hop=64)
        STFT(fill='zero', noise_level=0.1, noise_seed=0, n_fft=256, hop=64, window='hann')
    """
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")
    cls = DOMAINS[name]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise ValueError(f"domain {name!r} has no option(s) {unknown}; it takes {sorted(names)}")
    return cls(**kwargs)


def as_domain(domain: Domain | str) -> Domain:
    """``domain`` itself, or the domain of that name with its default settings: what the public
    functions accept wherever a domain goes (``domain="stft"`` is ``STFT()``).

    Example:
        >>> as_domain("time")
        Time(fill='zero', noise_level=0.1, noise_seed=0, segment=1)
        >>> as_domain(STFT)
        Traceback (most recent call last):
        ...
        TypeError: domain=STFT is the class; pass an instance, STFT(...), or its name 'stft'
    """
    if isinstance(domain, Domain):
        return domain
    if isinstance(domain, str):
        return get_domain(domain)
    if isinstance(domain, type) and issubclass(domain, Domain):
        raise TypeError(f"domain={domain.__name__} is the class; pass an instance, {domain.__name__}(...), "
                        f"or its name {domain.name!r}")
    raise TypeError(f"domain must be a Domain (RFFT(), STFT(...), Time(...)) or one of the names "
                    f"{', '.join(map(repr, DOMAINS))}; got {type(domain).__name__} {domain!r:.60}")
