"""Score histograms of the groups of a score file (paper, Fig. 1a and 8).

In-distribution groups are filled, OOD groups outlined; all groups share the bins and are drawn
as densities, so groups of different sizes compare directly. Which groups are in-distribution:
the caller says, or else the groups of the same dataset as the first group listed (its name
without a trailing split: ``fashionmnist-train`` and ``fashionmnist-test`` for ``fashionmnist-*``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ood_flow import store
from ood_flow.errors import InputError
from ood_flow.visualize.panels import check_figure_output, new_figure, save_figure

SPLIT_SUFFIX = re.compile(r"[-_:](train|test|val|valid|validation|extra)$")
AXIS_LABELS = {
    "log_likelihood": "log-likelihood (nats per image; higher = more in-distribution)",
    "bits_per_dim": "bits per dimension (lower = more in-distribution)",
}
IN_COLORS = ("#1f77b4", "#2ca02c", "#17becf", "#9467bd")
OOD_COLORS = ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass
class Group:
    """The scores of one group and whether it is in-distribution."""

    name: str
    values: np.ndarray
    in_dist: bool


def dataset_stem(group: str) -> str:
    """A group name without a trailing split (``mnist-test`` -> ``mnist``)."""
    return SPLIT_SUFFIX.sub("", group)


def read_groups(path: str | os.PathLike, groups: list[str] | None, score: str,
                in_groups: list[str] | None = None) -> list[Group]:
    """Scores ``score`` of ``groups`` (default: every group) of a score file, with their role."""
    present = store.list_groups(path)
    names = list(dict.fromkeys(groups)) if groups else present
    if not names:
        raise InputError(f"{os.fspath(path)}: the score file holds no groups")
    if in_groups is None:
        stem = dataset_stem(names[0])
        in_groups = [g for g in names if dataset_stem(g) == stem]
    unknown = [g for g in in_groups if g not in names]
    if unknown:
        raise InputError(f"--in-dist {unknown[0]!r} is not among the groups shown: {', '.join(names)}")
    return [Group(g, np.asarray(store.read_scores(path, g, score), dtype=np.float64), g in in_groups) for g in names]


def histogram_figure(groups: list[Group], score: str, title: str, bins: int = 60) -> Figure:
    """One panel: a density histogram per group on shared bins, legend with names, roles and counts.

    Bins span all finite values except far outliers (see :func:`plot_range`), so that a few extreme
    scores do not squash the rest; how many values of a group fall outside is said in its legend.
    """
    finite = np.concatenate([g.values[np.isfinite(g.values)] for g in groups])
    if finite.size == 0:
        raise InputError(f"no finite '{score}' values to plot")
    lo, hi = plot_range(finite)
    edges = np.linspace(lo, hi, bins + 1)
    fig = new_figure(7.5, 4.3)
    ax = fig.add_subplot()
    n_in = n_ood = 0
    for g in groups:
        color = IN_COLORS[n_in % len(IN_COLORS)] if g.in_dist else OOD_COLORS[n_ood % len(OOD_COLORS)]
        n_in, n_ood = n_in + g.in_dist, n_ood + (not g.in_dist)
        shown = g.values[np.isfinite(g.values) & (g.values >= lo) & (g.values <= hi)]
        label = f"{g.name} ({'in-distribution' if g.in_dist else 'OOD'}, n={len(g.values)}{_outside(g, shown)})"
        if len(shown) == 0:
            ax.plot([], [], color=color, label=label)
        elif g.in_dist:
            ax.hist(shown, bins=edges, density=True, color=color, alpha=0.45, label=label)
        else:
            ax.hist(shown, bins=edges, density=True, histtype="step", linewidth=2.0, color=color, label=label)
    ax.set(xlabel=AXIS_LABELS.get(score, score), ylabel="density", title=title)
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_range(values: np.ndarray) -> tuple[float, float]:
    """The range of ``values``, cut at half the 1st-99th percentile width beyond those percentiles.

    Normal-looking data is never cut (that reaches about 4.7 standard deviations); a score file
    with a few extreme values (say -1e6 nats for a broken image) still shows the bulk readably.
    """
    p1, p99 = np.percentile(values, [1, 99])
    margin = 0.5 * (p99 - p1)
    lo, hi = max(values.min(), p1 - margin), min(values.max(), p99 + margin)
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(hi) + 0.5)


def _outside(g: Group, shown: np.ndarray) -> str:
    k = len(g.values) - len(shown)
    return f", {k} outside the plotted range" if k else ""


def write_histogram(scores: str | os.PathLike, groups: list[str] | None, score: str, out: str | os.PathLike, *,
                    in_groups: list[str] | None = None, overwrite: bool = False) -> list[Group]:
    """Read ``groups`` of a score file and write their ``score`` histogram to ``out`` (PNG, atomically; an
    existing PNG is replaced only with ``overwrite``, any other file never).

    Returns the plotted groups (name, values, role).
    """
    check_figure_output(out, overwrite)
    plotted = read_groups(scores, groups, score, in_groups)
    fig = histogram_figure(plotted, score, f"{os.path.basename(scores)}: {score.replace('_', ' ')} by group")
    save_figure(fig, out, overwrite=overwrite)
    return plotted
