"""Test helpers for the model families: random parameters without per-op compiles, masked rfft
candidates of one clip, and the batch-consistency check every family runs on them.

The check compares ``jax.vmap`` over the candidates (how the search evaluates a batch of masks)
with per-candidate calls, both jitted. Plain batched calls are covered by each family's parity
tests; eager (un-jitted) runs of whole models are left to the layer tests, because JAX compiles
every primitive of an eager call separately, which costs a minute for AASIST on a 2-core machine.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jsuff.models.base import InputPolicy, Model, build_model, expected_shapes


def random_model(
    arch: str, config: dict, *, labels: Sequence[str], input: InputPolicy = InputPolicy(), seed: int = 0
) -> Model:
    """A model of ``arch`` with NumPy-random parameters and plausible batch-norm statistics.

    Random initialisation through the modules' own initialisers compiles one PRNG program per
    parameter shape, which takes tens of seconds for AASIST on 2 cores; this fills the abstract
    shapes directly instead.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for key, shape in expected_shapes(arch, config).items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf in ("var", "scale"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("mean", "bias"):
            value = 0.1 * rng.standard_normal(shape)
        else:  # kernels (fan-in scaled), attention vectors, positional tables, master nodes
            fan_in = int(np.prod(shape[:-1])) if leaf == "kernel" else 4
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        params[key] = value.astype(np.float32)
    return build_model(arch, config, params, sample_rate=16000, labels=labels, input=input)


def masked_candidates(x: np.ndarray, n: int, *, keep: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n`` versions of the clip ``x[T]`` with random rfft bins zeroed (what the search builds)."""
    rng = np.random.default_rng(seed)
    z = np.fft.rfft(np.asarray(x, np.float64))
    masks = rng.random((n, z.size)) < keep
    masks[0] = True  # the full clip is one of the candidates
    return np.fft.irfft(z[None, :] * masks, n=x.shape[-1]).astype(np.float32)


def check_batch_consistency(apply: Callable, params, batch: np.ndarray, *, atol: float = 1e-5) -> np.ndarray:
    """Assert that vmapping ``apply`` over a batch of candidates equals calling it on each alone.

    Returns the vmapped outputs, ``[n, C]``.
    """
    x = jnp.asarray(batch)
    vmapped = np.asarray(jax.jit(jax.vmap(lambda xi: apply(params, xi[None])[0]))(x))
    single = jax.jit(apply)
    per = np.concatenate([np.asarray(single(params, x[i : i + 1])) for i in range(x.shape[0])])
    np.testing.assert_allclose(vmapped, per, atol=atol, rtol=0)
    assert np.isfinite(vmapped).all()
    return vmapped
