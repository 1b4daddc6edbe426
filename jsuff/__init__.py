"""jsuff: minimal sufficient signals for audio classifiers, and whether models agree on them.

The names a researcher needs are here; everything else is in its module (``jsuff.domains``,
``jsuff.search``, ``jsuff.extract``, ``jsuff.evaluate``, ``jsuff.transfer``, ``jsuff.info``,
``jsuff.models``, ``jsuff.audio``, ``jsuff.app`` ...). ``import jsuff`` loads JAX and the explanation
path (audio, domains, search, extraction); the statistics (and pandas), the models (and Flax, each
family when it is first needed) and the submodules load on first use (PEP 562).

Example:
    >>> import jsuff
    >>> jsuff.explain                  # the function (its module is jsuff.explain too)
    <function explain at ...>
    >>> jsuff.RFFT().grid_shape(16000)
    (8001,)
    >>> jsuff.transfer.flat_earthers is jsuff.flat_earthers   # a module and a name, loaded on first use
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# `explain` is also the name of its module: importing the module binds `jsuff.explain` to it, so the
# function is bound here, eagerly, after that import (the explanation path is light: JAX, no pandas).
from jsuff.audio import load_audio
from jsuff.cost import CostWarning, estimate_cost
from jsuff.domains import RFFT, STFT, Time
from jsuff.explain import Explanation, explain, explain_many
from jsuff.extract import ExtractConfig
from jsuff.search import SearchConfig, responsibility_maps

if TYPE_CHECKING:
    from jsuff.info import classification_metrics, pairwise_information
    from jsuff.models.base import Model, load_model
    from jsuff.transfer import flat_earthers, transfer_analysis

__version__ = "0.1.0"

__all__ = [
    "RFFT",
    "STFT",
    "CostWarning",
    "Explanation",
    "ExtractConfig",
    "Model",
    "SearchConfig",
    "Time",
    "classification_metrics",
    "estimate_cost",
    "explain",
    "explain_many",
    "flat_earthers",
    "load_audio",
    "load_model",
    "pairwise_information",
    "responsibility_maps",
    "transfer_analysis",
]

# The public names whose modules are imported on first use, and where they live.
_LAZY = {
    "Model": "jsuff.models.base",
    "load_model": "jsuff.models.base",
    "transfer_analysis": "jsuff.transfer",
    "flat_earthers": "jsuff.transfer",
    "pairwise_information": "jsuff.info",
    "classification_metrics": "jsuff.info",
}
_SUBMODULES = ("app", "audio", "cost", "domains", "evaluate", "extract", "info", "intervals", "labels", "models",
               "progress", "search", "transfer")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
