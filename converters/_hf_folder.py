"""Hugging Face model folders for the AST and Whisper converters.

TODO(merge): use converters.hf_common. :func:`read_hf_folder` is the only function here that
reads a folder; :func:`detect_model_type`, :func:`id2label_labels` and :func:`apply_defaults`
are named after their ``hf_common`` counterparts so that swapping is an import change.
:class:`HFClassifier` is the family-independent part both converters share (checking the
model type, class and feature extractor, applying defaults, mapping keys, writing) and stays.

Example:
    >>> apply_defaults({"a": 1}, {"a": 0, "b": 2})
    {'a': 1, 'b': 2}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.common import ConversionError, finish, map_state_dict, read_json, read_state_dict
from jsuff.models.base import Model, expected_shapes

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
Rule = tuple[str, str, str]
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # safetensors first: no torch, no pickle


@dataclasses.dataclass(frozen=True)
class HFCheckpoint:
    """What a Hugging Face model folder holds.

    Attributes:
        config: ``config.json`` as written (defaults not applied).
        state_dict: torch key -> NumPy array.
        preprocessor: ``preprocessor_config.json``, ``{}`` when absent.
        files: the files read (their checksums go into the converted model's ``source``).
    """

    config: dict[str, Any]
    state_dict: dict[str, np.ndarray]
    preprocessor: dict[str, Any]
    files: list[Path]


def read_hf_folder(folder: str | Path) -> HFCheckpoint:
    """Read ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``) and the preprocessor config.

    Raises:
        ConversionError: not a directory, no config or weights, or a file that cannot be parsed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConversionError(f"{root} is not a Hugging Face model folder (not a directory)")
    config = read_json(root / CONFIG_FILE, "Hugging Face config")
    weights = next((root / w for w in _WEIGHTS if (root / w).is_file()), None)
    if weights is None:
        raise ConversionError(f"no weights in {root}: looked for {', '.join(_WEIGHTS)}")
    files = [root / CONFIG_FILE, weights]
    preprocessor: dict[str, Any] = {}
    if (root / PREPROCESSOR_FILE).is_file():
        preprocessor = read_json(root / PREPROCESSOR_FILE, "preprocessor config")
        files.append(root / PREPROCESSOR_FILE)
    for name, obj in ((CONFIG_FILE, config), (PREPROCESSOR_FILE, preprocessor)):
        if not isinstance(obj, dict):
            raise ConversionError(f"{root / name} does not hold a JSON object")
    return HFCheckpoint(config, read_state_dict(weights), preprocessor, files)


def detect_model_type(folder: str | Path) -> str | None:
    """``model_type`` from ``folder/config.json``, ``None`` for anything else (never raises)."""
    try:
        config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def id2label_labels(config: Mapping[str, Any]) -> list[str]:
    """Labels by class id from ``id2label``; ``LABEL_i`` for ``num_labels`` (default 2) without it.

    Example:
        >>> id2label_labels({"id2label": {"1": "b", "0": "a"}})
        ['a', 'b']
    """
    id2label = config.get("id2label")
    if not id2label:
        return [f"LABEL_{i}" for i in range(int(config.get("num_labels", 2)))]
    try:
        by_id = {int(k): str(v) for k, v in dict(id2label).items()}
    except (TypeError, ValueError):
        raise ConversionError(f"config id2label has non-integer ids: {id2label!r}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"config id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def apply_defaults(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by what ``config`` sets (the config class's defaults applied)."""
    return {**defaults, **config}


@dataclasses.dataclass(frozen=True)
class HFClassifier:
    """How one family's Hugging Face classifier folders convert (the family files fill this in).

    Attributes:
        arch: the jsuff architecture produced.
        model_type: the ``config.json`` ``model_type`` accepted.
        classes: the model classes (``architectures`` entries) accepted.
        extractor: the ``feature_extractor_type`` the jsuff front end reproduces.
        config_defaults, extractor_defaults: the transformers classes' defaults for keys the
            JSON files leave out.
        rules: the key map (see :func:`converters.common.map_state_dict`).
        jsuff_config: ``(config, preprocessor, num_labels, src) -> family config`` (an object with
            ``to_dict()`` and ``input_policy``); raises :class:`ConversionError` on disagreements.
    """

    arch: str
    model_type: str
    classes: tuple[str, ...]
    extractor: str
    config_defaults: Mapping[str, Any]
    extractor_defaults: Mapping[str, Any]
    rules: Sequence[Rule]
    jsuff_config: Callable[[dict[str, Any], dict[str, Any], int, Path], Any]

    def convert(
        self, src: str | Path, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False
    ) -> Model:
        """Convert a folder; nothing is written at ``dest`` unless it all succeeds.

        Args:
            src: the Hugging Face model folder.
            dest: the jsuff model directory to write, or ``None`` to only build the model.
            config: a ``config.json`` to use instead of the folder's.
            overwrite: replace an existing ``dest``.

        Raises:
            ConversionError: naming the folder and what is wrong: another model type or class,
                no ``preprocessor_config.json`` or another extractor, settings that disagree, or
                tensors that do not match (every missing, unexpected and mis-shaped key at once).
        """
        src = Path(src)
        ckpt = read_hf_folder(src)
        hf = ckpt.config
        if config is not None:
            hf = read_json(config, "config")
            if not isinstance(hf, dict):
                raise ConversionError(f"{config} does not hold a JSON object")
        self._check(src, hf, ckpt.preprocessor)
        hf = apply_defaults(hf, self.config_defaults)
        labels = id2label_labels(hf)
        pre = apply_defaults(ckpt.preprocessor, self.extractor_defaults)
        family = self.jsuff_config(hf, pre, len(labels), src)
        cfg = family.to_dict()
        params = map_state_dict(ckpt.state_dict, self.rules, expected_shapes(self.arch, cfg), source=str(src))
        return finish(
            arch=self.arch,
            config=cfg,
            params=params,
            labels=labels,
            sample_rate=cfg["sample_rate"],
            input=family.input_policy,
            source_files=ckpt.files,
            dest=dest,
            overwrite=overwrite,
            extra_source={"format": "huggingface", "class": self.classes[0], "model_type": self.model_type},
        )

    def _check(self, src: Path, config: Mapping[str, Any], preprocessor: Mapping[str, Any]) -> None:
        found = config.get("model_type")
        if found != self.model_type:
            raise ConversionError(f"{src}: config model_type is {found!r}, expected {self.model_type!r}")
        archs = config.get("architectures") or []
        if archs and not set(archs) & set(self.classes):
            raise ConversionError(
                f"{src}: unsupported model class {', '.join(map(str, archs))}; "
                f"the {self.arch} converter takes {', '.join(self.classes)}"
            )
        if not preprocessor:
            raise ConversionError(f"{src}: no {PREPROCESSOR_FILE} (the front end's settings are needed)")
        kind = preprocessor.get("feature_extractor_type", self.extractor)
        if kind != self.extractor:
            raise ConversionError(f"{src}: feature extractor is {kind!r}, expected {self.extractor!r}")

    def detect(self, src: Path) -> bool:
        """Whether ``src`` is a folder whose ``config.json`` has this ``model_type``."""
        return detect_model_type(src) == self.model_type


def dense_rules(torch: str, flax: str, transform: str = "linear") -> list[Rule]:
    """Key-map rows for a torch module with ``weight`` and ``bias`` -> flax ``kernel`` and ``bias``."""
    return [(f"{torch}.weight", f"{flax}/kernel", transform), (f"{torch}.bias", f"{flax}/bias", "identity")]


def norm_rules(torch: str, flax: str) -> list[Rule]:
    """Key-map rows for a torch LayerNorm -> flax ``scale`` and ``bias``."""
    return [(f"{torch}.weight", f"{flax}/scale", "identity"), (f"{torch}.bias", f"{flax}/bias", "identity")]
