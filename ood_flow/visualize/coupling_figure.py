"""The coupling-layer figure (paper, Fig. 1b-c, 3, 11, 12): input, -t, s and output of each coupling.

Rows are coupling layers; each source gets four columns side by side, so an in-distribution and
an OOD input are compared on the same colour scales in every row. The shift is shown as ``-t``:
the coupling computes ``(x + t) * exp(s)``, so where the st-network predicts the changed pixels
from their neighbours, ``-t`` looks like the input itself (the paper's point: it does so for OOD
inputs just as well). Positions a coupling leaves unchanged are painted teal (``-t``) and grey
(``s``).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ood_flow.errors import InputError
from ood_flow.visualize.coupling import CouplingView
from ood_flow.visualize.panels import (colorbar, new_figure, robust_range, row_label, show,
                                       symmetric_range)

COLUMNS = ("input x", "-t (predicted x)", "s (log-scale)", "output y")
SCALE_OF_COLUMN = (0, 1, 2, 0)  # x and y share a colour scale; -t and s have their own
MAX_ROWS = 12


def pick_layers(total: int, requested: list[int] | None = None, limit: int = MAX_ROWS) -> list[int]:
    """Coupling indices to show: ``requested`` (negative counts from the end), else all, else ``limit``
    evenly spaced ones including the first and the last."""
    if requested:
        bad = [i for i in requested if not -total <= i < total]
        if bad:
            raise InputError(f"--layers {bad[0]} is out of range: the model has {total} couplings (0 to {total - 1})")
        return list(dict.fromkeys(i % total for i in requested))
    if total <= limit:
        return list(range(total))
    return sorted({round(k * (total - 1) / (limit - 1)) for k in range(limit)})


def coupling_figure(names: list[str], views: list[list[CouplingView]], layers: list[int], model: str) -> Figure:
    """Rows ``layers`` of every source's views (``views[source][coupling]``, batch of one input each)."""
    n_src, rows = len(names), len(layers)
    widths = []
    for k in range(n_src):
        widths += [1.0] * 4 + ([0.25] if k < n_src - 1 else [])
    bars = [len(widths) + 1, len(widths) + 3, len(widths) + 5]  # three colour bars, each after a narrow spacer
    widths += [0.07, 0.07, 0.3, 0.07, 0.3, 0.07]
    fig = new_figure(1.3 * 4 * n_src + 3.2, 1.3 * rows + 1.1)
    grid = fig.add_gridspec(rows, len(widths), width_ratios=widths)
    for r, layer in enumerate(layers):
        row = [v[layer] for v in views]
        first_ax, images = _draw_row(fig, grid, r, row, names, first=(r == 0))
        for col, im, label in zip(bars, images, ("x, y", "-t", "s")):
            colorbar(fig, im, label, cax=fig.add_subplot(grid[r, col]))
        row_label(first_ax, _row_text(row[0]))
    fig.suptitle(f"{model}: coupling layers for {', '.join(names)}\n"
                 "-t and s where the coupling changes the input (dark blue / grey: left unchanged)\n"
                 "deeper couplings un-squeezed to image layout", fontsize=9, wrap=True)
    return fig


def _row_text(view: CouplingView) -> str:
    shape = "x".join(str(d) for d in view.shape)
    scale = "" if view.scale == 0 else f"\n{view.scale} squeeze(s)"
    return f"coupling {view.index}\n{view.mask}\non {shape}{scale}"


def _draw_row(fig: Figure, grid, r: int, row: list[CouplingView], names: list[str], first: bool):
    """One coupling for every source, on colour scales shared by the sources: one for x and y, one
    for -t (over the changed positions) and a symmetric one for s. Returns the row's first panel and
    an image per scale (for the colour bars)."""
    lo, hi = robust_range([v.input[0] for v in row])
    t_lo, t_hi = robust_range([-v.t[0][v.change] for v in row])
    half = symmetric_range([v.s[0][v.change] for v in row])
    col, axes, images = 0, [], {}
    for k, v in enumerate(row):
        hide = ~v.change.any(dim=0)
        s_mean = v.s[0].mean(0, keepdim=True)  # colour images: s averaged over channels, on the diverging map
        maps = [(v.input[0], lo, hi, "gray", None), (-v.t[0], t_lo, t_hi, "gray", hide),
                (s_mean, -half, half, "RdBu_r", hide), (v.output[0], lo, hi, "gray", None)]
        for c, (m, a, b, cmap, mask) in enumerate(maps):
            ax = fig.add_subplot(grid[r, col + c])
            im = show(ax, m, a, b, cmap, hide=mask)
            images.setdefault(SCALE_OF_COLUMN[c], im)
            axes.append(ax)
            if first:
                ax.set_title(f"{names[k]}\n{COLUMNS[c]}" if c == 0 else COLUMNS[c], fontsize=8)
        col += 5
    return axes[0], [images[0], images[1], images[2]]
