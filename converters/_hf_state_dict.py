"""A bare state dict plus its Hugging Face ``config.json`` (``jsuff convert model.pth --config
config.json``), converted like the model folder ``save_pretrained`` would have written.

:func:`as_hf_folder` lays the two files out, as links, in a temporary folder under the names a
Hugging Face folder uses (with a ``preprocessor_config.json`` found beside either file), so the
Hugging Face converters read them unchanged; errors name the user's files, not the temporary ones.
The converted model's source record lists the weights under the Hugging Face name
(``pytorch_model.bin`` or ``model.safetensors``) with the SHA-256 of the user's file.

Example:
    >>> is_hf_config("no-such-config.json")
    False
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from converters.common import ConversionError
from converters.hf_common import CONFIG_FILE, PREPROCESSOR_FILE

__all__ = ["as_hf_folder", "is_hf_config"]


def is_hf_config(path: str | Path) -> bool:
    """Whether ``path`` is a Hugging Face model config (a JSON object naming its ``model_type``)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("model_type"), str)


@contextlib.contextmanager
def as_hf_folder(weights: Path, config: Path) -> Iterator[Path]:
    """A temporary Hugging Face model folder holding ``weights`` (a state dict file) and ``config``.

    Raises:
        ConversionError: from the conversion inside, with the temporary paths replaced by the
            user's files.
    """
    name = "model.safetensors" if weights.suffix == ".safetensors" else "pytorch_model.bin"
    with tempfile.TemporaryDirectory(prefix="jsuff-convert-") as tmp:
        folder = Path(tmp)
        links = {folder / name: weights, folder / CONFIG_FILE: config}
        for near in dict.fromkeys((config.parent, weights.parent)):
            if (near / PREPROCESSOR_FILE).is_file():
                links[folder / PREPROCESSOR_FILE] = near / PREPROCESSOR_FILE
                break
        for link, target in links.items():
            link.symlink_to(target.resolve())
        try:
            yield folder
        except ConversionError as e:
            text = str(e)
            for link, target in links.items():
                text = text.replace(str(link), str(target))
            raise ConversionError(text.replace(str(folder), str(weights))) from None
