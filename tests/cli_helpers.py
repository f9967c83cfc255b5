"""Running the CLI in-process, as a user would from a shell."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from ood_flow.cli.main import app

runner = CliRunner()


def run(*args, code: int = 0):
    """Invoke ``oodflow ARGS``; check the exit code; return the result."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
                                      f"{result.exception!r}")
    return result


def run_json(*args):
    return json.loads(run(*args, "--json").stdout)


def one_line_error(result, *fragments: str) -> str:
    """The result's stderr is exactly one ``error: ...`` line containing ``fragments``; stdout is empty."""
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, f"not one error line: {result.stderr!r}"
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


def image_npz(path, n=40, seed=0, size=8, bright=0.3):
    """Tiny uint8 image set (N, size, size) as an .npz with labels."""
    rng = np.random.default_rng(seed)
    x = ((rng.random((n, size, size)) < bright) * 200 + rng.integers(0, 40, (n, size, size))).astype(np.uint8)
    np.savez(path, x=x, y=np.arange(n) % 3)
    return path


TRAIN_SMALL = ["--channels", "4", "--blocks", "1", "--lr", "1e-3", "--batch-size", "8", "--epochs", "1", "--quiet"]
