"""Shared drawing helpers: image panels, colour bars, panel counting and atomic PNG writing.

Figures are ``matplotlib.figure.Figure`` objects drawn on their own Agg canvas (no display
needed), never through pyplot's global state and without ``matplotlib.use``: importing oodflow
leaves the backend of the program that imports it (a notebook, say) as it was, and figures are
garbage-collected like any object and never pop up a window.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure

from ood_flow.errors import UsageError
from ood_flow.fileio import PNG, atomic_write, check_output

COLORBAR = "<colorbar>"  # label of colour-bar axes (matplotlib's own convention)
# Positions a panel does not apply to (e.g. unchanged by a coupling): a muted colour off the map's
# own hues, dark for grey maps (most images have dark backgrounds, so the figure still reads).
HIDDEN_COLORS = {"gray": "#2b4a5c", "RdBu_r": "#9a9a9a"}
HIDDEN_DEFAULT = "#2b4a5c"


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout (titles and colour bars never overlap), on an Agg canvas. A layout does not
    shrink a long title: give ``suptitle`` ``wrap=True`` (wrapped to the figure's width)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_numpy(v) -> np.ndarray:
    return v.detach().cpu().double().numpy() if hasattr(v, "detach") else np.asarray(v, dtype=np.float64)


def show(ax: Axes, v, lo: float, hi: float, cmap: str = "gray", hide=None):
    """Draw a (C, H, W) map: one channel through ``cmap``, three channels as RGB scaled by [lo, hi].

    Positions where ``hide`` (bool (H, W)) is true are painted :data:`HIDDEN_COLORS` [cmap]. Other channel
    counts show the channel mean. Returns the image (for a colour bar).
    """
    v = to_numpy(v)
    hide = None if hide is None else to_numpy(hide).astype(bool)
    if v.shape[0] == 3:
        rgb = np.clip((v.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-12), 0, 1)
        if hide is not None:
            rgb[hide] = to_rgb(HIDDEN_DEFAULT)
        ax.imshow(rgb, interpolation="nearest")
        im = ScalarMappable(norm=Normalize(lo, hi), cmap="gray")  # what a colour bar shows: the per-channel scale
    else:
        a = v.mean(axis=0)
        if hide is not None:
            a = np.ma.masked_array(a, mask=hide)
        cm = colormaps[cmap].with_extremes(bad=HIDDEN_COLORS.get(cmap, HIDDEN_DEFAULT))
        im = ax.imshow(a, cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def colorbar(fig: Figure, im, label: str, *, ax=None, cax: Axes | None = None, **kwargs):
    """A labelled colour bar, marked so :func:`panel_count` skips it."""
    bar = fig.colorbar(im, ax=ax, cax=cax, **kwargs)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.ax.set_label(COLORBAR)
    return bar


def panel_count(fig: Figure) -> int:
    """Number of panels of a figure (visible axes that are not colour bars)."""
    return sum(1 for ax in fig.axes if ax.get_label() != COLORBAR and ax.get_visible())


def robust_range(values, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Percentile range of the finite values (a degenerate range is widened to width 1)."""
    a = np.concatenate([to_numpy(v).ravel() for v in values])
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(a, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def symmetric_range(values, q: float = 99.0) -> float:
    """Half-width of a colour scale centred at 0: the ``q``-th percentile of ``|v|``."""
    a = np.abs(np.concatenate([to_numpy(v).ravel() for v in values]))
    a = a[np.isfinite(a)]
    top = float(np.percentile(a, q)) if a.size else 0.0
    return top if top > 0 else 1.0


def row_label(ax: Axes, text: str) -> None:
    """A label to the left of a row of image panels."""
    ax.set_ylabel(text, fontsize=8, rotation=0, ha="right", va="center", labelpad=4)


def check_figure_output(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Fail before any work if a figure could not be written to ``path``: it must end in .png, and an
    existing file is replaced only with ``overwrite`` and only when it is a PNG image."""
    if Path(path).suffix.lower() != ".png":
        raise UsageError(f"--out {path}: figures are written as PNG; give a file name ending in .png")
    check_output(path, overwrite=overwrite, kind=PNG)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100, *, overwrite: bool = False) -> None:
    """Write ``fig`` as PNG atomically (the file appears complete or not at all).

    An existing file is replaced only with ``overwrite``, and only when it is a PNG image.
    """
    with atomic_write(path, overwrite=overwrite, kind=PNG) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
