"""No committed result or doc names a folder of the machine that produced it (``/work/...``, ``/home/me/...``):
such a path means nothing on a reader's machine. Benchmarks write paths through benchmarks/portable.py,
relative to the repository root or as ``<data>``, ``<work>``, ``<tmp>``."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import portable  # noqa: E402

CHECKED = ("README.md", "docs", "benchmarks/results")
# An absolute path starts one of these folders: not after a name (``results/work/``) or inside a URL.
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:work|root|home|tmp|Users)/[^\s\"'`)]*")


def machine_paths(text: str) -> list[str]:
    return MACHINE_PATH.findall(text)


def _tracked() -> list[Path]:
    proc = subprocess.run(["git", "ls-files", "-z", "--", *CHECKED], cwd=ROOT, capture_output=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in proc.stdout.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError):  # figures; a file deleted but not yet unstaged
        return None


def test_tracked_results_and_docs_hold_no_absolute_path_of_a_machine():
    files = _tracked()
    assert any(p.name == "reproduction.json" for p in files)
    found = [f"{p.relative_to(ROOT)}:{n}: {m}" for p in files if (text := _text(p)) is not None
             for n, line in enumerate(text.splitlines(), 1) for m in machine_paths(line)]
    assert not found, "absolute paths of a machine (write them with benchmarks/portable.py):\n" + "\n".join(found)


def test_the_finder_sees_machine_paths_and_not_relative_ones():
    assert machine_paths('--out /work/main/x.pt "/home/me/data" (/tmp/a) `/root/b` /Users/c/d') == [
        "/work/main/x.pt", "/home/me/data", "/tmp/a", "/root/b", "/Users/c/d"]
    assert machine_paths("benchmarks/results/work/full/a.pt <tmp>/x https://example.org/home/x ~/data") == []


def test_portable_shows_repository_paths_relative_and_named_folders_as_placeholders():
    root, data = Path("/srv/repo"), Path("/srv/data")
    text = f"--plot {root}/benchmarks/results/h.png --in {data}/CelebA --cwd {root} --name {root}x"
    assert portable.portable(text, root=root, data=data) == (
        f"--plot benchmarks/results/h.png --in <data>/CelebA --cwd . --name {root}x")
    inside = root / "benchmarks" / "results" / "work"  # a named folder inside the repository stays relative
    assert portable.portable(f"{inside}/m.pt", root=root, work=inside) == "benchmarks/results/work/m.pt"
    assert portable.portable(f"{Path(tempfile.gettempdir())}/random.npy", root=root) == "<tmp>/random.npy"
    assert doctest.testmod(portable).failed == 0


def test_command_line_names_the_script_from_the_repository_root():
    script = ROOT / "benchmarks" / "speed" / "speed.py"
    assert portable.command_line(script, ["--data-dir", "/d/x y", "--json"], data="/d") == (
        "python benchmarks/speed/speed.py --data-dir '<data>/x y' --json")
