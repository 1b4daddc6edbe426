"""musicnn 0.1.0 (ISC) TensorFlow 1 checkpoints -> ``musicnn`` / ``musicnn_vgg``.

Sources: ``pkg:musicnn/MTT_musicnn`` (the default, ``pkg:musicnn``), ``pkg:musicnn/MSD_musicnn``,
``pkg:musicnn/MTT_vgg``, ``pkg:musicnn/MSD_vgg``: the ``<NAME>/.index`` and
``<NAME>/.data-00000-of-00001`` files inside the installed package, read by
:mod:`converters.tf_bundle` (no TensorFlow). ``MTT_*`` models get the 50 MagnaTagATune tags,
``MSD_*`` the 50 Million Song Dataset tags. Install the package with ``make setup-real``
(``pip install --no-deps musicnn==0.1.0``: it pins TensorFlow 1 and numpy < 1.17).

The tag lists come from the package's ``configuration.py``, read as data: the file is parsed with
:mod:`ast` and only the literal lists assigned to ``MTT_LABELS`` and ``MSD_LABELS`` are taken
(``ast.literal_eval``); nothing of the package is imported or executed (it imports TensorFlow).

Key map. TF1 ``tf.layers`` names its variables by creation order (``conv2d``, ``conv2d_1``, ...,
``batch_normalization``, ``batch_normalization_1``, ...; the VGG's convolutions are named ``1CNN``
to ``5CNN``), so the tables below list the layers in the order ``models.py`` of the package builds
them. Kernels are already HWIO / (in, out); the mid-end's ``[7, C, 1, 64]`` kernels lose their
unit input-channel axis (the package convolves a ``[T, C, 1]`` image with a full-width kernel,
which is a 1-D convolution over time). Adam's slots (``*/Adam``, ``*/Adam_1``, ``beta1_power``,
``beta2_power``) are training state and are ignored.
"""

from __future__ import annotations

import ast
import functools
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from converters import Converter, register_converter
from converters._packages import matches, package_dir, parse_pkg_source, pick_variant
from converters.common import ConversionError, Rule, finish, map_state_dict
from converters.tf_bundle import read_bundle, read_index
from jsuff.models.base import InputPolicy, Model, expected_shapes
from jsuff.models.musicnn import SAMPLE_RATE

DISTRIBUTION = "musicnn"
VARIANTS = {"MTT_musicnn": "musicnn", "MSD_musicnn": "musicnn", "MTT_vgg": "musicnn_vgg", "MSD_vgg": "musicnn_vgg"}
DEFAULT = "MTT_musicnn"
TAG_LISTS = {"MTT": "MTT_LABELS", "MSD": "MSD_LABELS"}
IGNORE = [r"/Adam(_1)?$", r"^beta[12]_power$", r"^global_step$"]  # optimizer state


def _bn(n: int) -> str:
    return "batch_normalization" + (f"_{n}" if n else "")


def _conv(n: int) -> str:
    return "conv2d" + (f"_{n}" if n else "")


# TF layer name -> (flax prefix, kind); the suffixes number each kind of layer in the order the
# package's models.py creates them (input batch norm first, then per block conv before its norm).
LAYERS: dict[str, dict[str, tuple[str, str]]] = {
    "musicnn": {
        _bn(0): ("input_bn", "bn"),
        **{_conv(i): (f"timbral/{i}", "conv") for i in range(2)},
        **{_bn(1 + i): (f"front_bns/{i}", "bn") for i in range(5)},
        **{_conv(2 + i): (f"temporal/{i}", "conv") for i in range(3)},
        **{_conv(5 + i): (f"midend/{i}", "conv1d") for i in range(3)},
        **{_bn(6 + i): (f"mid_bns/{i}", "bn") for i in range(3)},
        _bn(9): ("pool_bn", "bn"),
        "dense": ("dense", "dense"),
        _bn(10): ("dense_bn", "bn"),
        "dense_1": ("out", "dense"),
    },
    "musicnn_vgg": {
        _bn(0): ("input_bn", "bn"),
        **{f"{i + 1}CNN": (f"convs/{i}", "conv") for i in range(5)},
        **{_bn(1 + i): (f"bns/{i}", "bn") for i in range(5)},
        "dense": ("out", "dense"),
    },
}
_KINDS = {
    "bn": [("gamma", "scale"), ("beta", "bias"), ("moving_mean", "mean"), ("moving_variance", "var")],
    "conv": [("kernel", "kernel"), ("bias", "bias")],
    "conv1d": [("kernel", "kernel", "drop_unit_input_axis"), ("bias", "bias")],
    "dense": [("kernel", "kernel"), ("bias", "bias")],
}


def rules(arch: str) -> list[Rule]:
    """The key-map table of ``arch``: ``(TF variable, flax path, transform)`` rows."""
    out = []
    for tf_name, (prefix, kind) in LAYERS[arch].items():
        for tf_leaf, flax_leaf, *transform in _KINDS[kind]:
            out.append((f"{tf_name}/{tf_leaf}", f"{prefix}/{flax_leaf}", transform[0] if transform else "identity"))
    return out


def drop_unit_input_axis(w: np.ndarray) -> np.ndarray:
    """A full-width ``[K, C, 1, O]`` TF kernel -> the equivalent flax Conv1d kernel ``[K, C, O]``."""
    if w.ndim != 4 or w.shape[2] != 1:
        raise ConversionError(f"expected a [K, C, 1, O] mid-end kernel, got shape {w.shape}")
    return w[:, :, 0, :]


def read_tag_lists(configuration: Path) -> dict[str, tuple[str, ...]]:
    """``{"MTT": (...), "MSD": (...)}`` from the package's ``configuration.py``, parsed as data."""
    try:
        tree = ast.parse(configuration.read_text(encoding="utf-8"), filename=str(configuration))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise ConversionError(f"cannot parse {configuration}: {e}") from None
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in TAG_LISTS.values():
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    raise ConversionError(f"{configuration}: {node.targets[0].id} is not a literal list") from None
    out = {}
    for key, var in TAG_LISTS.items():
        tags = found.get(var)
        if not (isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags)):
            raise ConversionError(f"{configuration} has no list of tag strings {var}")
        out[key] = tuple(tags)
    return out


def convert_folder(
    folder: Path, *, arch: str, labels: tuple[str, ...], dest: str | Path | None, overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Model:
    """Convert the checkpoint in ``folder`` (files ``.index``, ``.data-*``) as ``arch`` with ``labels``."""
    model_config = {"num_classes": len(labels)}
    wanted = [n for n in read_index(folder) if not any(re.search(p, n) for p in IGNORE)]
    params = map_state_dict(
        read_bundle(folder, wanted), rules(arch), expected_shapes(arch, model_config), source=str(folder),
        transforms={"drop_unit_input_axis": drop_unit_input_axis},
    )
    return finish(
        arch=arch, config=model_config, params=params, labels=labels, sample_rate=SAMPLE_RATE,
        input=InputPolicy(), source_files=[folder / ".index", *sorted(folder.glob(".data-*"))], dest=dest,
        overwrite=overwrite, extra_source=provenance,
    )


def convert(
    src: Path | str, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False,
    arch: str | None = None,
) -> Model:
    """Convert ``pkg:musicnn/<NAME>`` (see the module docstring); ``arch``, when given, must fit it."""
    if config is not None:
        raise ConversionError("musicnn conversion takes no --config (the package fixes every setting)")
    if not matches(src, DISTRIBUTION):
        raise ConversionError(
            f"musicnn weights are converted from the installed package: pkg:musicnn/<NAME>, got {src}"
        )
    name = pick_variant(parse_pkg_source(src, DISTRIBUTION), VARIANTS, DEFAULT, str(src))
    if arch is not None and arch != VARIANTS[name]:
        raise ConversionError(f"{src} is a {VARIANTS[name]} model, not {arch}")
    root = package_dir(DISTRIBUTION, DISTRIBUTION)
    provenance = {"package": DISTRIBUTION, "version": metadata.version(DISTRIBUTION), "variant": name}
    return convert_folder(
        root / name, arch=VARIANTS[name], labels=read_tag_lists(root / "configuration.py")[name[:3]], dest=dest,
        overwrite=overwrite, provenance=provenance,
    )


def _detect(arch: str, src: Path) -> bool:
    # Every pkg:musicnn source goes to the "musicnn" converter unless it names a VGG, so that an
    # unknown variant gets convert()'s error listing the four names.
    if not matches(src, DISTRIBUTION):
        return False
    variant = parse_pkg_source(src, DISTRIBUTION) or DEFAULT
    return VARIANTS.get(variant, "musicnn") == arch


for _arch in ("musicnn", "musicnn_vgg"):
    _names = "|".join(k for k, v in VARIANTS.items() if v == _arch)
    register_converter(
        Converter(
            _arch, functools.partial(convert, arch=_arch), functools.partial(_detect, _arch),
            f"musicnn package (TF1 checkpoints, read without TF): pkg:musicnn/{{{_names}}}",
        )
    )
