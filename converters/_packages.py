"""``pkg:`` sources: weight files shipped inside installed PyPI packages.

``jsuff convert pkg:NAME[/VARIANT] --out DEST`` converts a checkpoint that the installed
distribution ``NAME`` ships (``pkg:silero-vad``, ``pkg:javad/tiny``, ``pkg:crepe/full`` ...). The
package directory is found with ``importlib.util.find_spec(...).submodule_search_locations``,
which does not run the package's ``__init__`` (two of these packages import torchaudio there,
which cannot be imported here). Install them with ``make setup-real``.

Example:
    >>> parse_pkg_source("pkg:javad/tiny", "javad")
    'tiny'
    >>> parse_pkg_source("pkg:javad", "javad") is None
    True
    >>> Shipped("javad", "javad", {"tiny": "assets/tiny.pt"}, "tiny").matches("pkg:javad/tiny")
    True
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from converters.common import ConversionError, finish
from jsuff.models.base import InputPolicy, Model

PREFIX = "pkg:"


def is_pkg_source(src: str | Path) -> bool:
    """Does ``src`` use the ``pkg:`` spelling?"""
    return str(src).startswith(PREFIX)


def parse_pkg_source(src: str | Path, *names: str) -> str | None:
    """The variant of a ``pkg:NAME[/VARIANT]`` source whose NAME is one of ``names``.

    Returns ``None`` for ``pkg:NAME`` (the default variant).

    Raises:
        ConversionError: ``src`` is not a ``pkg:`` source for any of ``names``.
    """
    text = str(src)
    body = text[len(PREFIX) :] if is_pkg_source(text) else ""
    name, _, variant = body.partition("/")
    if name not in names:
        raise ConversionError(f"{text!r} is not a pkg: source for {' or '.join(names)}")
    return variant or None


def matches(src: str | Path, *names: str) -> bool:
    """``detect`` helper: is ``src`` a ``pkg:`` source naming one of ``names``?"""
    if not is_pkg_source(src):
        return False
    return str(src)[len(PREFIX) :].partition("/")[0] in names


def package_dir(module: str, distribution: str) -> Path:
    """The installed directory of top-level package ``module``, without importing it.

    Raises:
        ConversionError: the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConversionError(
            f"the {distribution!r} package is not installed (needed for pkg:{distribution}); "
            f"install it with `make setup-real` (pip install --no-deps {distribution})"
        )
    return Path(locations[0])


def shipped_file(module: str, distribution: str, relative: str) -> Path:
    """``relative`` inside the installed package ``module``; a clear error when it is missing."""
    path = package_dir(module, distribution) / relative
    if not path.is_file():
        raise ConversionError(f"{distribution} is installed but {path} is missing (a different version?)")
    return path


def pick_variant(variant: str | None, files: Mapping[str, str], default: str, source: str) -> str:
    """Check ``variant`` against the known ones (``None`` -> ``default``); return its name."""
    chosen = default if variant is None else variant
    if chosen not in files:
        raise ConversionError(f"unknown variant in {source!r}; one of: {', '.join(files)}")
    return chosen


@dataclasses.dataclass(frozen=True)
class Shipped:
    """How one package ships its checkpoints.

    Attributes:
        distribution: the PyPI name (``pkg:<distribution>``).
        module: its top-level import name (also accepted after ``pkg:``).
        files: variant -> file path inside the package directory.
        default: the variant of a bare ``pkg:<distribution>``.
    """

    distribution: str
    module: str
    files: Mapping[str, str]
    default: str

    def matches(self, src: str | Path) -> bool:
        return matches(src, self.distribution, self.module)

    def resolve(self, src: str | Path) -> tuple[Path, str | None, dict[str, Any]]:
        """``(file, variant, provenance)`` for a ``pkg:`` source, ``(path, None, {})`` otherwise."""
        if not self.matches(src):
            path = Path(src)
            if not path.is_file():
                raise ConversionError(f"{self.distribution} checkpoint not found: {src}")
            return path, None, {}
        variant = parse_pkg_source(src, self.distribution, self.module)
        variant = pick_variant(variant, self.files, self.default, str(src))
        path = shipped_file(self.module, self.distribution, self.files[variant])
        info = {"package": self.distribution, "version": metadata.version(self.distribution), "variant": variant}
        return path, variant, info


def save(
    arch: str,
    config: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    path: Path,
    *,
    labels: Sequence[str],
    sample_rate: int,
    dest: str | Path | None,
    overwrite: bool,
    provenance: Mapping[str, Any],
) -> Model:
    """:func:`converters.common.finish` for one checkpoint file of a model that takes any length."""
    return finish(
        arch=arch, config=config, params=params, labels=labels, sample_rate=sample_rate, input=InputPolicy(),
        source_files=[path], dest=dest, overwrite=overwrite, extra_source=provenance,
    )
