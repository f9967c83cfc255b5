"""No import cycles among oodflow's modules, counting imports inside functions: a lazy import that closes a
circle hides it from Python, not from the reader (``data.conform`` -> ``data.stream`` -> ``data.workers`` ->
``data.conform`` was one). Imports under ``if TYPE_CHECKING:`` are for annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ood_flow"


def _module(path: Path, package: Path) -> str:
    name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ood_flow"):
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ood_flow"))
    return found & modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {_module(p, package): p for p in package.rglob("*.py")}
    return {m: _imports(p, set(paths)) - {m} for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found, counter = {}, {}, [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_finder_sees_a_cycle_closed_by_a_lazy_import(tmp_path):
    pkg = tmp_path / "ood_flow"
    pkg.mkdir()
    (pkg / "a.py").write_text("from ood_flow.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from ood_flow.a import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ood_flow.a import g\n")
    assert cycles(import_graph(pkg)) == [["ood_flow.a", "ood_flow.b"]]


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []
