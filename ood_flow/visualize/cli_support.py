"""File-level entry points shared by subcommands that write figures (``visualize``, ``evaluate --plot``)."""

from __future__ import annotations

import os
from pathlib import Path

from ood_flow.visualize.histogram import histogram_figure, read_groups
from ood_flow.visualize.panels import save_figure


def write_histogram(scores: str | os.PathLike, groups: list[str] | None, score: str, out: str | os.PathLike, *,
                    in_groups: list[str] | None = None) -> list:
    """Read ``groups`` of a score file and write their ``score`` histogram to ``out`` (PNG, atomically).

    Returns the plotted groups (name, values, role).
    """
    plotted = read_groups(scores, groups, score, in_groups)
    fig = histogram_figure(plotted, score, f"{Path(scores).name}: {score.replace('_', ' ')} by group")
    save_figure(fig, out)
    return plotted
