"""Test helpers: masked rfft candidates of one clip, and the batch-consistency check every model
family runs on them (batched == per-candidate == vmapped, all jitted).

Eager (un-jitted) runs of whole models are left to the layer tests: JAX compiles every primitive
of an eager call separately, which costs a minute for AASIST on a 2-core machine."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def masked_candidates(x: np.ndarray, n: int, *, keep: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n`` versions of the clip ``x[T]`` with random rfft bins zeroed (what the search builds)."""
    rng = np.random.default_rng(seed)
    z = np.fft.rfft(np.asarray(x, np.float64))
    masks = rng.random((n, z.size)) < keep
    masks[0] = True  # the full clip is one of the candidates
    return np.fft.irfft(z[None, :] * masks, n=x.shape[-1]).astype(np.float32)


def check_batch_consistency(
    apply: Callable, params, batch: np.ndarray, *, atol: float = 1e-5
) -> np.ndarray:
    """Assert that a batch of candidates gives the same outputs however it is evaluated.

    Compares one jitted batched call with per-candidate jitted calls (batch of one) and with
    ``jax.vmap`` over single candidates. Returns the batched outputs.
    """
    x = jnp.asarray(batch)
    batched = np.asarray(jax.jit(apply)(params, x))
    single = jax.jit(apply)
    per = np.concatenate([np.asarray(single(params, x[i : i + 1])) for i in range(x.shape[0])])
    vmapped = np.asarray(jax.jit(jax.vmap(lambda xi: apply(params, xi[None])[0]))(x))
    np.testing.assert_allclose(per, batched, atol=atol, rtol=0)
    np.testing.assert_allclose(vmapped, batched, atol=atol, rtol=0)
    assert np.isfinite(batched).all()
    return batched
