"""silero-vad (MIT) -> ``silero_vad``.

Sources:

* ``pkg:silero-vad`` (= ``pkg:silero-vad/jit``): the weights inside ``silero_vad/data/
  silero_vad.jit``, the TorchScript model that ``load_silero_vad()`` and
  ``get_speech_timestamps`` run (its 16 kHz branch ``_model``; the 8 kHz branch is not ported);
* ``pkg:silero-vad/safetensors``: ``silero_vad/data/silero_vad_16k.safetensors``, the weights the
  package ships for its tinygrad port. Same architecture, *different trained values* (upstream
  issue snakers4/silero-vad#768), so the two give different probabilities;
* a path to either kind of file.

The ``.jit`` file is read as data (:mod:`converters._torchscript`), never with
``torch.jit.load``, which would run the code inside a user's file.

An optional ``--config`` JSON overrides the clip rule (:class:`jsuff.models.silero.SileroConfig`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters import Converter, register_converter
from converters._packages import Shipped, save
from converters.common import ConversionError, linear, map_state_dict, read_json, read_state_dict
from jsuff.models._detectors import VAD_LABELS
from jsuff.models.base import Model, expected_shapes
from jsuff.models.silero import SAMPLE_RATE

ARCH = "silero_vad"
SHIPPED = Shipped(
    "silero-vad", "silero_vad", {"jit": "data/silero_vad.jit", "safetensors": "data/silero_vad_16k.safetensors"}, "jit"
)

# Keys of the TorchScript model's 16 kHz branch (after dropping "_model.").
RULES = [
    ("stft.forward_basis_buffer", "stft/kernel", "conv1d"),
    ("encoder.{i}.reparam_conv.weight", "encoder/{i}/kernel", "conv1d"),
    ("encoder.{i}.reparam_conv.bias", "encoder/{i}/bias", "identity"),
    ("decoder.rnn.weight_ih", "lstm_ih/kernel", "linear"),
    ("decoder.rnn.weight_hh", "lstm_hh/kernel", "linear"),
    ("decoder.rnn.bias", "lstm_ih/bias", "identity"),  # bias_ih + bias_hh, folded below
    ("decoder.decoder.2.weight", "head/kernel", "pointwise"),
    ("decoder.decoder.2.bias", "head/bias", "identity"),
]

# The tinygrad port's names (silero_vad_16k.safetensors) -> the TorchScript model's names.
_SAFETENSORS_NAMES = {
    "stft_conv.weight": "stft.forward_basis_buffer",
    **{f"conv{k + 1}.{p}": f"encoder.{k}.reparam_conv.{p}" for k in range(4) for p in ("weight", "bias")},
    **{f"lstm_cell.{p}": f"decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "decoder.decoder.2.weight",
    "final_conv.bias": "decoder.decoder.2.bias",
}


def pointwise(w: np.ndarray) -> np.ndarray:
    """torch Conv1d with kernel 1 (O, I, 1) -> flax Linear kernel (I, O)."""
    return linear(w[..., 0])


def read_silero(path: Path) -> dict[str, np.ndarray]:
    """The 16 kHz network's tensors from a ``.jit`` or ``.safetensors`` file, named as in the jit."""
    if path.suffix == ".jit":
        # read as data (converters/_torchscript.py): torch.jit.load would run the file's code
        raw = read_state_dict(path)
        if not any(k.startswith("_model.") for k in raw):
            raise ConversionError(f"{path} is not a silero-vad TorchScript model (no '_model.' keys)")
        # "_model_8k." is the 8 kHz network, which is not ported.
        sd = {k[len("_model.") :]: v for k, v in raw.items() if k.startswith("_model.")}
    else:
        sd = {_SAFETENSORS_NAMES.get(k, k): v for k, v in read_state_dict(path).items()}
    if "decoder.rnn.bias_ih" in sd and "decoder.rnn.bias_hh" in sd:
        sd["decoder.rnn.bias"] = sd.pop("decoder.rnn.bias_ih") + sd.pop("decoder.rnn.bias_hh")
    return sd


def convert(src: Path, *, dest: str | Path | None, config: Path | None = None, overwrite: bool = False) -> Model:
    """Convert a silero-vad checkpoint (see the module docstring for the sources)."""
    path, _, provenance = SHIPPED.resolve(src)
    cfg = read_json(config, "silero config") if config is not None else {}
    params = map_state_dict(
        read_silero(path),
        RULES,
        expected_shapes(ARCH, cfg),
        source=str(path),
        transforms={"pointwise": pointwise},
    )
    return save(
        ARCH, cfg, params, path, labels=VAD_LABELS, sample_rate=SAMPLE_RATE, dest=dest, overwrite=overwrite,
        provenance={"weights": "jit" if path.suffix == ".jit" else "safetensors", **provenance},
    )


def detect(src: Path) -> bool:
    if SHIPPED.matches(src):
        return True
    p = Path(src)
    return p.is_file() and p.name.startswith("silero_vad") and p.suffix in (".jit", ".safetensors")


register_converter(
    Converter(ARCH, convert, detect, "silero-vad: pkg:silero-vad[/jit|/safetensors] or a .jit/.safetensors file")
)
