"""Helpers of the reliability campaign: real processes, tiny data and models, file fingerprints."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np


def env() -> dict:
    """The environment of a child ``oodflow`` process: one thread (the machine is shared; results do
    not depend on it) and no colour codes in messages."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}


def cli(*args) -> list[str]:
    """The command line of ``oodflow ARGS`` run as its own process: the installed command, as a user runs it."""
    script = Path(sys.executable).with_name("oodflow")
    return [str(script) if script.exists() else "oodflow", *map(str, args)]


def make_images(path: Path, n: int = 64, size: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = ((rng.random((n, size, size)) < 0.3) * 200 + rng.integers(0, 40, (n, size, size))).astype(np.uint8)
    np.savez(path, x=x, y=np.arange(n) % 3)
    return path


def make_model(folder: Path, name: str = "m.pt", size: int = 8) -> Path:
    import torch

    import ood_flow

    torch.manual_seed(0)
    path = folder / name
    ood_flow.save_model(ood_flow.create_flow("realnvp", (1, size, size), channels=4, blocks=1), path)
    return path


def fingerprints(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (symbolic links by their target text)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary and lock files that a finished command must not leave behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock")))


def no_leftovers(folder: Path) -> None:
    left = leftovers(folder)
    assert not left, f"left behind: {left}"
