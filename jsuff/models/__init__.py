"""Model contract and the ported families (one file per family; each registers itself)."""

import importlib as _importlib
import pkgutil as _pkgutil

from jsuff.models.base import (
    Architecture,
    InputPolicy,
    Model,
    ModelError,
    UnknownArchitectureError,
    architectures,
    build_model,
    fit_length,
    get_architecture,
    load_model,
    register,
    save_model,
)

__all__ = [
    "Architecture",
    "InputPolicy",
    "Model",
    "ModelError",
    "UnknownArchitectureError",
    "architectures",
    "build_model",
    "fit_length",
    "get_architecture",
    "load_model",
    "register",
    "save_model",
]

# Every family module registers its architectures when imported.
for _info in _pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_info.name}")
