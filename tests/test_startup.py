"""What the oodflow command imports before it does any work: help, the version, a usage error and `info` on a
score file never import torch (or the other slow libraries); a command that computes does. Timings are in
benchmarks/speed/startup.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torch", "torchvision", "timm", "sklearn", "matplotlib", "scipy")
PROBE = """
import json, sys
sys.argv = ["oodflow", *json.loads(sys.argv[1])]
try:
    from oodflow_launch import main
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {heavy} if m in sys.modules)
sys.stderr.write("\\nIMPORTED " + json.dumps([code, heavy]) + "\\n")
"""


def _imported(*args: str, cwd=None) -> tuple[int, list[str]]:
    """Run ``oodflow ARGS`` in a fresh interpreter; its exit code and the slow libraries it imported."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(list(args))],
                            capture_output=True, text=True, timeout=300, cwd=cwd)
    tail = result.stderr.rsplit("IMPORTED ", 1)
    assert len(tail) == 2, result.stderr
    code, heavy = json.loads(tail[1])
    return code, heavy


@pytest.mark.parametrize("args", [("--help",), ("-h",), ("--version",), ("score", "--help"), ("train", "-h"),
                                  ("evaluate", "--help"), ("visualize", "latents", "--help"), ("calibrate", "-h"),
                                  ("score", "x", "--bogus"), ("train", "--data", "x", "--lr", "abc")])
def test_help_version_and_usage_errors_import_no_heavy_library(args):
    code, heavy = _imported(*args)
    assert code in (0, 2, None) and heavy == [], (args, heavy)


def test_info_on_a_score_file_imports_no_heavy_library(tmp_path):
    from ood_flow import store

    store.write_group(tmp_path / "s.h5", "g", {"log_likelihood": np.zeros(3), "id": np.arange(3)}, {"source": "x"})
    code, heavy = _imported("info", str(tmp_path / "s.h5"))
    assert code in (0, None) and heavy == []


def test_the_probe_sees_a_command_that_computes_import_torch(tmp_path):
    """The check above can fail: scoring a file does import torch."""
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.float32))
    code, heavy = _imported("score", str(tmp_path / "x.npy"), "--model", str(tmp_path / "none.pt"))
    assert code == 1 and "torch" in heavy
