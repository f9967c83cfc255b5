"""Paths as the committed results show them: relative to the repository root, or a placeholder.

A result file records the commands and the data it came from. An absolute path there names one
development machine (``/work/main/...``, ``/home/me/...``) and means nothing on the reader's, so
every path a benchmark writes into a result goes through :func:`portable`: a path inside the
repository becomes relative to its root, one in the temporary folder ``<tmp>/...``, and one under
a folder the caller names (``data=root``) ``<data>/...``. tests/test_no_machine_paths.py keeps
absolute paths out of the committed results and docs.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def portable(text: str, root: Path | str = ROOT, **places: Path | str | None) -> str:
    """``text`` with the paths under ``root`` made relative to it and those under each of ``places`` (and
    the temporary folder, ``tmp``) starting ``<name>``; where a path lies under several, the longest wins,
    except that the repository root wins over the folders inside it.

    >>> portable("--out /repo/results/a.png --data /d/MNIST --in /repo", root="/repo", data="/d")
    '--out results/a.png --data <data>/MNIST --in .'
    """
    shown = {p: f"<{name}>" for name, folder in {"tmp": tempfile.gettempdir(), **places}.items()
             for p in _spellings(folder) if not _inside(p, root)}
    shown.update({p: "" for p in _spellings(root)})
    for prefix in sorted(shown, key=len, reverse=True):
        text = _replace(text, prefix, shown[prefix])
    return text


def command_line(script: Path | str, argv: list[str], **places: Path | str | None) -> str:
    """The command a result file records, ``python SCRIPT ARGS``, with its paths :func:`portable`."""
    return portable(shlex.join(["python", str(Path(script).resolve()), *argv]), **places)


def _spellings(folder: Path | str | None) -> set[str]:
    """The absolute spellings of ``folder`` a text may hold (as given, and with links resolved)."""
    if folder is None:
        return set()
    return {p for p in (os.path.abspath(folder), str(Path(folder).resolve())) if p != os.sep}


def _inside(path: str, root: Path | str) -> bool:
    return any(Path(path).is_relative_to(r) for r in _spellings(root))


def _replace(text: str, prefix: str, name: str) -> str:
    """``prefix`` where it starts a path (not inside a longer name) by ``name``; the root (``name`` empty)
    by nothing before a ``/`` (the path becomes relative) and by ``.`` where it stands alone."""
    pattern = re.compile(rf"(?<![\w.~/-]){re.escape(prefix)}(/|(?![\w.~-]))")
    if name:
        return pattern.sub(lambda m: name + m[1], text)
    return pattern.sub(lambda m: "" if m[1] else ".", text)
