"""The built-in zoo: a generated music-like dataset, its training entry point and trained models."""

from jsuff.zoo.data import (
    CLASS_NAMES,
    SPLITS,
    Dataset,
    DatasetError,
    make_clip,
    make_dataset,
    read_dataset,
    write_dataset,
)

__all__ = [
    "CLASS_NAMES",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "make_clip",
    "make_dataset",
    "read_dataset",
    "write_dataset",
]
