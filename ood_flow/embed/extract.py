"""Images in, feature vectors out: resize, normalise, run the backbone in batches, fast.

The image transform (:class:`ImageTransform`) runs per batch of a source as it is read (in the DataLoader's
worker processes where the machine has cores to spare for them, see :mod:`ood_flow.data.stream`). The
backbone runs under ``torch.inference_mode`` as a :class:`~ood_flow.runtime.Runtime` says: on its device, in
its memory format (channels-last), in fp32 or under bf16 autocast (``backbone="bf16"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ood_flow.data.stream import Batch, Source
from ood_flow.distributed import gather_rows, own_batches
from ood_flow.embed.backbones import backbone_config
from ood_flow.errors import InputError
from ood_flow.runtime import Runtime, resolve

_ANTIALIAS = {"bilinear", "bicubic"}  # the modes F.interpolate can antialias


@dataclass(frozen=True)
class ImageTransform:
    """What a backbone is fed: 8-bit images scaled to [0, 1], grayscale repeated to RGB, resized whole
    (antialiased, not cropped: non-square images are stretched) to ``size`` x ``size`` with
    ``interpolation``, then normalised with ``mean`` and ``std`` per channel.

    Example:
        >>> t = ImageTransform(size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")
        >>> t(torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)).shape
        torch.Size([1, 3, 4, 4])
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str

    def __call__(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ``(B, C, H, W)``, C in {1, 3} -> float32 ``(B, 3, size, size)`` in channels-last memory format
        (the backbone's: written so where it is read, the main process need not copy it), into
        ``out`` if given (of :meth:`output_shape`; the workers pass one in shared memory)."""
        if images.shape[1] not in (1, 3):
            raise InputError(f"images have {images.shape[1]} channels; the backbone takes 1 (repeated) or 3")
        x = _resize(images.float() / 255, self.size, self.interpolation)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        if out is None:
            out = torch.empty(self.output_shape(x.shape[0]), device=x.device, memory_format=torch.channels_last)
        return torch.sub(x.expand(-1, 3, -1, -1), mean, out=out).div_(std)

    def output_shape(self, n: int) -> tuple[int, int, int, int]:
        """The shape of the transform of ``n`` images."""
        return (n, 3, self.size, self.size)

    def to_dict(self) -> dict:
        """Plain values, for model and feature files."""
        d = asdict(self)
        return {**d, "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "channels": "grayscale repeated to RGB"}

    @classmethod
    def from_dict(cls, d: dict) -> ImageTransform:
        return cls(size=int(d["size"]), mean=tuple(float(v) for v in d["mean"]),
                   std=tuple(float(v) for v in d["std"]), interpolation=str(d["interpolation"]))


def transform_for(model: nn.Module, image_size: int | None = None) -> ImageTransform:
    """The transform a backbone expects (its pretrained cfg), at ``image_size`` if given."""
    cfg = backbone_config(model)
    return ImageTransform(size=int(image_size or cfg["input_size"][-1]), mean=tuple(cfg["mean"]),
                          std=tuple(cfg["std"]), interpolation=str(cfg["interpolation"]))


def prepare_backbone(model: nn.Module, rt: Runtime) -> torch.device:
    """``model`` in eval mode, on ``rt``'s device with weights in its memory format; returns the device."""
    model.to(rt.device).eval().to(memory_format=rt.layout)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def feature_batches(model: nn.Module, batches: Iterable[Batch], rt: Runtime) -> Iterator[Batch]:
    """The backbone's features of each batch (already transformed to its input): float32 ``(B, d)`` batches
    with the same ids and labels, computed under ``inference_mode`` as ``rt`` says (device, memory format,
    bf16 autocast)."""
    dev = prepare_backbone(model, rt)
    for batch in batches:
        with torch.inference_mode(), rt.backbone_autocast():
            x = batch.x.to(dev, non_blocking=True).contiguous(memory_format=rt.layout)
            y = model(x).float().cpu()
        yield Batch(x=y.clone(), ids=batch.ids, labels=batch.labels)  # a clone outside: an ordinary tensor


def embed_batches(model: nn.Module, batches: Iterable[Batch], rt: Runtime, *,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[Batch]]:
    """Features of every batch (already transformed to the backbone's input), in order.

    Returns:
        float32 ``(N, d)`` and the batches with their ``x`` dropped (ids and labels kept).
    """
    out, kept = [], []
    for batch in feature_batches(model, batches, rt):
        out.append(batch.x)
        kept.append(Batch(x=torch.empty(0), ids=batch.ids, labels=batch.labels))
        if progress is not None:
            progress(len(batch.ids))
    if not out:
        return np.zeros((0, _feature_size(model)), dtype=np.float32), kept
    return torch.cat(out).numpy(), kept


@dataclass
class Embedded:
    """Features of a source: one row per sample read, with its id and label, and how they were made."""

    features: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    name: str
    source: str
    skipped: list[tuple[str, str]]
    label_names: list[str] | None
    transform: ImageTransform
    precision: str


def embed_stream(model: nn.Module, src: Source, transform: ImageTransform, rt: Runtime = Runtime(), *,
                 batch_size: int = 64, workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Embedded:
    """Embed every image of ``src``, read in batches with ``transform`` applied as they are read, as ``rt`` says
    (default: on the CPU in fp32).

    Under torchrun (``rt.dist``) each process embeds whole batches of the single-process grid and every
    process gets all rows back in the source's order.

    Raises:
        InputError: the source holds vectors, or an image cannot be read (see :meth:`Source.batches`).
    """
    if src.kind != "image":
        raise InputError(f"{src.name}: the source holds {src.sample_shape[0]}-dimensional vectors; embedding needs "
                         "images")
    batches = own_batches(src.batches(batch_size, transform, workers=workers), rt.dist)
    features, read = embed_batches(model, batches, rt, progress=progress)
    ids = np.concatenate([b.ids for b in read]) if read else np.zeros(0, dtype=str)
    labels = None if src.labels is None or not read else np.concatenate([b.labels for b in read])
    rows = gather_rows(rt.dist, batch_size, {"features": features, "ids": ids, "labels": labels})
    features, ids, labels = rows["features"], rows["ids"], rows["labels"]
    return Embedded(features, ids, labels, src.name, src.source, list(src.skipped), src.label_names, transform,
                    rt.backbone)


def embed_images(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    image_size: int | None = None,
    batch_size: int = 128,
    device: str | None = "cpu",
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled features of a backbone for a stack of 8-bit images in memory (see :class:`ImageTransform`).

    Args:
        model: from ``create_backbone``; put in eval mode and moved to ``device``.
        images: uint8 ``(N, C, H, W)`` with ``C`` 1 or 3 (channels first).
        image_size: side in pixels; default the backbone's input size.
        batch_size: images per forward pass; results do not depend on it beyond float rounding.
        device: where to compute (``cpu``, ``cuda``, ``auto``); None: where the model is.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto``, resolved as every command resolves it
            (:func:`ood_flow.runtime.resolve`).
        progress: called after each batch with the number of images it held.

    Returns:
        float32 ``(N, d)``; ``d`` is the backbone's feature size (or its number of classes when it
        kept its classifier).

    Raises:
        InputError: images of the wrong type, dtype, rank or channels.
        UsageError: an unknown device or precision, or bf16 where the device cannot run it.
    """
    rt = resolve(device if device is not None else _device_of(model), backbone=precision)
    images = _check_images(images)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    transform = transform_for(model, image_size)
    batches = (Batch(transform(x), np.zeros(len(x), dtype=str), None) for x in images.split(batch_size))
    return embed_batches(model, batches, rt, progress=progress)[0]


def _check_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a tensor or array, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise InputError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must be (N, C, H, W) with C 1 or 3, got shape {tuple(images.shape)}")
    return images


def _resize(x: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    mode = interpolation if interpolation in _ANTIALIAS | {"nearest", "area"} else "bilinear"
    if mode in _ANTIALIAS:
        y = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    else:
        y = F.interpolate(x, size=(size, size), mode=mode)
    return y.clamp_(0, 1)  # bicubic overshoots


def _device_of(model: nn.Module) -> str:
    param = next(model.parameters(), None)
    return param.device.type if param is not None else "cpu"


def _feature_size(model: nn.Module) -> int:
    return getattr(model, "num_classes", 0) or getattr(model, "num_features", 0)
