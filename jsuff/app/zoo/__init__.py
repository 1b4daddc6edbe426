"""The built-in zoo: a generated music-like dataset, its training entry point and trained models."""

from jsuff.app.zoo.data import (
    CLASS_NAMES,
    SPLITS,
    Dataset,
    DatasetError,
    make_clip,
    make_dataset,
    read_dataset,
    write_dataset,
)
from jsuff.app.zoo.registry import (
    ZOO,
    ZOO_DIR,
    ZooError,
    ZooMember,
    get_member,
    load_zoo,
    read_zoo_json,
    train_zoo,
    zoo_accuracy,
    zoo_dataset,
)
from jsuff.app.zoo.train import NO_AUGMENT, Augment, augment_batch, train_model

__all__ = [
    "CLASS_NAMES",
    "NO_AUGMENT",
    "SPLITS",
    "ZOO",
    "ZOO_DIR",
    "Augment",
    "Dataset",
    "DatasetError",
    "ZooError",
    "ZooMember",
    "augment_batch",
    "get_member",
    "load_zoo",
    "make_clip",
    "make_dataset",
    "read_dataset",
    "read_zoo_json",
    "train_model",
    "train_zoo",
    "write_dataset",
    "zoo_accuracy",
    "zoo_dataset",
]
