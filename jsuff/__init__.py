"""jsuff: minimal sufficient signals for audio classifiers, and whether models agree on them."""

from jsuff.models import InputPolicy, Model, ModelError, load_model

__version__ = "0.1.0"

__all__ = ["InputPolicy", "Model", "ModelError", "load_model"]
