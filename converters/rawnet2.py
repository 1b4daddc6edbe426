"""RawNet2 anti-spoofing state_dict (``.pth``) -> jsuff ``rawnet2`` model directory.

The layout is clovaai/aasist ``models/RawNet2Spoof.py`` (the ASVspoof 2021 RawNet2 baseline):
``Sinc_conv`` (no stored weights), ``first_bn``, ``block{i}.0.*``, ``fc_attention{i}.0.*``,
``bn_before_gru``, ``gru.{weight,bias}_{ih,hh}_l{k}``, ``fc1_gru``, ``fc2_gru``.

Usage: ``jsuff convert rawnet2.pth --arch rawnet2 --config RawNet2.json --out DEST``; the config is
the bare ``model_config`` or a training config wrapping it. Input policy as AASIST's (the
baseline's evaluation loader tiles short clips and keeps the first ``nb_samp`` samples of long
ones).
"""

from __future__ import annotations

from converters import Converter, register_converter
from converters._rules import batch_norm, config_converter, conv, linear
from jsuff.models.rawnet2 import ARCH, LABELS, RawNet2Config

RULES: list[tuple[str, str, str]] = [
    *batch_norm("first_bn", "first_bn"),
    *conv("block{i}.0.conv1", "blocks/{i}/conv1", "conv1d"),
    *batch_norm("block{i}.0.bn2", "blocks/{i}/bn2"),
    *conv("block{i}.0.conv2", "blocks/{i}/conv2", "conv1d"),
    *conv("block{i}.0.conv_downsample", "blocks/{i}/conv_downsample", "conv1d"),
    *linear("fc_attention{i}.0", "attention/{i}"),
    *batch_norm("bn_before_gru", "bn_before_gru"),
    # torch packs the three gates (r, z, n) along the 3H axis; the port keeps that order, so each
    # matrix is a plain Linear transpose and each bias stays where torch applies it.
    ("gru.weight_ih_l{k}", "gru/{k}/ih/kernel", "linear"),
    ("gru.bias_ih_l{k}", "gru/{k}/ih/bias", "identity"),
    ("gru.weight_hh_l{k}", "gru/{k}/hh/kernel", "linear"),
    ("gru.bias_hh_l{k}", "gru/{k}/hh/bias", "identity"),
    *linear("fc1_gru", "fc1_gru"),
    *linear("fc2_gru", "fc2_gru"),
]

# Each non-first block's bn1 is computed and discarded by the reference (conv1 reads the block
# input): its statistics have no effect, so they are dropped on purpose.
IGNORED = [r"^block\d+\.0\.bn1\.(weight|bias|running_mean|running_var)$"]


convert = config_converter(
    arch=ARCH,
    rules=RULES,
    ignore=IGNORED,
    labels=LABELS,
    parse=RawNet2Config.from_mapping,
    example="RawNet2.json",
)


register_converter(
    Converter(ARCH, convert, None, "RawNet2 anti-spoofing .pth (ASVspoof 2021 baseline) + model config JSON")
)
