"""The report's figures as inline SVG: overlaid score histograms with the threshold, ROC and PR curves.

Drawn on :class:`matplotlib.figure.Figure` (no pyplot, no global state) and written as SVG with
glyphs as paths, so the page needs no font and prints sharply. Curves are thinned to at most
:data:`MAX_POINTS` points (the metrics in the table come from every sample, not from these).
"""

from __future__ import annotations

import functools
import io
import re
import textwrap

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from ood_flow.evaluate.metrics import dense_ranks
from ood_flow.visualize.histogram import AXIS_LABELS, IN_COLORS, OOD_COLORS, plot_range

MAX_POINTS = 400
RC = {"svg.fonttype": "path", "svg.hashsalt": "oodflow", "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
      "axes.spines.right": False, "legend.frameon": False}


def _styled(draw):
    """Draw (and write the SVG) under the report's style, leaving the global rcParams alone."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)

    return wrapper


@_styled
def histogram_svg(in_name: str, in_values: np.ndarray, ood: dict[str, np.ndarray], score: str, threshold: float,
                  tpr: float, bins: int = 60) -> str:
    """Density histograms on shared bins: in-distribution filled, each OOD group outlined; the threshold
    that keeps ``tpr`` of the in-distribution group as a dashed line."""
    groups = {in_name: in_values, **ood}
    finite = np.concatenate([v[np.isfinite(v)] for v in groups.values()])
    lo, hi = plot_range(finite) if finite.size else (-1.0, 1.0)
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(5.6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, values) in enumerate(groups.items()):
        shown = values[np.isfinite(values) & (values >= lo) & (values <= hi)]
        hidden = len(values) - len(shown)
        label = f"{_wrapped(name, 32)} (n={len(values)}" + (f", {hidden} off scale" if hidden else "") + ")"
        if i == 0:
            ax.hist(shown, bins=edges, density=True, color=IN_COLORS[0], alpha=0.45, label=label + ", in")
        else:
            ax.hist(shown, bins=edges, density=True, histtype="step", linewidth=1.8,
                    color=OOD_COLORS[(i - 1) % len(OOD_COLORS)], label=label)
    if np.isfinite(threshold) and lo <= threshold <= hi:
        ax.axvline(threshold, color="#333333", linestyle="--", linewidth=1.2,
                   label=f"threshold {threshold:.6g} (keeps {tpr:.0%} of in)")
    ax.set(xlabel=AXIS_LABELS.get(score, score.replace("_", " ")), ylabel="density")
    ax.set_yticks([])  # densities on shared bins compare by shape; their values say little
    fig.legend(fontsize=7.5, loc="outside upper center", ncols=2)
    return _svg(fig)


@_styled
def roc_svg(in_values: np.ndarray, ood: dict[str, np.ndarray], aurocs: dict[str, float]) -> str:
    """ROC curves (in-distribution positive) of each OOD group, with the chance diagonal."""
    fig, ax = _square("false positive rate (OOD accepted)", "true positive rate (in accepted)")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=1, linestyle=":")
    for i, (name, values) in enumerate(ood.items()):
        y, r = _labels_and_ranks(in_values, values)
        fpr, tpr, _ = roc_curve(y, r)
        ax.plot(*_thin(fpr, tpr), color=OOD_COLORS[i % len(OOD_COLORS)], linewidth=1.6,
                label=f"{_wrapped(name, 24)} (AUROC {aurocs[name]:.3f})")
    ax.legend(fontsize=7.5, loc="best")
    return _svg(fig)


@_styled
def pr_svg(in_values: np.ndarray, ood: dict[str, np.ndarray], auprs: dict[str, float]) -> str:
    """Precision-recall curves with in-distribution positive (AUPR-in); a dotted line at each base rate."""
    fig, ax = _square("recall (in accepted)", "precision (in among accepted)")
    base_rates = set()
    for i, (name, values) in enumerate(ood.items()):
        y, r = _labels_and_ranks(in_values, values)
        precision, recall, _ = precision_recall_curve(y, r)
        ax.plot(*_thin(recall, precision), color=OOD_COLORS[i % len(OOD_COLORS)], linewidth=1.6,
                label=f"{_wrapped(name, 24)} (AUPR-in {auprs[name]:.3f})")
        base_rates.add(round(float(y.mean()), 6))
    for rate in base_rates:
        ax.axhline(rate, color="#999999", linewidth=1, linestyle=":")
    ax.legend(fontsize=7.5, loc="best")
    return _svg(fig)


def _wrapped(name: str, width: int) -> str:
    """A group's name for a legend, on lines of at most ``width`` characters (broken after hyphens and spaces where
    it has them): a long name in one line made the histogram's legend wider than its figure and squeezed the ROC
    and PR axes to a fraction of theirs."""
    return "\n".join(textwrap.wrap(name, width)) or name


def _square(xlabel: str, ylabel: str):
    fig = Figure(figsize=(3.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, aspect="equal")
    return fig, ax


def _labels_and_ranks(in_values: np.ndarray, ood_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1 = in) and dense ranks, the decision values the metrics use (±inf keep their place)."""
    r_in, r_ood = dense_ranks(np.asarray(in_values, dtype=np.float64), np.asarray(ood_values, dtype=np.float64))
    return np.r_[np.ones(len(r_in)), np.zeros(len(r_ood))], np.r_[r_in, r_ood]


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points of a curve, evenly spaced along it, first and last kept."""
    if len(x) <= MAX_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(int))
    return x[keep], y[keep]


def _svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element to inline in HTML (no XML prolog, no date, unique ids)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return _METADATA.sub("", text[text.index("<svg"):])  # the RDF block names namespaces, nothing to show


_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_ID = re.compile(r'\bid="([^"]+)"')


def unique_ids(svg: str, prefix: str) -> str:
    """Prefix every ``id`` (and its references) so several inline SVGs on one page never collide."""
    ids = set(_ID.findall(svg))
    for name in sorted(ids, key=len, reverse=True):
        svg = svg.replace(f'id="{name}"', f'id="{prefix}-{name}"').replace(f"#{name})", f"#{prefix}-{name})")
        svg = svg.replace(f'href="#{name}"', f'href="#{prefix}-{name}"')
    return svg
