"""PyTorch checkpoints -> jsuff model directories. The only package that may import torch.

Each family module in this package registers one :class:`Converter` per architecture name at
import time; :func:`convert` dispatches on ``arch`` (or on what ``detect`` recognises).

Example:
    >>> from converters import supported
    >>> isinstance(supported(), dict)
    True
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from converters.common import ConversionError
from jsuff.models.base import Model

__all__ = ["ConversionError", "Converter", "convert", "register_converter", "supported"]


@dataclasses.dataclass(frozen=True)
class Converter:
    """One convertible architecture.

    Attributes:
        name: the ``--arch`` name (also the jsuff architecture it produces, unless noted).
        convert: ``convert(src, *, dest, config, overwrite) -> Model``; ``src`` is a checkpoint
            file or a Hugging Face model folder, ``config`` an optional config file path.
        detect: ``detect(src) -> bool``: can this converter take ``src`` without ``--arch``?
        description: one line for ``jsuff models``.
    """

    name: str
    convert: Callable[..., Model]
    detect: Callable[[Path], bool] | None = None
    description: str = ""


_CONVERTERS: dict[str, Converter] = {}
_LOADED = False


def register_converter(conv: Converter) -> Converter:
    if conv.name in _CONVERTERS and _CONVERTERS[conv.name] is not conv:
        raise ValueError(f"converter {conv.name!r} is registered twice")
    _CONVERTERS[conv.name] = conv
    return conv


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "common" and not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def supported() -> dict[str, Converter]:
    """Every convertible architecture by name."""
    _load_all()
    return dict(sorted(_CONVERTERS.items()))


def convert(
    src: str | Path,
    dest: str | Path | None,
    *,
    arch: str | None = None,
    config: str | Path | None = None,
    overwrite: bool = False,
) -> Model:
    """Convert ``src`` (a checkpoint file or a Hugging Face folder) and save it at ``dest``.

    A state dict file with a Hugging Face ``config`` converts as the folder holding the two would.

    Nothing is written at ``dest`` unless the whole conversion succeeds.

    Raises:
        ConversionError: unknown architecture (the message lists the supported ones), an
            unreadable checkpoint, or keys that do not match (all of them named at once).
    """
    src = Path(src)
    # "pkg:NAME[/VARIANT]" names weights shipped inside an installed package (converters/_packages.py);
    # the converter whose detect() recognises it locates the file.
    if not str(src).startswith("pkg:") and not src.exists():
        raise ConversionError(f"source not found: {src}")
    from converters._hf_state_dict import as_hf_folder, is_hf_config

    if config is not None and src.is_file() and is_hf_config(config):  # a state dict + its config.json
        with as_hf_folder(src, Path(config)) as folder:
            return convert(folder, dest, arch=arch, config=config, overwrite=overwrite)
    convs = supported()
    if arch is None:
        found = [c for c in convs.values() if c.detect is not None and c.detect(src)]
        if not found:
            raise ConversionError(
                f"cannot tell the architecture of {src}; pass --arch, one of: {', '.join(convs)}"
            )
        conv = found[0]
    elif arch not in convs:
        raise ConversionError(f"unknown architecture {arch!r}; supported: {', '.join(convs)}")
    else:
        conv = convs[arch]
    return conv.convert(src, dest=dest, config=Path(config) if config else None, overwrite=overwrite)
