"""Toy JAX classifiers with planted answers, shared by the engine tests.

Every rfft toy is the same function ``band_mlp`` (a 2-layer MLP over band sums of the magnitude
spectrum) with different parameters, so the tests share one compilation per parameter shape.
Clips are 512 samples: 257 rfft bins; a cosine at integer bin b puts all its energy in bin b.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jsuff.domains import STFT
from jsuff.search import SearchConfig

T = 512
BINS = T // 2 + 1


def tone(bin_: float, amp: float = 1.0, start: int = 0, stop: int = T) -> np.ndarray:
    x = np.zeros(T, np.float32)
    n = np.arange(start, stop)
    x[start:stop] = amp * np.cos(2 * np.pi * bin_ * n / T)
    return x


def noise(seed: int, level: float = 0.01) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(T)).astype(np.float32)


def band_mlp(params: dict, x: jax.Array) -> jax.Array:
    """logits = relu(|rfft(x)| @ bands + b1) @ w + b: weighted band sums, one relu, a linear head."""
    mag = jnp.abs(jnp.fft.rfft(x))
    return jax.nn.relu(mag @ params["bands"] + params["b1"][None]) @ params["w"] + params["b"][None]


def _params(columns: list[dict[tuple[int, int], float]], w: np.ndarray, b: np.ndarray) -> dict:
    bands = np.zeros((BINS, 4), np.float32)
    for k, spans in enumerate(columns):
        for (lo, hi), sign in spans.items():
            bands[lo:hi, k] = sign
    arrays = dict(bands=bands, b1=np.zeros(4), w=w, b=b)
    return {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in arrays.items()}


# Four classes: the label is the quarter of the spectrum with the most magnitude.
LOUDEST = _params([{(0, 64): 1}, {(64, 128): 1}, {(128, 192): 1}, {(192, BINS): 1}], np.eye(4), np.zeros(4))

# Four classes; class 1 needs two bands at once: logit1 = min(A, B) - 100 with A = E[32:48],
# B = E[200:216] and min(A, B) = relu(A) - relu(A - B); class 0 has logit 0, 2 and 3 never win.
BOTH = _params(
    [{(32, 48): 1}, {(32, 48): 1, (200, 216): -1}, {}, {}],
    np.array([[0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    np.array([0, -100, -1000, -1000]),
)

# One logit (binary): class 1 iff the narrow band 100..103 carries magnitude > 50.
NARROW = _params([{(100, 104): 1}, {}, {}, {}], np.array([[1.0], [0.0], [0.0], [0.0]]), np.array([-50.0]))

# 2-D: class 1 iff the STFT magnitude in frequency bins 10..14 x frames 8..16 exceeds a threshold.
GRID_STFT = STFT(n_fft=64, hop=16)
REGION = np.zeros(GRID_STFT.grid_shape(T), np.float32)
REGION[10:15, 8:17] = 1.0


def region_model(params: jax.Array, x: jax.Array) -> jax.Array:
    mag = jnp.abs(jax.vmap(GRID_STFT.analyze)(x).values)
    e = jnp.sum(mag * params[None], axis=(1, 2))
    return jnp.stack([jnp.full_like(e, 60.0), e], axis=-1)


# Time: class 1 iff the energy of samples 200..264 exceeds 4.
def window_model(params: None, x: jax.Array) -> jax.Array:
    e = jnp.sum(x[:, 200:264] ** 2, axis=-1)
    return jnp.stack([jnp.full_like(e, 4.0), e], axis=-1)


# One search setting for the whole suite, so compiled stages are shared between test files.
CFG = SearchConfig(iters=6)
KEY = jax.random.key(7)


def loudest_clip() -> np.ndarray:
    """Band 2 wins (tone at bin 150), band 1 second (tone at bin 90), a little noise."""
    return tone(150) + 0.5 * tone(90) + noise(0)


def both_clip() -> np.ndarray:
    """Both bands of BOTH present (tones at bins 40 and 208)."""
    return tone(40) + tone(208) + noise(1)


def region_clip() -> np.ndarray:
    """A burst at STFT bin 12 (rfft bin 96) in samples 128..256, inside REGION, plus a steady
    tone outside it."""
    return tone(96, 1.0, 128, 256) + 0.5 * tone(200) + noise(3)


def window_clip() -> np.ndarray:
    """A burst in samples 200..264 (time segments 25..32 of 8 samples)."""
    x = noise(4)
    x[200:264] += np.sin(np.arange(64, dtype=np.float32) / 3)
    return x


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")


@contextlib.contextmanager
def compilations() -> Iterator[list[str]]:
    """Every trace and XLA compilation inside the block, as JAX itself reports them (its
    monitoring events): a list of event names, empty when nothing was traced or compiled."""
    seen: list[str] = []

    def listen(event: str, duration: float, **kwargs: object) -> None:
        if event in _COMPILE_EVENTS:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
