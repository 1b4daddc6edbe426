"""Which software produced a result: recorded in a study's ``summary.json``, printed by
``jsuff --version`` and shown on the report.

Example:
    >>> sorted(software_versions())
    ['flax', 'jax', 'jaxlib', 'jsuff', 'numpy', 'python']
"""

from __future__ import annotations

import importlib.metadata
import platform

__all__ = ["software_versions", "versions_line"]

_PACKAGES = ("jax", "jaxlib", "flax", "numpy")


def software_versions() -> dict[str, str]:
    """``{name: version}`` of jsuff, JAX, jaxlib, Flax, NumPy and Python (no package is imported)."""
    import jsuff

    out = {"jsuff": jsuff.__version__}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def versions_line(versions: dict[str, str] | None = None) -> str:
    """``"jsuff 0.1.0 (jax 0.10.0, jaxlib 0.10.0, flax 0.12.0, numpy 2.3.1, python 3.11.2)"``."""
    v = dict(versions if versions is not None else software_versions())
    head = f"jsuff {v.pop('jsuff', '?')}"
    return f"{head} ({', '.join(f'{k} {x}' for k, x in v.items())})" if v else head
