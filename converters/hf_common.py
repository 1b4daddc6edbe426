"""Reading Hugging Face model folders (what ``save_pretrained`` writes), shared by the HF families.

A Hugging Face model folder holds ``config.json``, the weights (``model.safetensors``, sharded
``model-0000x-of-0000n.safetensors`` with ``model.safetensors.index.json``, or the older
``pytorch_model.bin`` / its sharded index) and, for audio models, ``preprocessor_config.json``.
:func:`read_hf_folder` reads all of it into plain dicts and NumPy arrays; safetensors need no torch,
``.bin`` files are read with ``torch.load(weights_only=True)``.

A ``config.json`` written by ``save_pretrained`` omits nothing, but hand-written or older ones
often leave out keys whose value is the config class's default; :func:`apply_defaults` fills those
from a family's own defaults table (so jsuff never has to import transformers).

Example:
    >>> apply_defaults({"hidden_size": 32}, {"hidden_size": 768, "layer_norm_eps": 1e-5})
    {'hidden_size': 32, 'layer_norm_eps': 1e-05}
    >>> id2label_labels({"id2label": {"1": "yes", "0": "no"}})
    ['no', 'yes']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converters.common import ConversionError, read_json, read_state_dict

__all__ = [
    "CONFIG_FILE",
    "PREPROCESSOR_FILE",
    "HFCheckpoint",
    "apply_defaults",
    "detect_model_type",
    "id2label_labels",
    "read_hf_folder",
]

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

# Weight files in order of preference: (single file, sharded index). safetensors first because it
# is read without torch and cannot execute code.
_WEIGHT_FILES = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)

# transformers' PreTrainedConfig gives a classifier two labels when the config names none.
_DEFAULT_NUM_LABELS = 2


@dataclasses.dataclass(frozen=True)
class HFCheckpoint:
    """Everything read from a Hugging Face model folder.

    Attributes:
        config: ``config.json`` as a dict (defaults not applied; see :func:`apply_defaults`).
        state_dict: torch key -> float32 (or integer) NumPy array, all shards merged.
        preprocessor: ``preprocessor_config.json`` as a dict, ``{}`` when the folder has none.
        files: the files read, for the converted model's source checksums.
    """

    config: dict[str, Any]
    state_dict: dict[str, np.ndarray]
    preprocessor: dict[str, Any]
    files: list[Path]


def read_hf_folder(folder: str | Path, config_file: str | Path | None = None) -> HFCheckpoint:
    """Read ``config.json``, the weights and ``preprocessor_config.json`` of a HF model folder.

    Args:
        folder: a directory written by ``save_pretrained`` (or downloaded from the Hub).
        config_file: a config JSON to use instead of ``folder/config.json`` (``--config``).

    Returns:
        An :class:`HFCheckpoint`.

    Raises:
        ConversionError: not a folder, no ``config.json``, no weights, an unreadable or corrupt
            file, or a shard index that names a missing shard; the message names the file.

    Example:
        >>> ckpt = read_hf_folder("checkpoints/distilhubert-gtzan")  # needs a downloaded checkpoint  # doctest: +SKIP
        >>> ckpt.config["model_type"], len(ckpt.state_dict)  # needs a downloaded checkpoint  # doctest: +SKIP
        ('hubert', 76)
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConversionError(f"{root} is not a Hugging Face model folder (not a directory)")
    config_path = Path(config_file) if config_file is not None else root / CONFIG_FILE
    config = read_json(config_path, "Hugging Face config")
    if not isinstance(config, dict):
        raise ConversionError(f"{config_path} does not hold a JSON object")
    files = [config_path]
    state_dict, weight_files = _read_weights(root)
    files += weight_files
    preprocessor: dict[str, Any] = {}
    pre_path = root / PREPROCESSOR_FILE
    if pre_path.is_file():
        preprocessor = read_json(pre_path, "preprocessor config")
        if not isinstance(preprocessor, dict):
            raise ConversionError(f"{pre_path} does not hold a JSON object")
        files.append(pre_path)
    return HFCheckpoint(config, state_dict, preprocessor, files)


def _read_weights(root: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    for single, index in _WEIGHT_FILES:
        if (root / single).is_file():
            return read_state_dict(root / single), [root / single]
        if (root / index).is_file():
            return _read_sharded(root, root / index)
    names = ", ".join(name for pair in _WEIGHT_FILES for name in pair)
    raise ConversionError(f"no weights in {root}: looked for {names}")


def _read_sharded(root: Path, index_path: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    index = read_json(index_path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{index_path} has no 'weight_map'")
    shards = sorted(set(weight_map.values()))
    absent = [s for s in shards if not (root / s).is_file()]
    if absent:
        raise ConversionError(f"{index_path} names shards that are not in {root}: {', '.join(absent)}")
    sd: dict[str, np.ndarray] = {}
    for shard in shards:
        part = read_state_dict(root / shard)
        clash = sorted(set(sd) & set(part))
        if clash:
            raise ConversionError(f"shard {shard} repeats tensors: {', '.join(clash)}")
        sd.update(part)
    return sd, [index_path] + [root / s for s in shards]


def detect_model_type(folder: str | Path) -> str | None:
    """The ``model_type`` in ``folder/config.json``, or ``None`` when it is not a HF folder.

    Never raises: converters call it to ask "is this mine?" about any path.

    Example:
        >>> detect_model_type("/nonexistent") is None
        True
    """
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None


def id2label_labels(config: Mapping[str, Any]) -> list[str]:
    """Label names ordered by class id, from ``config["id2label"]``.

    Without ``id2label`` the names are transformers' defaults, ``LABEL_0`` ... ``LABEL_{n-1}``,
    with ``n = config["num_labels"]`` (2 when that is absent too, as in transformers).

    Raises:
        ConversionError: ids that are not the integers ``0 .. n-1``.

    Example:
        >>> id2label_labels({"num_labels": 3})
        ['LABEL_0', 'LABEL_1', 'LABEL_2']
    """
    id2label = config.get("id2label")
    if not id2label:
        n = int(config.get("num_labels", _DEFAULT_NUM_LABELS))
        return [f"LABEL_{i}" for i in range(n)]
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError, AttributeError):
        raise ConversionError(f"config id2label has non-integer ids: {id2label!r}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"config id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def apply_defaults(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by every key ``config`` sets (a new dict; inputs are not changed).

    Tuples in ``defaults`` become lists so the result is what ``json.loads`` would give.

    Example:
        >>> apply_defaults({}, {"conv_dim": (8, 8)})
        {'conv_dim': [8, 8]}
    """
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    out.update(config)
    return out
