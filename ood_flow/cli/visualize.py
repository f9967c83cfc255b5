"""``oodflow visualize``: each figure of the paper as one command that writes a PNG.

Every command parses, calls one ``plot_*`` function of :mod:`ood_flow.visualize` (which loads the
model and sources and writes the PNG atomically) and says on stderr what was written. Several
SOURCEs go into one figure (e.g. the in-distribution and an OOD set side by side).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ood_flow.cli import common, help_page, options
from ood_flow.errors import InputError


def _viz():
    """The figures' module, imported when a figure is drawn (matplotlib and torch are slow to import)."""
    from ood_flow import visualize

    return visualize

visualize_app = typer.Typer(no_args_is_help=True, help="Figures of the paper as PNG files (no display needed).",
                            cls=help_page.Group, context_settings=help_page.CONTEXT)

FIGURE, OUTPUT = "Figure", "Output"
Sources = typer.Argument(..., help="One or more SOURCEs (dataset[:split], default split test; folder; image; "
                         ".npy/.npz; .h5), e.g. the in-distribution set and an OOD set.")
Model = typer.Option(..., "--model", "-m", metavar="FILE", rich_help_panel=FIGURE, help="Model file (.pt or .h5).")
Out = typer.Option(..., "--out", "-o", metavar="FILE", rich_help_panel=OUTPUT, help="PNG file to write (.png).")
Overwrite = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                         help="Replace an existing PNG at --out (never any other file).")
Count = typer.Option(8, "--count", "-n", min=1, metavar="N", rich_help_panel=FIGURE, help="Images per source.")
SeedOpt = typer.Option(0, "--seed", metavar="N", rich_help_panel=FIGURE, help="Seed of the dequantization noise (as "
                       "in `oodflow score`) and of any sampling.")


def latents(
    sources: List[str] = Sources, model: Path = Model, count: int = Count,
    average: int = typer.Option(1, "--average", "-k", min=1, metavar="K", rich_help_panel=FIGURE,
                                help="Show the mean latent over K dequantization draws (the input's edges appear, "
                                "paper Fig. 10)."),
    bn_train: bool = typer.Option(False, "--bn-train", rich_help_panel=FIGURE, help="Batch norm in train mode: "
                                  "statistics of each source's own batch (paper Fig. 2), not the stored ones."),
    seed: int = SeedOpt, data_dir: Optional[str] = options.DataDir, resize: bool = options.Resize,
    grayscale: bool = options.Grayscale, rgb: bool = options.Rgb, out: Path = Out, overwrite: bool = Overwrite,
    device: str = options.device_option(), quiet: bool = options.Quiet,
) -> None:
    """Inputs and their latents z, un-squeezed to image shape (paper Fig. 2, 10; Appendix E).

    Each input is titled with its bits/dim; the latents of all sources share one colour scale.
    """
    data = options.source_options(data_dir, resize=resize, grayscale=grayscale, rgb=rgb)
    report = common.Reporter("latents", quiet)
    common.run(lambda: _viz().plot_latents(sources, model, out, count=count, average=average, bn_train=bn_train,
                                        seed=seed, device=device, options=data, progress=report.progress,
                                        overwrite=overwrite),
               lambda r: common.message(f"wrote {r.path}: inputs and latents of {', '.join(r.names)}", quiet), report)


def coupling(
    sources: List[str] = Sources, model: Path = Model,
    index: int = typer.Option(0, "--index", "-i", min=0, metavar="N", rich_help_panel=FIGURE,
                              help="Which input of each source (0 = the first)."),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="N,...", rich_help_panel=FIGURE,
                                         help="Coupling indices to show (negative counts from the end) (default: "
                                         "all, or 12 evenly spaced)."),
    seed: int = SeedOpt, data_dir: Optional[str] = options.DataDir, resize: bool = options.Resize,
    grayscale: bool = options.Grayscale, rgb: bool = options.Rgb, out: Path = Out, overwrite: bool = Overwrite,
    device: str = options.device_option(), quiet: bool = options.Quiet,
) -> None:
    """Each coupling layer's input, -t, s and output for one input per source (paper Fig. 1b-c, 3, 11, 12).

    -t is shown because the coupling computes (x + t) * exp(s): where -t looks like the input, the
    st-network predicts the changed pixels from their neighbours.
    """
    chosen = _ints(layers, "--layers")
    data = options.source_options(data_dir, resize=resize, grayscale=grayscale, rgb=rgb)
    report = common.Reporter("coupling", quiet)
    common.run(lambda: _viz().plot_coupling(sources, model, out, index=index, layers=chosen, seed=seed, device=device,
                                         options=data, progress=report.progress, overwrite=overwrite),
               lambda r: common.message(f"wrote {r.path}: couplings {', '.join(map(str, r.layers))} of {r.couplings} "
                                        f"for {', '.join(r.names)}", quiet), report)


def samples(
    model: Path = Model,
    count: int = typer.Option(64, "--count", "-n", min=1, metavar="N", rich_help_panel=FIGURE,
                              help="Samples per temperature."),
    temperature: List[float] = typer.Option([1.0], "--temperature", "-t", metavar="T", rich_help_panel=FIGURE,
                                            help="Scale of the base distribution's standard deviation; repeat for one "
                                            "panel each."),
    seed: int = SeedOpt, out: Path = Out, overwrite: bool = Overwrite, device: str = options.device_option(),
    quiet: bool = options.Quiet,
) -> None:
    """A grid of samples per temperature (paper Fig. 17); for a tabular model, a heat map of sample vectors."""
    temps = ", ".join(f"{t:g}" for t in temperature)
    report = common.Reporter("samples", quiet)
    common.run(lambda: _viz().plot_samples(model, out, count=count, temperatures=temperature, seed=seed, device=device,
                                        progress=report.progress, overwrite=overwrite),
               lambda r: common.message(f"wrote {r.path}: {count} samples at temperature {temps}", quiet), report)


def resample(
    sources: List[str] = Sources, model: Path = Model,
    box: int = typer.Option(10, "--box", min=1, metavar="N", rich_help_panel=FIGURE,
                            help="Side of the centred square whose latents are re-sampled."),
    count: int = Count, seed: int = SeedOpt, data_dir: Optional[str] = options.DataDir,
    resize: bool = options.Resize, grayscale: bool = options.Grayscale, rgb: bool = options.Rgb, out: Path = Out,
    overwrite: bool = Overwrite, device: str = options.device_option(), quiet: bool = options.Quiet,
) -> None:
    """Originals and reconstructions after re-sampling the latents of a centred box (paper Fig. 16, App. J.1)."""
    data = options.source_options(data_dir, resize=resize, grayscale=grayscale, rgb=rgb)
    report = common.Reporter("resample", quiet)
    common.run(lambda: _viz().plot_resample(sources, model, out, box=box, count=count, seed=seed, device=device,
                                         options=data, progress=report.progress, overwrite=overwrite),
               lambda r: common.message(f"wrote {r.path}: {box}x{box} box ({r.latents} latents) re-sampled for "
                                        f"{', '.join(r.names)}", quiet), report)


def histogram(
    scores: Path = typer.Argument(..., help="Score file written by `oodflow score`."),
    groups: Optional[str] = typer.Option(None, "--groups", metavar="GROUP,...", rich_help_panel=FIGURE,
                                         help="Groups to plot (default: all)."),
    in_dist: Optional[str] = typer.Option(None, "--in-dist", metavar="GROUP,...", rich_help_panel=FIGURE,
                                          help="In-distribution groups, filled (default: the groups of the first "
                                          "group's dataset, e.g. fashionmnist-*)."),
    score: str = typer.Option("log_likelihood", "--score", metavar="NAME", rich_help_panel=FIGURE,
                              help="Per-sample score to plot, e.g. log_likelihood (paper Fig. 1a) or bits_per_dim."),
    out: Path = Out, overwrite: bool = Overwrite, quiet: bool = options.Quiet,
) -> None:
    """Overlaid density histograms of a score file's groups (paper Fig. 1a, 8): in-distribution filled, OOD outlined."""
    common.run(lambda: _viz().plot_histogram(scores, out, groups=_names(groups), in_groups=_names(in_dist), score=score,
                                          overwrite=overwrite),
               lambda r: common.message(f"wrote {r.path}: {score} histogram of " + ", ".join(
                   f"{g.name} ({'in' if g.in_dist else 'OOD'}, n={len(g.values)})" for g in r.groups), quiet))


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text: Optional[str], what: str) -> Optional[list[int]]:
    try:
        return [int(t) for t in _names(text)] if text else None
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def register(app: typer.Typer) -> None:
    for fn in (latents, coupling, samples, resample, histogram):
        common.command(visualize_app, fn)
    app.add_typer(visualize_app, name="visualize", help="Figures of the paper as PNG files: latents, coupling, "
                  "samples, resample, histogram.")
