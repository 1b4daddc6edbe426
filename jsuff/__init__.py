"""jsuff: minimal sufficient signals for audio classifiers, and whether models agree on them."""

from jsuff.audio import AudioError, load_audio, resample, validate_waveform, write_wav
from jsuff.domains import RFFT, STFT, Coefficients, Domain, Time, get_domain
from jsuff.explain import Explanation, explain, explain_many
from jsuff.extract import ExtractConfig, Extraction, Problem
from jsuff.models import InputPolicy, Model, ModelError, load_model
from jsuff.search import SearchConfig, SearchResult, responsibility_loop, responsibility_maps

# Transferability and information statistics (jsuff.transfer, jsuff.info).
from jsuff import info, transfer
from jsuff.info import (
    classification_metrics,
    mutual_information,
    normalized_mutual_information,
    pairwise_information,
)
from jsuff.transfer import LabelArrayError, TransferResult, flat_earthers, transfer_analysis

# What an explanation will cost, said before it runs (issue 16).
from jsuff.cost import Cost, CostWarning, estimate_cost

__version__ = "0.1.0"

__all__ = [
    "RFFT",
    "STFT",
    "AudioError",
    "Coefficients",
    "Domain",
    "Explanation",
    "ExtractConfig",
    "Extraction",
    "InputPolicy",
    "Model",
    "ModelError",
    "Problem",
    "SearchConfig",
    "SearchResult",
    "Time",
    "explain",
    "explain_many",
    "get_domain",
    "load_audio",
    "load_model",
    "resample",
    "responsibility_loop",
    "responsibility_maps",
    "validate_waveform",
    "write_wav",
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
    # what an explanation will cost (issue 16)
    "Cost",
    "CostWarning",
    "estimate_cost",
]
