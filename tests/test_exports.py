"""Every jsuff module says what it exports (``__all__``), and nobody imports a jsuff name that its
module does not export. Read from the source (ast), so nothing is imported to check it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_path(name: str) -> Path | None:
    p = ROOT / name.replace(".", "/")
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _assigned(node: ast.stmt) -> list[str]:
    """The names a top-level assignment binds."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _exports(path: Path) -> set[str] | None:
    for node in ast.parse(path.read_text()).body:
        if "__all__" in _assigned(node):
            return set(ast.literal_eval(node.value))
    return None


def _jsuff_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "jsuff").rglob("*.py")
    )


def test_every_module_has_all():
    missing = [m for m in _jsuff_modules() if _exports(_module_path(m)) is None]
    assert not missing, f"modules without __all__: {missing}"


def test_every_module_exports_only_what_it_defines_or_imports():
    for m in _jsuff_modules():
        path = _module_path(m)
        exported = _exports(path)
        if exported is None:
            continue
        tree = ast.parse(path.read_text())
        bound = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in n.names}
        for n in tree.body:
            bound.update([n.name] if isinstance(n, (ast.FunctionDef, ast.ClassDef)) else _assigned(n))
        subpackages = {p.stem for p in path.parent.iterdir()} if path.name == "__init__.py" else set()
        assert not exported - bound - subpackages, f"{m}.__all__ names what it does not define: {exported - bound}"


def test_nobody_imports_a_name_its_jsuff_module_does_not_export():
    wrong = []
    for folder in ("jsuff", "converters", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                        and node.module.split(".")[0] == "jsuff"):
                    continue
                source = _module_path(node.module)
                if source is None:
                    wrong.append(f"{path.relative_to(ROOT)}: from {node.module} import ...: no such module")
                    continue
                exported = _exports(source)
                for alias in node.names:
                    if _module_path(f"{node.module}.{alias.name}") is not None:
                        continue  # a submodule
                    if exported is None or alias.name not in exported:
                        wrong.append(f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}")
    assert not wrong, "\n".join(wrong)


_IMPORT_CHECK = """
import json, sys
import jsuff
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "flax", "matplotlib", "pydantic", "torch"})
jsuff_loaded = sorted(m for m in sys.modules if m.startswith(("jsuff.models", "jsuff.app", "jsuff.transfer", "jsuff.info")))
values = {name: type(getattr(jsuff, name)).__name__ for name in jsuff.__all__}
print(json.dumps({"loaded": loaded, "jsuff": jsuff_loaded, "values": values,
                  "explain": jsuff.explain.__module__, "transfer": jsuff.transfer.__name__}))
"""


def test_import_jsuff_is_light_and_every_public_name_resolves():
    """``import jsuff`` loads neither pandas nor Flax nor any model family or the application (they
    load on first use); every name of the small public API resolves. (The time it takes is measured
    by benchmarks/import_time.py, not here.)"""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _IMPORT_CHECK], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, check=True)
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["loaded"] == [] and got["jsuff"] == []
    assert len(got["values"]) <= 18 and "responsibility_loop" not in got["values"]
    assert got["values"]["explain"] == "function" and got["explain"] == "jsuff.explain"
    assert got["values"]["Model"] == "type" and got["transfer"] == "jsuff.transfer"
