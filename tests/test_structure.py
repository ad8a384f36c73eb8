"""The package's shape: no import circles, the layer rule around train/, a loop that reads in a
screen, and a new loss term that plugs in by defining one class."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lightship"
# The application layer drives training; everything else sits below lightship.train, which it
# may reach only for the device/precision choice (train/precision.py imports nothing of ours).
APPLICATION = ("lightship", "lightship.api", "lightship.cli", "lightship.__main__",
               "lightship.convergence")
APPLICATION_PACKAGES = ("lightship.probes", "lightship.studies")
SHARED_FROM_TRAIN = ("lightship.train.precision",)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, typing_too: bool = False) -> set[str]:
    """lightship modules imported anywhere in the file; those under ``if TYPE_CHECKING`` only
    with ``typing_too`` (a type-only import is still knowledge of the other module)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not typing_too and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
                node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lightship"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("lightship"):
            found.add(node.module)
    return found


def _graph(typing_too: bool = False) -> dict[str, set[str]]:
    mods = _modules()

    def owner(name: str) -> str:  # `from lightship.data import x` depends on lightship.data
        while name not in mods and "." in name:
            name = name.rpartition(".")[0]
        return name

    return {m: {owner(i) for i in _imports(p, typing_too)} - {m} for m, p in mods.items()}


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = sorted(m for m in _modules() if not m.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m == 'lightship' or "
            "m.startswith('lightship.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=240)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_no_import_circle_even_through_lazy_or_type_only_imports():
    """Two modules know each other in one direction only: a circle through an import inside a
    function or under ``if TYPE_CHECKING`` counts (issue 22: ``methods/terms ↔ recipe`` and
    ``studies/analysis ↔ base ↔ runner`` hid there)."""
    graph = _graph(typing_too=True)
    # A package's __init__ re-exporting its own modules is not a circle of concepts.
    graph = {m: {d for d in deps if not (m.startswith(d + ".") and d in graph)}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                pytest.fail("import circle: " + " → ".join(cycle))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_the_application_layer_imports_train():
    bad = []
    for mod, deps in _graph().items():
        if mod.startswith("lightship.train") or mod in APPLICATION or \
                mod.startswith(APPLICATION_PACKAGES):
            continue
        bad += [f"{mod} imports {d}" for d in deps
                if d.startswith("lightship.train") and d not in SHARED_FROM_TRAIN]
    assert not bad, bad


def test_no_function_in_train_is_longer_than_60_lines():
    long = []
    for path in sorted((PKG / "train").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.name}:{node.name} {n} lines")
    assert not long, long


def test_the_loop_names_no_method():
    text = (PKG / "train" / "loop.py").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    body = ast.get_docstring(ast.parse(text)) or ""
    code = code.replace(body, "")
    for name in ("supervised", "rocket", "booster", "peer", "dml", "adversarial", "discrimin",
                 '"kd"', "teacher_cache", "distill"):
        assert name not in code.lower(), name


def test_every_imported_package_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("-", "_")
                for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {d.split(">")[0].split("=")[0].strip().lower().replace("-", "_")
                     for d in extra}
    alias = {"yaml": "pyyaml", "sklearn": "scikit_learn", "PIL": "pillow"}
    stdlib = set(sys.stdlib_module_names)
    used = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                used.add(node.module.split(".")[0])
    third = {alias.get(u, u).lower() for u in used if u not in stdlib and u != "lightship"}
    # pillow arrives with torchvision and matplotlib, which need it themselves.
    assert third - declared <= {"pillow"}, third - declared


def test_package_metadata_uses_an_spdx_license():
    """Issue 24: `license = { text = "MIT" }` made every `pip install -e .` (make demo, make
    test) print ~60 lines of setuptools deprecation warnings. An SPDX string needs
    setuptools >= 77 to build."""
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert "setuptools>=77" in meta["build-system"]["requires"]
