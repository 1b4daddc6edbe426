"""A mel-CNN PyTorch state_dict -> jsuff ``melcnn`` model directory.

The PyTorch key layout is documented in :mod:`jsuff.models.melcnn` (``blocks.{i}.conv.*``,
``blocks.{i}.bn.*``, ``head.*``). The config JSON holds the :class:`~jsuff.models.melcnn.MelCnnConfig`
fields, plus two optional keys that describe the model rather than size it:

* ``labels``: the class names (default ``class_0`` ... ``class_{n-1}``);
* ``num_samples`` (a config field): when set, clips are zero-padded / cropped from the start to
  that length before the model sees them; otherwise any length is accepted.

Usage: ``jsuff convert my_cnn.pth --arch melcnn --config my_cnn.json --out DEST``.
"""

from __future__ import annotations

from pathlib import Path

from converters import Converter, register_converter
from converters._rules import batch_norm, conv, convert_state_dict, linear, read_model_config
from converters.common import ConversionError
from jsuff.models.base import Model
from jsuff.models.melcnn import ARCH, MelCnnConfig

RULES: list[tuple[str, str, str]] = [
    *conv("blocks.{i}.conv", "blocks/{i}/conv", "conv2d"),
    *batch_norm("blocks.{i}.bn", "blocks/{i}/bn"),
    *linear("head", "head"),
]


def convert(src: Path, *, dest: str | Path | None, config: Path | None, overwrite: bool = False) -> Model:
    """Convert a mel-CNN ``.pth`` / ``.safetensors`` with its config JSON.

    Raises:
        ConversionError: no or unreadable config, bad ``labels``, unreadable checkpoint, or keys
            that do not match the config (every missing, unexpected and mis-shaped key at once).
        ModelError: a config the architecture rejects.
    """
    cfg = read_model_config(config, arch=ARCH, example="melcnn.json")
    labels = cfg.pop("labels", None)
    parsed = MelCnnConfig.from_mapping(cfg)
    if labels is None:
        labels = [f"class_{i}" for i in range(parsed.num_classes)]
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise ConversionError(f"melcnn config: labels must be a list of strings, got {labels!r}")
    if len(labels) != parsed.num_classes:
        raise ConversionError(
            f"melcnn config: {len(labels)} labels for num_classes={parsed.num_classes}: {labels}"
        )
    return convert_state_dict(
        src,
        config,
        arch=ARCH,
        config=parsed.to_json(),
        rules=RULES,
        labels=labels,
        sample_rate=parsed.sample_rate,
        input=parsed.input_policy(),
        dest=dest,
        overwrite=overwrite,
    )


register_converter(Converter(ARCH, convert, None, "mel-CNN .pth (blocks.{i}.conv/bn, head) + config JSON"))
