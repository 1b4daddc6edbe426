"""javad (MIT) -> ``javad``.

Sources: ``pkg:javad`` (= ``pkg:javad/balanced``, the package's default), ``pkg:javad/tiny``,
``pkg:javad/precise`` (``javad/assets/<name>.pt``), or a path to such a checkpoint (the variant is
recognised from the head's output size). An optional ``--config`` JSON is merged over the
variant's hyper-parameters (e.g. ``{"threshold": 0.6}``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters import Converter, register_converter
from converters._packages import Shipped, save
from converters._rules import batch_norm, conv, layer_norm, linear
from converters.common import ConversionError, map_state_dict, read_json, read_state_dict
from jsuff.models._detectors import VAD_LABELS
from jsuff.models.base import Model, expected_shapes
from jsuff.models.javad import SAMPLE_RATE, VARIANTS

ARCH = "javad"
SHIPPED = Shipped("javad", "javad", {name: f"assets/{name}.pt" for name in VARIANTS}, "balanced")

RULES = [
    ("positional_embedding", "positional_embedding", "identity"),
    ("collapsing_weights", "collapse", "identity"),
    # "crb" layers are nn.Sequential(Conv2d, ReLU, BatchNorm2d): indices 0 and 2.
    *conv("conv{i}.0", "conv{i}/conv", "conv2d"),
    *batch_norm("conv{i}.2", "conv{i}/bn"),
    # "dc" layers (DirectionalConv2d).
    *conv("conv{i}.conv", "conv{i}/conv", "conv2d"),
    *[r for bn in ("bn", "bn2") for r in batch_norm(f"conv{{i}}.{bn}", f"conv{{i}}/{bn}")],
    ("conv{i}.alignment.weights", "conv{i}/alignment", "identity"),
    *[
        (f"blocks.{{i}}.attn.{p}.weight", f"blocks/{{i}}/{p}/kernel", "linear")
        for p in ("query", "key", "value", "out")
    ],
    *[(f"blocks.{{i}}.attn.{p}.bias", f"blocks/{{i}}/{p}/bias", "identity") for p in ("query", "value", "out")],
    *[(f"blocks.{{i}}.{ln}.weight", f"blocks/{{i}}/{ln}/scale", "identity") for ln in ("attn_ln", "mlp_ln")],
    *[(f"blocks.{{i}}.{ln}.bias", f"blocks/{{i}}/{ln}/bias", "identity") for ln in ("attn_ln", "mlp_ln")],
    *linear("blocks.{i}.mlp.0", "blocks/{i}/mlp1"),
    *linear("blocks.{i}.mlp.2", "blocks/{i}/mlp2"),
    *layer_norm("ln_post", "ln_post"),
    *linear("classification_head.0", "head1"),
    *linear("classification_head.3", "head2"),
]
# DirectionalAlignment owns a BatchNorm2d that its forward never calls.
IGNORE = [r"^conv\d\.alignment\.bn\."]


def _variant_of(sd: dict[str, np.ndarray], source: str) -> str:
    out = sd.get("classification_head.3.weight")
    sizes = {cfg["output_dim"]: name for name, cfg in VARIANTS.items()}
    if out is None or out.shape[0] not in sizes:
        got = None if out is None else out.shape
        raise ConversionError(
            f"{source} is not a javad checkpoint (head output {got}, expected one of {sorted(sizes)})"
        )
    return sizes[out.shape[0]]


def convert(src: Path, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False) -> Model:
    """Convert a javad checkpoint (see the module docstring for the sources)."""
    path, _, provenance = SHIPPED.resolve(src)
    sd = read_state_dict(path)
    variant = _variant_of(sd, str(path))
    cfg = {**VARIANTS[variant], **(read_json(config, "javad config") if config is not None else {})}
    params = map_state_dict(sd, RULES, expected_shapes(ARCH, cfg), source=str(path), ignore=IGNORE)
    return save(
        ARCH, cfg, params, path, labels=VAD_LABELS, sample_rate=SAMPLE_RATE, dest=dest, overwrite=overwrite,
        provenance={**provenance, "variant": variant},
    )


def detect(src: Path) -> bool:
    if SHIPPED.matches(src):
        return True
    p = Path(src)
    return p.is_file() and p.suffix == ".pt" and p.parent.name == "assets" and p.parent.parent.name == "javad"


register_converter(Converter(ARCH, convert, detect, "javad: pkg:javad[/tiny|/balanced|/precise] or its .pt"))
