"""Model contract and the ported families (one file per family; each registers itself when
:func:`get_architecture` first needs it, see :data:`ARCHITECTURE_MODULES`)."""

from jsuff.models.base import (
    ARCHITECTURE_MODULES,
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
    "ARCHITECTURE_MODULES",
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
