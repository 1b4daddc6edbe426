"""Every docstring example of jsuff and converters runs with the tests (pytest's --doctest-modules
over both packages, configured in pyproject.toml); an example that cannot run here is skipped with
a reason written beside its ``+SKIP``, never left out silently. Read from the sources (ast)."""

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jsuff", "converters")
# `>>> code  # why it cannot run here  # doctest: +SKIP`
_SKIP = re.compile(r"#\s*doctest:\s*\+SKIP")
_REASON = re.compile(r">>>.*\S.*#\s*(?P<why>[^#]*\w[^#]*?)\s*#\s*doctest:\s*\+SKIP")


def _docstrings(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", path.stem), doc


def test_the_doctests_of_both_packages_are_collected():
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in opts["addopts"].split()
    assert set(PACKAGES) <= set(opts["testpaths"])
    for conftest in ROOT.rglob("conftest.py"):
        if ".venv" not in conftest.parts:
            assert "collect_ignore" not in conftest.read_text(), f"{conftest} leaves files out of the collection"


def test_every_skipped_example_says_why():
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, doc in _docstrings(path):
                for line in doc.splitlines():
                    if _SKIP.search(line) and not _REASON.search(line):
                        unexplained.append(f"{path.relative_to(ROOT)} ({name}): {line.strip()}")
    assert not unexplained, "a +SKIP without a reason (write `# why  # doctest: +SKIP`):\n" + "\n".join(unexplained)


def test_the_reason_check_tells_a_reason_from_none():
    assert _REASON.search('>>> run("x")  # needs espeak-ng  # doctest: +SKIP')
    assert not _REASON.search('>>> run("x")  # doctest: +SKIP')
    assert not _REASON.search('>>> run("x")  #   # doctest: +SKIP')
