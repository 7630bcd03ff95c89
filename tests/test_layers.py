"""The package's layering: the incident service sits below every face, and no import goes round.

Imports are read from the source (``ast``), lazy imports inside functions included, so a cycle
hidden in a function body counts as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "safety_governor"
COMPOSITION_ROOT = "safety_governor.bootstrap"
# Entry points: what may import the composition root.
ENTRY_POINTS = ("safety_governor.cli", "safety_governor.mcp_serve", "safety_governor.replay",
                "safety_governor.demo", "safety_governor.service.runtime", "safety_governor.evaluation.runner")


def module_name(path: Path) -> str:
    parts = ["safety_governor", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``safety_governor`` module ``path`` imports (``from . import x`` counts as ``x``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("safety_governor")}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in imports_of(p) if d in files and d != m} for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_nothing_below_the_tui_imports_it() -> None:
    graph = import_graph()
    offenders = sorted(f"{m} imports {d}" for m, deps in graph.items() if not m.startswith("safety_governor.tui")
                       for d in deps if d.startswith("safety_governor.tui"))
    assert offenders == []


def test_no_import_cycle_between_modules_including_lazy_imports() -> None:
    # The package's __init__ re-exports the public names; importing a submodule through it is no cycle.
    graph = {m: {d for d in deps if d != "safety_governor"} for m, deps in import_graph().items()}
    assert cycles(graph) == []


def test_the_composition_root_is_imported_by_entry_points_only() -> None:
    importers = sorted(m for m, deps in import_graph().items() if COMPOSITION_ROOT in deps)
    assert [m for m in importers if m not in ENTRY_POINTS] == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
