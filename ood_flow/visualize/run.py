"""The figures of ``oodflow visualize`` from files: load the model and sources, compute, write a PNG.

Each ``plot_*`` function checks the output (a new ``.png``, or an existing PNG with ``overwrite``) and
its numbers, resolves ``device`` (:func:`ood_flow.runtime.resolve`), loads what it needs, checks every
source against the model before any work, draws the figure, writes it atomically and returns a
:class:`Plotted` that says what it shows.
``progress(done, total)`` counts the sources computed and the final write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ood_flow.data import Dataset, SourceOptions, TrainedOn, read_source
from ood_flow.dequantize import dequantized_draws
from ood_flow.errors import InputError, UsageError
from ood_flow.flows import Flow, load_checkpoint
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.runtime import Runtime, resolve
from ood_flow.score.likelihood import sample_keys
from ood_flow.visualize.coupling import coupling_views
from ood_flow.visualize.coupling_figure import coupling_figure, pick_layers
from ood_flow.visualize.figures import SourceImages, latents_figure, resample_figure, samples_figure
from ood_flow.visualize.histogram import Group, write_histogram
from ood_flow.visualize.latents import box_mask, draw_samples, image_latents, require_image_flow, resample_box
from ood_flow.validation import check_number, check_seed
from ood_flow.visualize.panels import check_figure_output, save_figure

Progress = Callable[[int, int], None]


@dataclass
class Plotted:
    """A figure written: its file, the sources or groups shown, and what else it reports.

    Attributes:
        layers, couplings: the coupling indices shown and the model's count (coupling figure).
        latents: the number of latent variables re-sampled (resample figure).
        groups: the plotted groups with their roles (histogram).
    """

    path: Path
    names: list[str]
    layers: list[int] = field(default_factory=list)
    couplings: int = 0
    latents: int = 0
    groups: list[Group] = field(default_factory=list)


def plot_latents(sources: Sequence[str | Dataset], model: str | os.PathLike, out: str | os.PathLike, *,
                 count: int = 8, average: int = 1, bn_train: bool = False, seed: int = 0, device: str = "cpu",
                 options: SourceOptions | None = None, progress: Progress | None = None,
                 overwrite: bool = False) -> Plotted:
    """Inputs and their latents z (paper Fig. 2, 10; Appendix E), ``count`` images per source."""
    _check(out, overwrite, count=count, average=average, seed=seed)
    flow, trained = _image_model(model, resolve(device), "visualize latents")
    loaded = _load(sources, flow, count, options, trained)
    step = _counter(progress, len(loaded) + 1)
    shown, lats = [], []
    for ds in loaded:
        lats.append(image_latents(flow, ds.x, sample_keys(ds.ids), average=average, seed=seed, bn_train=bn_train))
        shown.append(SourceImages(ds.name, ds.x))
        step()
    save_figure(latents_figure(shown, lats, _title(flow, model)), out, overwrite=overwrite)
    step()
    return Plotted(Path(out), [s.name for s in shown])


def plot_coupling(sources: Sequence[str | Dataset], model: str | os.PathLike, out: str | os.PathLike, *,
                  index: int = 0, layers: Sequence[int] | None = None, seed: int = 0, device: str = "cpu",
                  options: SourceOptions | None = None, progress: Progress | None = None,
                  overwrite: bool = False) -> Plotted:
    """Each coupling's input, -t, s and output for input ``index`` of every source (paper Fig. 1b-c, 3, 11, 12)."""
    _check(out, overwrite, index=index, seed=seed)
    flow, trained = _image_model(model, resolve(device), "visualize coupling")
    loaded = _load(sources, flow, index + 1, options, trained)
    for source, ds in zip(sources, loaded):
        if index >= len(ds):
            raise InputError(f"{_spec(source)}: --index {index} is out of range: the source holds {len(ds)} samples")
    total = sum(isinstance(m, AffineCoupling) for m in flow.modules())
    chosen = pick_layers(total, list(layers) if layers else None)
    step = _counter(progress, len(loaded) + 1)
    names, views = [], []
    for ds in loaded:
        x = dequantized_draws(ds.x[index:index + 1], sample_keys(ds.ids[index:index + 1]), seed, 1)
        views.append(coupling_views(flow, x.to(next(flow.parameters()).device))[0])
        names.append(f"{ds.name} #{index}")
        step()
    save_figure(coupling_figure(names, views, chosen, _title(flow, model)), out, overwrite=overwrite)
    step()
    return Plotted(Path(out), names, layers=chosen, couplings=len(views[0]))


def plot_samples(model: str | os.PathLike, out: str | os.PathLike, *, count: int = 64,
                 temperatures: Sequence[float] = (1.0,), seed: int = 0, device: str = "cpu",
                 progress: Progress | None = None, overwrite: bool = False) -> Plotted:
    """A grid of samples per temperature (paper Fig. 17); for a tabular model, a heat map of sample vectors."""
    _check(out, overwrite, count=count, seed=seed)
    for t in temperatures:
        check_number("--temperature", t, low=0)
    flow, _ = _not_detector(model, resolve(device), "visualize samples")
    step = _counter(progress, len(temperatures) + 1)
    drawn = []
    for t in temperatures:
        drawn.append(draw_samples(flow, count, t, seed))
        step()
    save_figure(samples_figure(drawn, list(temperatures), _title(flow, model), flow.kind, seed), out,
                overwrite=overwrite)
    step()
    return Plotted(Path(out), [f"T={t:g}" for t in temperatures])


def plot_resample(sources: Sequence[str | Dataset], model: str | os.PathLike, out: str | os.PathLike, *,
                  box: int = 10, count: int = 8, seed: int = 0, device: str = "cpu",
                  options: SourceOptions | None = None, progress: Progress | None = None,
                  overwrite: bool = False) -> Plotted:
    """Originals and reconstructions after re-sampling the latents of a centred box (paper Fig. 16, App. J.1)."""
    _check(out, overwrite, box=box, count=count, seed=seed)
    flow, trained = _image_model(model, resolve(device), "visualize resample")
    box_mask(flow.input_shape, box)  # a box too large fails here, before any work
    loaded = _load(sources, flow, count, options, trained)
    step = _counter(progress, len(loaded) + 1)
    names, results = [], []
    for ds in loaded:
        results.append(resample_box(flow, ds.x, sample_keys(ds.ids), box=box, seed=seed))
        names.append(ds.name)
        step()
    save_figure(resample_figure(names, results, _title(flow, model), box), out, overwrite=overwrite)
    step()
    return Plotted(Path(out), names, latents=results[0].count)


def plot_histogram(scores: str | os.PathLike, out: str | os.PathLike, *, groups: Sequence[str] | None = None,
                   in_groups: Sequence[str] | None = None, score: str = "log_likelihood",
                   overwrite: bool = False) -> Plotted:
    """Overlaid density histograms of a score file's groups (paper Fig. 1a, 8): in-distribution filled."""
    plotted = write_histogram(scores, list(groups) if groups else None, score, out,
                              in_groups=list(in_groups) if in_groups else None, overwrite=overwrite)
    return Plotted(Path(out), [g.name for g in plotted], groups=plotted)


def _check(out, overwrite: bool, *, seed: int, **counts: int) -> None:
    """Every figure's checks before any work: the output can be written, the counts are in range."""
    for name, value in counts.items():
        check_number(f"--{name}", value, low=0 if name == "index" else 1, integer=True)
    check_seed("--seed", seed)
    check_figure_output(out, overwrite)


def _image_model(path, rt: Runtime, what: str) -> tuple[Flow, TrainedOn]:
    flow, trained = _not_detector(path, rt, what)
    require_image_flow(flow, what)
    return flow, trained


def _not_detector(path, rt: Runtime, what: str) -> tuple[Flow, TrainedOn]:
    """The model at ``path``, prepared for ``rt``, and what it was trained on; a feature detector is a usage error
    (exit 2): its flow models a backbone's features, so there are no images to draw."""
    flow, extra = load_checkpoint(path, device=rt.device)
    rt.prepare(flow)
    record = extra.get("detector")
    if record:
        raise UsageError(f"{what} draws images, but {path} is a feature detector: its {flow.name} models "
                         f"{flow.input_shape[0]}-dimensional {record.get('backbone')} features, not pixels; "
                         "plot its scores with 'oodflow visualize histogram'")
    return flow, TrainedOn.from_record(Path(path).name, extra.get("data"))


def _load(sources: Sequence[str | Dataset], flow: Flow, limit: int, options: SourceOptions | None,
          trained: TrainedOn) -> list[Dataset]:
    """Every source (its first ``limit`` samples, default split test), fitted to the model, before any work."""
    o = options or SourceOptions()
    first = SourceOptions(data_dir=o.data_dir, limit=limit, resize=o.resize, grayscale=o.grayscale, rgb=o.rgb)
    return [read_source(s, "test", first, shape=flow.input_shape, model=trained) for s in sources]


def _counter(progress: Progress | None, total: int) -> Callable[[], None]:
    done = [0]

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    return step


def _title(flow: Flow, path) -> str:
    return f"{flow.name} ({Path(path).name})"


def _spec(source: str | Dataset) -> str:
    return source.name if isinstance(source, Dataset) else str(source)
