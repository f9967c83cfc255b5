"""The speed benchmarks start: each script's --help runs in a fresh interpreter (an import that shadows the
standard library, or a helper module renamed, fails here rather than at the next measurement)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed"


@pytest.mark.parametrize("script", ["speed.py", "speed_profile.py", "vector_speed.py", "startup.py", "bf16_error.py",
                                    "narrow_cost.py", "optimizer_speed.py", "skip_cost.py"])
def test_a_speed_benchmark_starts(script):
    result = subprocess.run([sys.executable, str(SPEED / script), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


@pytest.mark.parametrize("content", [None, b"not a model"])
def test_narrow_cost_refuses_a_missing_or_corrupt_model_file_in_one_line_before_timing(tmp_path, content):
    model = tmp_path / "m.pt"
    if content is not None:
        model.write_bytes(content)
    result = subprocess.run([sys.executable, str(SPEED / "narrow_cost.py"), "--models", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and str(model) in result.stderr


@pytest.mark.parametrize("script, option", [("narrow_cost.py", "--rounds"), ("narrow_cost.py", "--limit"),
                                            ("optimizer_speed.py", "--rounds"), ("skip_cost.py", "--rounds")])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_a_count_below_one_is_a_usage_error_before_any_timing(script, option, value):
    result = subprocess.run([sys.executable, str(SPEED / script), option, value], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert f"argument {option}: expected a whole number of at least 1, got '{value}'" in result.stderr
