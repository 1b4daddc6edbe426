"""Fixtures the tests share (JAX is made strict by the checkout's conftest.py, one folder up)."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"


@pytest.fixture
def golden_dir() -> Path:
    """../shared/golden, or a clean skip when this checkout has no shared folder beside it."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference data not found at {GOLDEN} (../shared is absent)")
    return GOLDEN
