"""Figures of inputs and latents: latents (Fig. 2, 10), box re-sampling (Fig. 16) and samples (Fig. 17).

Each function takes what :mod:`ood_flow.visualize.latents` computed and returns a
``matplotlib.figure.Figure``; nothing is shown or written here (see :func:`panels.save_figure`).
Several sources appear as stacked row groups with the same columns, so in-distribution and OOD
images are compared panel by panel on one colour scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ood_flow.visualize.latents import Latents, Resampled
from ood_flow.visualize.panels import (colorbar, new_figure, robust_range, row_label, show, symmetric_range,
                                       to_numpy)

PANEL = 1.15  # inches per image panel
LATENT_CMAP = "RdBu_r"


@dataclass
class SourceImages:
    """Images of one source with a name for row labels; ``x`` is uint8 (N, C, H, W)."""

    name: str
    x: Tensor


def _grid(rows: int, cols: int, extra_width: float = 1.4, extra_height: float = 0.7) -> tuple[Figure, np.ndarray]:
    fig = new_figure(PANEL * cols + extra_width, PANEL * rows + extra_height)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def latents_figure(sources: list[SourceImages], latents: list[Latents], model: str) -> Figure:
    """Per source, a row of inputs (titled with their bits/dim) above a row of their latents ``z``.

    All latent panels share one symmetric colour scale, so the in-distribution and OOD latents
    can be compared directly; under the model each latent value is standard normal.
    """
    cols = max(len(s.x) for s in sources)
    fig, axes = _grid(2 * len(sources), cols)
    half = symmetric_range([lat.z for lat in latents])
    im = None
    for i, (src, lat) in enumerate(zip(sources, latents)):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        for j in range(cols):
            if j >= len(src.x):
                top[j].set_visible(False)
                bottom[j].set_visible(False)
                continue
            show(top[j], src.x[j].float() / 255.0, 0.0, 1.0)
            top[j].set_title(f"{float(lat.bits_per_dim[j]):.2f} bits/dim", fontsize=7)
            im = show(bottom[j], lat.z[j], -half, half, LATENT_CMAP)
        row_label(top[0], f"{src.name}\ninput")
        row_label(bottom[0], "latent z")
    colorbar(fig, im, "z  (N(0, 1) under the model)", ax=axes, shrink=0.6)
    fig.suptitle(f"{model}: inputs and latents z (un-squeezed to image shape)\n{_latent_note(latents[0])}",
                 fontsize=10, wrap=True)
    return fig


def _latent_note(lat: Latents) -> str:
    if not lat.has_batchnorm:
        mode = "no batch norm in this model" + (" (--bn-train changes nothing)" if lat.bn_train else "")
    elif lat.bn_train:
        mode = "batch norm in train mode (statistics of each source's batch)"
    else:
        mode = "batch norm in eval mode (stored statistics)"
    draws = f"mean over {lat.draws} dequantization draws" if lat.draws > 1 else "one dequantization draw"
    return f"{mode}; {draws}"


def resample_figure(sources: list[str], results: list[Resampled], model: str, box: int) -> Figure:
    """Per source: originals, reconstructions after re-sampling the box's latents, and |difference|."""
    cols = max(len(r.original) for r in results)
    fig, axes = _grid(3 * len(results), cols)
    diff_max = max(float((r.resampled - r.original).abs().max()) for r in results) or 1.0
    im = None
    for i, (name, res) in enumerate(zip(sources, results)):
        rows = axes[3 * i: 3 * i + 3]
        for j in range(cols):
            if j >= len(res.original):
                for ax in rows[:, j]:
                    ax.set_visible(False)
                continue
            show(rows[0, j], res.original[j], 0.0, 1.0)
            show(rows[1, j], res.resampled[j], 0.0, 1.0)
            im = show(rows[2, j], (res.resampled[j] - res.original[j]).abs(), 0.0, diff_max, "magma")
            for ax in rows[:2, j]:
                _outline(ax, res.box)
        row_label(rows[0, 0], f"{name}\noriginal")
        row_label(rows[1, 0], "box latents\nre-sampled")
        row_label(rows[2, 0], "|difference|")
    colorbar(fig, im, "|re-sampled - original| (pixel value in [0, 1])", ax=axes, shrink=0.5)
    n = results[0].count
    fig.suptitle(f"{model}: the {n} latent variables of the centred {box}x{box} box re-sampled from N(0, I)\n"
                 "(red: the box; latent positions found by pushing its mask through the flow's squeezes)",
                 fontsize=10, wrap=True)
    return fig


def _outline(ax, box: Tensor) -> None:
    """A red rectangle around the True region of a (C, H, W) box mask."""
    rows, cols = np.nonzero(to_numpy(box[0]))
    top, left = rows.min(), cols.min()
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), cols.max() - left + 1, rows.max() - top + 1,
                           fill=False, edgecolor="red", linewidth=1.0))


def samples_figure(samples: list[Tensor], temperatures: list[float], model: str, kind: str, seed: int) -> Figure:
    """One panel per temperature: a mosaic of images, or a heat map of vectors (one row per sample)."""
    n = len(temperatures)
    if kind == "image":
        mosaics = [mosaic(s) for s in samples]
        size = min(6.0, 0.9 * math.sqrt(len(samples[0])) + 1.5)
        fig = new_figure(size * n + 0.4, size + 0.7)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, m, t in zip(axes, mosaics, temperatures):
            show(ax, m, 0.0, 1.0)
            ax.set_title(f"temperature {t:g}", fontsize=9)
    else:
        fig = new_figure(4.5 * n + 1.0, 4.0)
        axes = fig.subplots(1, n, squeeze=False)[0]
        lo, hi = robust_range(samples)
        for ax, s, t in zip(axes, samples, temperatures):
            im = ax.imshow(to_numpy(s), aspect="auto", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set(title=f"temperature {t:g}", xlabel="feature", ylabel="sample")
        colorbar(fig, im, "feature value", ax=list(axes), shrink=0.8)
    fig.suptitle(f"{model}: {len(samples[0])} samples per temperature (seed {seed}; same base noise in each panel)",
                 fontsize=10, wrap=True)
    return fig


def mosaic(images: Tensor, pad: int = 1) -> Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, rows*(H+pad)-pad, cols*(W+pad)-pad) image, white between tiles."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = images.new_ones((c, rows * (h + pad) - pad, cols * (w + pad) - pad))
    for k in range(n):
        r, q = divmod(k, cols)
        out[:, r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = images[k]
    return out
