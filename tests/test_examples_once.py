"""examples/once.sh, the helper that lets an interrupted example continue: a finished output is skipped, a model
file that an interrupted `train` left behind is finished with --resume, a missing one is made."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ONCE = Path(__file__).resolve().parents[1] / "examples" / "once.sh"
STUB = """#!/bin/sh
if [ "$1" = info ]; then echo '{"status": "'"$(cat "$2")"'"}'; exit 0; fi
echo "$*" >> "$CALLS"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="examples/once.sh is a bash helper; no bash here")
@pytest.mark.parametrize("state, expected", [("finished", None), ("stopped_early", None),
                                             ("interrupted", "train --data d --out m.pt --resume"),
                                             (None, "train --data d --out m.pt")])
def test_once_skips_done_work_and_resumes_an_interrupted_training(tmp_path, state, expected):
    (tmp_path / "bin").mkdir()
    stub = tmp_path / "bin" / "oodflow"
    stub.write_text(STUB)
    stub.chmod(0o755)
    if state is not None:
        (tmp_path / "m.pt").write_text(state)  # the stub's `info` reports the file's text as its status
    calls = tmp_path / "calls"
    script = f'source "{ONCE}"; once m.pt train --data d --out m.pt'
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin",
                                 "CALLS": str(calls)})
    assert result.returncode == 0, result.stderr
    ran = calls.read_text().splitlines() if calls.exists() else []
    assert ran == ([] if expected is None else [expected])
