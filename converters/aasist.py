"""clovaai/aasist AASIST / AASIST-L state_dict (``.pth``) -> jsuff ``aasist`` model directory.

Usage: ``jsuff convert AASIST.pth --arch aasist --config AASIST.json --out DEST``, or from Python
``converters.convert("AASIST.pth", "DEST", arch="aasist", config="AASIST.json")``. The config is
the published one: either the bare ``model_config`` object or the whole training config
(``config/AASIST.conf``) that wraps it under ``"model_config"``.

Input policy (:meth:`~jsuff.models.aasist.AasistConfig.input_policy`): ``nb_samp`` samples (64600 =
4.04 s at 16 kHz); shorter clips are tiled (repeat padding) and longer ones keep their first
``nb_samp`` samples. That is what the reference's evaluation loader does (``data_utils.pad``:
``x[:max_len]`` when long enough, else ``np.tile``); its random crop (``pad_random``) is used only
for training.
"""

from __future__ import annotations

from converters import Converter, register_converter
from converters._rules import batch_norm, config_converter, conv, linear
from jsuff.models.aasist import ARCH, LABELS, AasistConfig


def _gat(t: str, f: str) -> list[tuple[str, str, str]]:
    return [
        # The attention vector keeps its (out, 1) shape: the reference computes ``h @ att_weight``.
        (f"{t}.att_weight", f"{f}/att_weight", "identity"),
        *linear(f"{t}.att_proj", f"{f}/att_proj"),
        *linear(f"{t}.proj_with_att", f"{f}/proj_with_att"),
        *linear(f"{t}.proj_without_att", f"{f}/proj_without_att"),
        *batch_norm(f"{t}.bn", f"{f}/bn"),
    ]


def _htrg(t: str, f: str) -> list[tuple[str, str, str]]:
    return [
        *[(f"{t}.att_weight{s}", f"{f}/att_weight{s}", "identity") for s in ("11", "22", "12")],
        (f"{t}.att_weightM", f"{f}/att_weight_m", "identity"),
        *linear(f"{t}.proj_type1", f"{f}/proj_type1"),
        *linear(f"{t}.proj_type2", f"{f}/proj_type2"),
        *linear(f"{t}.att_proj", f"{f}/att_proj"),
        *linear(f"{t}.att_projM", f"{f}/att_proj_m"),
        *linear(f"{t}.proj_with_att", f"{f}/proj_with_att"),
        *linear(f"{t}.proj_without_att", f"{f}/proj_without_att"),
        *linear(f"{t}.proj_with_attM", f"{f}/proj_with_att_m"),
        *linear(f"{t}.proj_without_attM", f"{f}/proj_without_att_m"),
        *batch_norm(f"{t}.bn", f"{f}/bn"),
    ]


RULES: list[tuple[str, str, str]] = [
    ("pos_S", "pos_s", "identity"),
    ("master1", "master1", "identity"),
    ("master2", "master2", "identity"),
    *batch_norm("first_bn", "first_bn"),
    *conv("encoder.{i}.0.conv1", "encoder/{i}/conv1", "conv2d"),
    *batch_norm("encoder.{i}.0.bn2", "encoder/{i}/bn2"),
    *conv("encoder.{i}.0.conv2", "encoder/{i}/conv2", "conv2d"),
    *conv("encoder.{i}.0.conv_downsample", "encoder/{i}/conv_downsample", "conv2d"),
    *_gat("GAT_layer_S", "gat_s"),
    *_gat("GAT_layer_T", "gat_t"),
    *[r for n in ("11", "12", "21", "22") for r in _htrg(f"HtrgGAT_layer_ST{n}", f"htrg_st{n}")],
    *[
        r
        for t, f in (("S", "s"), ("T", "t"), ("hS1", "hs1"), ("hT1", "ht1"), ("hS2", "hs2"), ("hT2", "ht2"))
        for r in linear(f"pool_{t}.proj", f"pool_{f}/proj")
    ],
    *linear("out_layer", "out_layer"),
]

# The reference computes each non-first residual block's bn1 and throws the result away (conv1
# reads the block input), so its statistics have no effect on the output: dropped on purpose.
IGNORED = [r"^encoder\.\d+\.0\.bn1\.(weight|bias|running_mean|running_var)$"]


convert = config_converter(
    arch=ARCH,
    rules=RULES,
    ignore=IGNORED,
    labels=LABELS,
    parse=AasistConfig.from_mapping,
    example="AASIST.json (or config/AASIST.conf)",
)


register_converter(
    Converter(ARCH, convert, None, "clovaai/aasist AASIST / AASIST-L .pth + model config JSON")
)
