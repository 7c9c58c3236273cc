"""The package's layers: no import cycle anywhere in ``jmeta`` (imports inside functions included), the
core never imports the layers above it, and every module imports in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jmeta"
LOWER = (
    "nn", "models", "learners", "batching", "meta_trainer", "tasks", "data", "evaluation", "losses",
    "validation", "parallel", "rl",
)  # fmt: skip
HIGHER = ("train", "checkpoint", "cli", "bench", "systems")


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The jmeta modules that ``name`` imports anywhere in its source (at the top or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from a import b` imports the module a.b when there is one, else the name b of module a
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {module for module in found if module in modules and module != name}


def graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports(name, path, set(names)) for name, path in names.items()}


def test_the_import_graph_parses_imports_inside_functions():
    edges = graph()
    assert "jmeta.train" in edges["jmeta.cli"]  # `_train` imports it inside the function
    assert "jmeta.systems.programs" in edges["jmeta.cli"]


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(edges[module]):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_lower_layers_never_import_higher_ones():
    edges = graph()

    def layer(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    wrong = sorted(
        f"{module} imports {imported}"
        for module, imported_modules in edges.items()
        if layer(module) in LOWER
        for imported in imported_modules
        if layer(imported) in HIGHER
    )
    assert wrong == []


def test_every_module_imports_alone_and_the_core_loads_no_higher_layer():
    names = sorted(module_names())
    core = [name for name in names if name.split(".")[1:2] and name.split(".")[1] in LOWER]
    script = f"""
import importlib, sys
for name in {core!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[:2] in [["jmeta", h] for h in {HIGHER!r}])
assert not loaded, f"the core loaded {{loaded}}"
for name in {names!r}:
    importlib.import_module(name)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
