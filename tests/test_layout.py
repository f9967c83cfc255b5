"""The house rules that a reader relies on: the CLI is a thin skin, and the core never climbs back into it.

Each CLI module imports at most three core modules (parse, call the core, print); no core module
imports ``ood_flow.cli``, typer or rich, prints, exits or reads ``sys.argv``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ood_flow"
CLI = sorted((PACKAGE / "cli").glob("*.py"))
CORE = sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]
              and p.name != "__main__.py")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{a.name}" if node.module == "ood_flow" else node.module for a in node.names)
    return names


@pytest.mark.parametrize("path", CLI, ids=lambda p: p.name)
def test_cli_modules_import_at_most_three_core_modules(path):
    core = {n for n in _imports(path) if n.startswith("ood_flow") and not n.startswith("ood_flow.cli")}
    assert len(core) <= 3, f"{path.name} imports {sorted(core)}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_never_prints_exits_or_reads_argv(path):
    imported = _imports(path)
    assert not {n for n in imported if n.startswith(("ood_flow.cli", "typer", "rich"))}, path
    calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Call, ast.Attribute))]
    printed = [n for n in calls if isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("print", "exit")]
    argv_or_exit = [n for n in calls if isinstance(n, ast.Attribute) and n.attr in ("argv", "exit")
                    and getattr(n.value, "id", None) == "sys"]
    assert not printed and not argv_or_exit, f"{path}: line {(printed + argv_or_exit)[0].lineno}"
