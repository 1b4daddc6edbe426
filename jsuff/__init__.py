"""jsuff: minimal sufficient signals for audio classifiers, and whether models agree on them."""

from jsuff.models import InputPolicy, Model, ModelError, load_model

# Transferability and information statistics (jsuff.transfer, jsuff.info).
from jsuff import info, transfer
from jsuff.info import (
    classification_metrics,
    mutual_information,
    normalized_mutual_information,
    pairwise_information,
)
from jsuff.transfer import LabelArrayError, TransferResult, flat_earthers, transfer_analysis

__version__ = "0.1.0"

__all__ = ["InputPolicy", "Model", "ModelError", "load_model"]
__all__ += [
    "LabelArrayError",
    "TransferResult",
    "classification_metrics",
    "flat_earthers",
    "info",
    "mutual_information",
    "normalized_mutual_information",
    "pairwise_information",
    "transfer",
    "transfer_analysis",
]
