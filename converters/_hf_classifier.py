"""The one conversion path of every Hugging Face family (wav2vec2, HuBERT, AST, Whisper ...).

A family module describes its classifier folders with an :class:`HFClassifier` (model type,
accepted classes, feature extractor, the transformers classes' defaults, the key map and a function
from the folder to the family's config) and registers it; :meth:`HFClassifier.convert` does the
rest the same way for all of them: read the folder (:mod:`converters.hf_common`), check its model
type, class and feature extractor, apply the defaults, build the family config, map and check every
tensor, write the model directory.

Example:
    >>> from converters import supported
    >>> sorted(n for n in ("ast", "hubert", "wav2vec2", "whisper") if n in supported())
    ['ast', 'hubert', 'wav2vec2', 'whisper']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters import Converter, register_converter
from converters.common import ConversionError, Rule, finish, fold_weight_norms, map_state_dict
from converters.hf_common import PREPROCESSOR_FILE, apply_defaults, detect_model_type, id2label_labels, read_hf_folder
from jsuff.models.base import Model, ModelError, expected_shapes

__all__ = ["HFClassifier", "HFFolder"]


@dataclasses.dataclass(frozen=True)
class HFFolder:
    """A Hugging Face classifier folder as a family's hooks see it.

    Attributes:
        src: the folder.
        config: ``config.json`` (or ``--config``) with the config class's defaults applied.
        preprocessor: ``preprocessor_config.json`` with the feature extractor's defaults applied.
        labels: the class names from ``id2label``, in id order.
        state_dict: torch key -> array, weight norms folded where the family asks for it.
    """

    src: Path
    config: dict[str, Any]
    preprocessor: dict[str, Any]
    labels: list[str]
    state_dict: Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class HFClassifier:
    """How one family's Hugging Face classifier folders convert (the family files fill this in).

    Attributes:
        arch: the jsuff architecture produced (also the converter's ``--arch`` name).
        model_type: the ``config.json`` ``model_type`` accepted.
        classes: the model classes (``architectures`` entries) accepted.
        extractor: the ``feature_extractor_type`` the jsuff front end reproduces.
        config_defaults, extractor_defaults: the transformers classes' defaults for keys the
            JSON files leave out.
        rules: the key map (see :func:`converters.common.map_state_dict`), or a function
            ``(folder, family config) -> rules`` when it depends on the checkpoint.
        jsuff_config: ``folder -> family config`` (a :class:`jsuff.models._family.FamilyConfig`);
            raises :class:`ConversionError` on disagreements between the files, and the family
            config's :class:`ModelError` on bad settings (reported as a :class:`ConversionError`
            naming the folder).
        preprocessor_required: whether a folder without ``preprocessor_config.json`` is refused
            (otherwise the extractor's defaults stand in for it).
        custom_head: ``state_dict -> bool``: the checkpoint carries a custom head that this
            family converts under any class name (the keys, not the class, say so).
        weight_norm_dim: fold weight-norm pairs over this dimension before mapping (None: none).
        ignore: regexes of torch keys that are deliberately unused.
    """

    arch: str
    model_type: str
    classes: tuple[str, ...]
    extractor: str
    config_defaults: Mapping[str, Any]
    extractor_defaults: Mapping[str, Any]
    rules: Sequence[Rule] | Callable[[HFFolder, Any], Sequence[Rule]]
    jsuff_config: Callable[[HFFolder], Any]
    preprocessor_required: bool = True
    custom_head: Callable[[Mapping[str, np.ndarray]], bool] | None = None
    weight_norm_dim: int | None = None
    ignore: tuple[str, ...] = ()

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
            ConversionError: naming the folder and what is wrong: an existing ``dest``, another
                model type or class, no ``preprocessor_config.json`` or another extractor,
                settings that disagree, or tensors that do not match (every missing, unexpected
                and mis-shaped key at once).
        """
        if dest is not None and Path(dest).exists() and not overwrite:
            raise ConversionError(f"{dest} already exists (pass --overwrite to replace it)")
        src = Path(src)
        ckpt = read_hf_folder(src, config_file=config)
        self._check(src, ckpt.config, ckpt.preprocessor, ckpt.state_dict)
        hf = apply_defaults(ckpt.config, self.config_defaults)
        sd = ckpt.state_dict if self.weight_norm_dim is None else fold_weight_norms(ckpt.state_dict, self.weight_norm_dim)
        folder = HFFolder(
            src, hf, apply_defaults(ckpt.preprocessor, self.extractor_defaults), id2label_labels(hf), sd
        )
        try:
            family = self.jsuff_config(folder)
        except ModelError as e:
            if isinstance(e, ConversionError):
                raise
            raise ConversionError(f"{src}: {e}") from None
        cfg = family.to_json()
        rules = self.rules(folder, family) if callable(self.rules) else self.rules
        params = map_state_dict(sd, rules, expected_shapes(self.arch, cfg), source=str(src), ignore=self.ignore)
        return finish(
            arch=self.arch,
            config=cfg,
            params=params,
            labels=folder.labels,
            sample_rate=int(folder.preprocessor["sampling_rate"]),
            input=family.input_policy(),
            source_files=ckpt.files,
            dest=dest,
            overwrite=overwrite,
            extra_source={
                "format": "huggingface",
                "model_type": self.model_type,
                "architectures": list(ckpt.config.get("architectures") or []),
            },
        )

    def _check(
        self, src: Path, config: Mapping[str, Any], preprocessor: Mapping[str, Any], sd: Mapping[str, np.ndarray]
    ) -> None:
        found = config.get("model_type", self.model_type)
        if found != self.model_type:
            raise ConversionError(
                f"{src}: config model_type is {found!r} but the {self.arch!r} converter was asked "
                f"(it takes model_type {self.model_type!r})"
            )
        archs = [str(a) for a in config.get("architectures") or []]
        custom = self.custom_head is not None and self.custom_head(sd)
        if archs and not set(archs) & set(self.classes) and not custom:
            also = " or a custom head it recognises by its keys" if self.custom_head is not None else ""
            raise ConversionError(
                f"{src}: unsupported model class {', '.join(archs)}; "
                f"the {self.arch} converter takes {', '.join(self.classes)}{also}"
            )
        if not preprocessor and self.preprocessor_required:
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
