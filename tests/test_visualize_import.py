"""Importing oodflow never switches matplotlib's backend nor loads pyplot (a notebook keeps its own)."""

import subprocess
import sys

CHECK = """
import io, sys
import matplotlib
calls = []
matplotlib.use = lambda *args, **kwargs: calls.append(args)
import ood_flow.cli.main, ood_flow.visualize
from ood_flow.visualize.panels import new_figure
fig = new_figure(1.0, 1.0)
fig.add_subplot().plot([0, 1])
buffer = io.BytesIO()
fig.savefig(buffer, format="png")
assert buffer.getvalue().startswith(b"\\x89PNG"), "not a PNG"
assert not calls, f"matplotlib.use called: {calls}"
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
"""


def test_importing_oodflow_leaves_the_matplotlib_backend_alone():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
