"""Test configuration: JAX kept strict, shared fixtures."""

import os
from pathlib import Path

# Several tests compare sharded and single-device results; give the CPU 4 host devices unless the
# caller already chose. Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"


@pytest.fixture
def golden_dir() -> Path:
    """../shared/golden, or a clean skip when this checkout has no shared folder beside it."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference data not found at {GOLDEN} (../shared is absent)")
    return GOLDEN
