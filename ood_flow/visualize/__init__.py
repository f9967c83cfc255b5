"""Figures of the paper from a model file or a score file; every figure function returns a matplotlib Figure.

- :mod:`~ood_flow.visualize.run`: ``plot_latents``, ``plot_coupling``, ``plot_samples``,
  ``plot_resample``, ``plot_histogram``: from files to a PNG file (``oodflow visualize``);
- :mod:`~ood_flow.visualize.latents`: latents, box re-sampling and samples computed from a flow;
- :mod:`~ood_flow.visualize.coupling`: every coupling's input, ``s``, ``t`` and output in image layout;
- :mod:`~ood_flow.visualize.figures`, :mod:`~ood_flow.visualize.coupling_figure`,
  :mod:`~ood_flow.visualize.histogram`: the figures; :func:`save_figure` writes a PNG atomically.

Nothing here prints, shows a window or exits.
"""

from ood_flow.visualize.coupling import CouplingView, coupling_views
from ood_flow.visualize.coupling_figure import coupling_figure, pick_layers
from ood_flow.visualize.figures import SourceImages, latents_figure, resample_figure, samples_figure
from ood_flow.visualize.histogram import histogram_figure, read_groups, write_histogram
from ood_flow.visualize.latents import box_mask, draw_samples, image_latents, resample_box
from ood_flow.visualize.panels import panel_count, save_figure
from ood_flow.visualize.run import Plotted, plot_coupling, plot_histogram, plot_latents, plot_resample, plot_samples

__all__ = ["CouplingView", "Plotted", "SourceImages", "box_mask", "coupling_figure", "coupling_views", "draw_samples",
           "histogram_figure", "image_latents", "latents_figure", "panel_count", "pick_layers", "plot_coupling",
           "plot_histogram", "plot_latents", "plot_resample", "plot_samples", "read_groups", "resample_box",
           "resample_figure", "samples_figure", "save_figure", "write_histogram"]
