"""pulsevad (MIT) -> ``pulsevad``.

Sources: ``pkg:pulsevad`` (= ``pkg:pulsevad/2.1k``: ``pulsevad/data/pulsevad_2.1k.pth``, the
shipped BatchNorm-folded 2,118-parameter model), ``pkg:pulsevad/teacher`` (``pulsevad_teacher_81k
.pth``, the unpruned 81k model with BatchNorms, folded here with the package's formula and eps
1e-3), or a path to either kind of ``.pth``. Layer widths are read from the tensor shapes. An
optional ``--config`` JSON sets the clip rule (``threshold``, ``hop``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters import Converter, register_converter
from converters._packages import Shipped, save
from converters.common import ConversionError, map_state_dict, read_json, read_state_dict
from jsuff.models._detectors import VAD_LABELS
from jsuff.models.base import Model, expected_shapes
from jsuff.models.pulsevad import SAMPLE_RATE

ARCH = "pulsevad"
SHIPPED = Shipped(
    "pulsevad", "pulsevad", {"2.1k": "data/pulsevad_2.1k.pth", "teacher": "data/pulsevad_teacher_81k.pth"}, "2.1k"
)
BN_EPS = 1e-3  # pulsevad.model.BN_EPS

DEPTHWISE = ("conv0_dw", "subA_dw", "subC_dw", "conv4_dw")
POINTWISE = ("adapter", "conv0_pw", "block1", "block2", "subA_pw", "subC_pw", "skip", "conv4_pw", "conv5")
RULES = [
    *[(f"{n}.weight", f"{n}/kernel", "conv1d") for n in DEPTHWISE + POINTWISE],
    *[(f"{n}.bias", f"{n}/bias", "identity") for n in POINTWISE],
    ("classifier.weight", "classifier/kernel", "linear"),
    ("classifier.bias", "classifier/bias", "identity"),
]
# Layers nested in the teacher's ResidualBlock, by their folded names.
_TEACHER_PREFIX = {n: f"block3.{n}" for n in ("subA_dw", "subA_pw", "subC_dw", "subC_pw", "skip")}


def fold_teacher(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``pulsevad.model.PulseVAD`` weights -> ``FoldedPulseVAD`` names, BatchNorm folded in.

    ``W' = W * g / sqrt(var + eps)``, ``b' = beta - mean * g / sqrt(var + eps)`` (float64).
    """
    try:
        return _fold(sd)
    except KeyError as e:
        raise ConversionError(f"not a pulsevad teacher checkpoint: no tensor {e}") from None


def _fold(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"classifier.weight": sd["classifier.weight"], "classifier.bias": sd["classifier.bias"]}
    for name in DEPTHWISE:
        out[f"{name}.weight"] = sd[f"{_TEACHER_PREFIX.get(name, name)}.weight"]
    for name in POINTWISE:
        p = _TEACHER_PREFIX.get(name, name)
        gain = sd[f"{p}.bn.weight"].astype(np.float64) / np.sqrt(sd[f"{p}.bn.running_var"].astype(np.float64) + BN_EPS)
        out[f"{name}.weight"] = (sd[f"{p}.conv.weight"] * gain[:, None, None]).astype(np.float32)
        out[f"{name}.bias"] = (sd[f"{p}.bn.bias"] - sd[f"{p}.bn.running_mean"] * gain).astype(np.float32)
    return out


def dims_of(sd: dict[str, np.ndarray], source: str) -> dict[str, int]:
    """The ``FoldedPulseVAD`` widths from the folded tensors' shapes."""
    layers = {"adapter": "adapter", "conv0_pw": "conv0_pw", "b1": "block1", "b2": "block2",
              "b3": "subA_pw", "c4": "conv4_dw", "p4": "conv4_pw", "c5": "conv5"}
    missing = [f"{layer}.weight" for layer in layers.values() if f"{layer}.weight" not in sd]
    if missing:
        raise ConversionError(f"{source} is not a pulsevad checkpoint: missing {', '.join(missing)}")
    return {dim: int(sd[f"{layer}.weight"].shape[0]) for dim, layer in layers.items()}


def convert(src: Path, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False) -> Model:
    """Convert a pulsevad checkpoint (see the module docstring for the sources)."""
    path, _, provenance = SHIPPED.resolve(src)
    sd = read_state_dict(path)
    teacher = "adapter.bn.running_var" in sd
    if teacher:
        sd = fold_teacher(sd)
    cfg = {**dims_of(sd, str(path)), **(read_json(config, "pulsevad config") if config is not None else {})}
    params = map_state_dict(sd, RULES, expected_shapes(ARCH, cfg), source=str(path))
    return save(
        ARCH, cfg, params, path, labels=VAD_LABELS, sample_rate=SAMPLE_RATE, dest=dest, overwrite=overwrite,
        provenance={**provenance, "batchnorm_folded_by": "jsuff" if teacher else "pulsevad"},
    )


def detect(src: Path) -> bool:
    if SHIPPED.matches(src):
        return True
    p = Path(src)
    return p.is_file() and p.name.startswith("pulsevad") and p.suffix == ".pth"


register_converter(Converter(ARCH, convert, detect, "pulsevad: pkg:pulsevad[/2.1k|/teacher] or its .pth"))
