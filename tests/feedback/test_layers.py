"""The import layers of ``prefalign.feedback`` (``prefalign.feedback.LAYERS``): a module imports only
modules of lower layers, so the package has no import cycle. Read off the source (every import
statement, function-level and ``TYPE_CHECKING`` ones included), nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prefalign.feedback as feedback

ROOT = Path(feedback.__file__).resolve().parent
PACKAGE = "prefalign.feedback"
FORBIDDEN = ("torch", "transformers", "prefalign.models", "prefalign.train", "prefalign.recipes")


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module under prefalign/feedback (a package by its name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


MODULES = _modules()


def _imports(name: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in module ``name``; ``from P import x`` gives
    ``P.x`` when that is a module, else ``P``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else base))
    return found


def _layer_of(name: str) -> int:
    top = name.removeprefix(PACKAGE + ".").split(".")[0]
    for index, layer in enumerate(feedback.LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{name} is in no layer of prefalign.feedback.LAYERS")


def test_every_module_has_one_layer() -> None:
    tops = {n.removeprefix(PACKAGE + ".").split(".")[0] for n in MODULES if n != PACKAGE}
    listed = [m for layer in feedback.LAYERS for m in layer]
    assert sorted(listed) == sorted(tops)  # each once, none missing, none stale


@pytest.mark.parametrize("name", [n for n in MODULES if n != PACKAGE])
def test_imports_point_down(name: str) -> None:
    own_top = name.removeprefix(PACKAGE + ".").split(".")[0]
    for line, target in _imports(name):
        where = f"{MODULES[name].relative_to(ROOT.parent)}:{line} imports {target}"
        assert not any(target == f or target.startswith(f + ".") for f in FORBIDDEN), where
        if target == PACKAGE:
            raise AssertionError(f"{where}: import the submodule that defines the name instead")
        if not target.startswith(PACKAGE + "."):
            continue
        target_top = target.removeprefix(PACKAGE + ".").split(".")[0]
        if target_top == own_top:  # inside a subpackage (importers): see the test below
            continue
        assert _layer_of(target) < _layer_of(name), f"{where}, which is not in a lower layer"


def test_importers_sources_import_only_common() -> None:
    """Inside ``importers``: the source modules import ``common`` only (never each other or the
    package, which holds the registry); ``common`` imports no importer."""
    base = f"{PACKAGE}.importers"
    for name in MODULES:
        if not name.startswith(base + "."):
            continue
        inside = {t for _, t in _imports(name) if t == base or t.startswith(base + ".")}
        allowed = set() if name == f"{base}.common" else {f"{base}.common"}
        assert inside <= allowed, f"{name} imports {sorted(inside - allowed)}"


def test_no_import_cycle() -> None:
    """Follows from the layers, but checked directly: a depth-first search over every import."""
    graph = {n: {t for _, t in _imports(n) if t in MODULES and t != n} for n in MODULES}
    for name in graph:  # a package's __init__ is imported with its submodules: not an edge to follow
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
