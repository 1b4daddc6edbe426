"""The family-independent part of the AST and Whisper converters.

:class:`HFClassifier` checks the model type, class and feature extractor, applies the config
class's defaults, maps keys and writes the model; folder reading is :mod:`converters.hf_common`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from converters import Converter, register_converter
from converters.common import ConversionError, Rule, finish, map_state_dict, read_json
from converters.hf_common import PREPROCESSOR_FILE, apply_defaults, detect_model_type, id2label_labels, read_hf_folder
from jsuff.models.base import Model, ModelError, expected_shapes


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
            ``to_json()`` and ``input_policy()``); raises :class:`ConversionError` on disagreements
            between the two files, and the family config's :class:`ModelError` on bad settings
            (:meth:`convert` reports that as a :class:`ConversionError` naming the folder).
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
        try:
            family = self.jsuff_config(hf, pre, len(labels), src)
        except ModelError as e:
            raise ConversionError(f"{src}: {e}") from None
        cfg = family.to_json()
        params = map_state_dict(ckpt.state_dict, self.rules, expected_shapes(self.arch, cfg), source=str(src))
        return finish(
            arch=self.arch,
            config=cfg,
            params=params,
            labels=labels,
            sample_rate=cfg["sample_rate"],
            input=family.input_policy(),
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

    def register(self, description: str) -> Converter:
        """Register this family's converter under its ``arch`` name (called at module import)."""
        return register_converter(Converter(self.arch, self.convert, self.detect, description))

