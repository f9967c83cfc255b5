"""Every relative link in the README and docs/ names a file that exists, and so does every script or page
(``benchmarks/...``, ``docs/...``, ``examples/...``) that they or the package's docstrings name: a renamed
script or page leaves no dead reference behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    dead = [t for t in _relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not dead, f"{page.relative_to(ROOT)}: dead links {dead}"


def test_the_link_finder_sees_links():
    readme = _relative_links(ROOT / "README.md")
    assert "docs/detector.md" in readme and all("://" not in t for t in readme)


NAMED = re.compile(r"(?<![\w/.-])((?:benchmarks|docs|examples)/[\w./-]+\.(?:py|sh|md))")
NAMING = [*PAGES, *sorted((ROOT / "ood_flow").rglob("*.py"))]


def _named_files(path: Path) -> list[str]:
    return NAMED.findall(path.read_text())


@pytest.mark.parametrize("path", NAMING, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_and_pages_named_in_the_docs_and_the_package_exist(path):
    missing = [t for t in _named_files(path) if not (ROOT / t).exists()]
    assert not missing, f"{path.relative_to(ROOT)}: names missing files {missing} (moved? name the new path)"


def test_the_name_finder_sees_script_paths():
    assert _named_files(ROOT / "ood_flow" / "flows" / "nets.py") == ["benchmarks/speed/speed.py"]
