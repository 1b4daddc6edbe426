"""pytest's configuration for the whole checkout: the tests and the docstring examples of jsuff and
converters (``--doctest-modules``, see pyproject.toml) run under the same strict JAX."""

import os

# Several tests compare sharded and single-device results; give the CPU 4 host devices unless the
# caller already chose. Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
