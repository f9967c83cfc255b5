"""``oodflow visualize``: each figure of the paper as one command that writes a PNG.

Every command parses, loads the model and sources, calls :mod:`ood_flow.visualize`, writes the
PNG atomically and says on stderr what was written. Several SOURCEs go into one figure (e.g. the
in-distribution and an OOD set side by side).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer

from ood_flow.cli import common, options
from ood_flow.data import conform, load_source
from ood_flow.errors import InputError
from ood_flow.flows import Flow, load_model
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.score.likelihood import sample_keys
from ood_flow import visualize as viz
from ood_flow.visualize.cli_support import write_histogram
from ood_flow.visualize.latents import dequantized_draws, require_image_flow

visualize_app = typer.Typer(no_args_is_help=True, help="Figures of the paper as PNG files (no display needed).")

Sources = typer.Argument(..., help="One or more SOURCEs (dataset[:split], default split test; folder; image; "
                         ".npy/.npz; .h5), e.g. the in-distribution set and an OOD set.")
Model = typer.Option(..., "--model", "-m", help="Model file (.pt or .h5).")
Out = typer.Option(..., "--out", "-o", help="PNG file to write.")
Count = typer.Option(8, "--count", "-n", min=1, help="Images per source.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the dequantization noise (as in `oodflow score`) and of any "
                       "sampling.")
DeviceOpt = typer.Option("auto", "--device", callback=common.choice("auto", "cpu", "cuda"), help="auto, cpu or cuda.")


@contextlib.contextmanager
def _steps(quiet: bool, total: int, what: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over ``total`` steps on stderr; yields ``step(info)`` to advance it."""
    bar = common.progress(quiet)
    with bar:
        task = bar.add_task(what, total=total, info="")
        yield lambda info="": bar.update(task, advance=1, info=info)


def _model(path: Path, device: str) -> Flow:
    return load_model(path, device=common.resolve_device(device))


def _load(specs: list[str], flow: Flow, limit: int, data_dir, resize: bool, grayscale: bool, rgb: bool) -> list:
    """Every source, loaded and checked against the model before any progress bar starts (so a bad
    source fails with just its one error line)."""
    loaded = []
    for spec in specs:
        ds = load_source(spec, split="test", data_dir=data_dir, limit=limit)
        loaded.append(conform(ds, flow.input_shape, resize=resize, grayscale=grayscale, rgb=rgb))
    return loaded


def _coupling_count(flow: Flow) -> int:
    return sum(isinstance(m, AffineCoupling) for m in flow.modules())


def latents(
    sources: List[str] = Sources, model: Path = Model, out: Path = Out, count: int = Count,
    average: int = typer.Option(1, "--average", "-k", min=1, help="Show the mean latent over K dequantization "
                                "draws (the input's edges appear, paper Fig. 10)."),
    bn_train: bool = typer.Option(False, "--bn-train", help="Batch norm in train mode: statistics of each "
                                  "source's own batch (paper Fig. 2), not the stored ones."),
    seed: int = SeedOpt, data_dir: Optional[str] = options.DataDir, resize: bool = options.Resize,
    grayscale: bool = options.Grayscale, rgb: bool = options.Rgb, device: str = DeviceOpt, quiet: bool = options.Quiet,
) -> None:
    """Inputs and their latents z, un-squeezed to image shape (paper Fig. 2, 10; Appendix E).

    Each input is titled with its bits/dim; the latents of all sources share one colour scale.
    """
    flow = _model(model, device)
    require_image_flow(flow, "visualize latents")
    shown, lats = [], []
    loaded = _load(sources, flow, count, data_dir, resize, grayscale, rgb)
    with _steps(quiet, len(sources) + 1, "latents") as step:
        for ds in loaded:
            lats.append(viz.image_latents(flow, ds.x, sample_keys(ds.ids), average=average, seed=seed,
                                          bn_train=bn_train))
            shown.append(viz.SourceImages(ds.name, ds.x))
            step(ds.name)
        viz.save_figure(viz.latents_figure(shown, lats, f"{flow.name} ({model.name})"), out)
        step("written")
    common.message(f"wrote {out}: inputs and latents of {', '.join(s.name for s in shown)}", quiet)


def coupling(
    sources: List[str] = Sources, model: Path = Model, out: Path = Out,
    index: int = typer.Option(0, "--index", "-i", min=0, help="Which input of each source (0 = the first)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated coupling indices to show "
                                         "(negative counts from the end) [default: all, or 12 evenly spaced]."),
    seed: int = SeedOpt, data_dir: Optional[str] = options.DataDir, resize: bool = options.Resize,
    grayscale: bool = options.Grayscale, rgb: bool = options.Rgb, device: str = DeviceOpt, quiet: bool = options.Quiet,
) -> None:
    """Each coupling layer's input, -t, s and output for one input per source (paper Fig. 1b-c, 3, 11, 12).

    -t is shown because the coupling computes (x + t) * exp(s): where -t looks like the input, the
    st-network predicts the changed pixels from their neighbours.
    """
    flow = _model(model, device)
    require_image_flow(flow, "visualize coupling")
    names, views = [], []
    loaded = _load(sources, flow, index + 1, data_dir, resize, grayscale, rgb)
    for spec, ds in zip(sources, loaded):
        if index >= len(ds):
            raise InputError(f"{spec}: --index {index} is out of range: the source holds {len(ds)} samples")
    chosen = viz.pick_layers(_coupling_count(flow), _ints(layers, "--layers"))
    with _steps(quiet, len(sources) + 1, "coupling") as step:
        for ds in loaded:
            x = dequantized_draws(ds.x[index:index + 1], sample_keys(ds.ids[index:index + 1]), seed, 1)
            views.append(viz.coupling_views(flow, x.to(next(flow.parameters()).device))[0])
            names.append(f"{ds.name} #{index}")
            step(ds.name)
        viz.save_figure(viz.coupling_figure(names, views, chosen, f"{flow.name} ({model.name})"), out)
        step("written")
    common.message(f"wrote {out}: couplings {_span(chosen)} of {len(views[0])} for {', '.join(names)}", quiet)


def samples(
    model: Path = Model, out: Path = Out,
    count: int = typer.Option(64, "--count", "-n", min=1, help="Samples per temperature."),
    temperature: List[float] = typer.Option([1.0], "--temperature", "-t", min=0.0, help="Scale of the base "
                                            "distribution's standard deviation; repeat for one panel each."),
    seed: int = SeedOpt, device: str = DeviceOpt, quiet: bool = options.Quiet,
) -> None:
    """A grid of samples per temperature (paper Fig. 17); for a tabular model, a heat map of sample vectors."""
    flow = _model(model, device)
    drawn = []
    with _steps(quiet, len(temperature) + 1, "samples") as step:
        for t in temperature:
            drawn.append(viz.draw_samples(flow, count, t, seed))
            step(f"T={t:g}")
        viz.save_figure(viz.samples_figure(drawn, temperature, f"{flow.name} ({model.name})", flow.kind, seed), out)
        step("written")
    temps = ", ".join(f"{t:g}" for t in temperature)
    common.message(f"wrote {out}: {count} samples at temperature {temps}", quiet)


def resample(
    sources: List[str] = Sources, model: Path = Model, out: Path = Out,
    box: int = typer.Option(10, "--box", min=1, help="Side of the centred square whose latents are re-sampled."),
    count: int = Count, seed: int = SeedOpt, data_dir: Optional[str] = options.DataDir,
    resize: bool = options.Resize, grayscale: bool = options.Grayscale, rgb: bool = options.Rgb,
    device: str = DeviceOpt, quiet: bool = options.Quiet,
) -> None:
    """Originals and reconstructions after re-sampling the latents of a centred box (paper Fig. 16, App. J.1)."""
    flow = _model(model, device)
    require_image_flow(flow, "visualize resample")
    names, results = [], []
    viz.box_mask(flow.input_shape, box)  # a box too large fails here, before any work
    loaded = _load(sources, flow, count, data_dir, resize, grayscale, rgb)
    with _steps(quiet, len(sources) + 1, "resample") as step:
        for ds in loaded:
            results.append(viz.resample_box(flow, ds.x, sample_keys(ds.ids), box=box, seed=seed))
            names.append(ds.name)
            step(ds.name)
        viz.save_figure(viz.resample_figure(names, results, f"{flow.name} ({model.name})", box), out)
        step("written")
    common.message(f"wrote {out}: {box}x{box} box ({results[0].count} latents) re-sampled for {', '.join(names)}",
                   quiet)


def histogram(
    scores: Path = typer.Argument(..., help="Score file written by `oodflow score`."), out: Path = Out,
    groups: Optional[str] = typer.Option(None, "--groups", help="Comma-separated groups to plot (default: all)."),
    in_dist: Optional[str] = typer.Option(None, "--in-dist", help="Comma-separated in-distribution groups (filled) "
                                          "(default: the groups of the first group's dataset, e.g. fashionmnist-*)."),
    score: str = typer.Option("log_likelihood", "--score", help="Per-sample score to plot, e.g. log_likelihood "
                              "(paper Fig. 1a) or bits_per_dim."),
    quiet: bool = options.Quiet,
) -> None:
    """Overlaid density histograms of a score file's groups (paper Fig. 1a, 8): in-distribution filled, OOD outlined."""
    plotted = write_histogram(scores, _names(groups), score, out, in_groups=_names(in_dist))
    parts = ", ".join(f"{g.name} ({'in' if g.in_dist else 'OOD'}, n={len(g.values)})" for g in plotted)
    common.message(f"wrote {out}: {score} histogram of {parts}", quiet)


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text: Optional[str], what: str) -> Optional[list[int]]:
    try:
        return [int(t) for t in _names(text)] if text else None
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def _span(chosen: list[int]) -> str:
    return ", ".join(str(i) for i in chosen)


def register(app: typer.Typer) -> None:
    for fn in (latents, coupling, samples, resample, histogram):
        visualize_app.command(fn.__name__)(common.handle_errors(fn))
    app.add_typer(visualize_app, name="visualize", help="Figures of the paper as PNG files: latents, coupling, "
                  "samples, resample, histogram.")
