"""Make a dataset or a source fit a model's input shape, converting only what the user allowed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ood_flow.data.dataset import Dataset
from ood_flow.data.stream import Source, replace
from ood_flow.errors import InputError

# ITU-R BT.601 luma weights (what PIL's convert("L") uses).
LUMA = (0.299, 0.587, 0.114)
_CHUNK = 1024


def conform(ds: Dataset, input_shape: tuple[int, ...], *, resize: bool = False,
            grayscale: bool = False, rgb: bool = False) -> Dataset:
    """Check ``ds`` against a model's ``input_shape`` and convert it where the flags allow.

    Args:
        ds: the samples.
        input_shape: ``(C, H, W)`` for an image model, ``(D,)`` for a vector model.
        resize: resize images to ``H x W`` (bilinear with antialiasing, rounded to uint8).
        grayscale: turn RGB images into one channel (ITU-R 601 luma).
        rgb: turn one-channel images into three by repeating the channel.

    Returns:
        ``ds`` itself when it fits, else a converted copy whose ``source`` records the
        conversion. Flags that are not needed are ignored.

    Raises:
        InputError: the kinds differ (images vs vectors), the vector sizes differ, or
            the images differ in a way no given flag converts; the message names the
            flags that would.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        return _conform_vectors(ds, shape[0])
    if len(shape) == 3:
        return _conform_images(ds, shape, {"resize": resize, "grayscale": grayscale, "rgb": rgb})
    raise InputError(f"model input shape {shape} is neither (D,) for vectors nor (C, H, W) for images")


def conform_source(src: Source, input_shape: tuple[int, ...], *, resize: bool = False, grayscale: bool = False,
                   rgb: bool = False) -> tuple[Source, "ImageConform | None"]:
    """:func:`conform` for a source read in batches: checks now, converts per image as it is read.

    Rows in memory are checked at once, with :func:`conform`'s messages. Image files are checked one
    by one as they are decoded (a folder's images may differ in size); grayscale files are repeated
    to three channels for a colour model, as when a folder mixes them.

    Returns:
        The source (its ``source`` records any conversion) and the transform to read it with
        (None when nothing needs converting).
    """
    shape = tuple(int(s) for s in input_shape)
    flags = {"resize": resize, "grayscale": grayscale, "rgb": rgb}
    if src.in_memory or len(shape) != 3:
        needed = _check(src, shape, flags)
        if not needed:
            return src, None
        note = f" [converted {_fmt(src.sample_shape)} to {_fmt(shape)}: {', '.join(needed)}]"
        return replace(src, source=src.source + note), ImageConform(shape, needed, needed)
    if src.kind != "image":  # pragma: no cover - file sources hold images
        raise InputError(f"{src.name}: expected images")
    allowed = tuple(k for k, v in flags.items() if v) + ("rgb",)
    note = f" [converted to {_fmt(shape)} where needed; allowed: {', '.join(dict.fromkeys(allowed))}]"
    return replace(src, source=src.source + note), ImageConform(shape, tuple(dict.fromkeys(allowed)))


@dataclass(frozen=True)
class ImageConform:
    """Converts uint8 images ``(B, C, H, W)`` to a model's ``target`` shape, per :func:`conform`'s rules.

    Attributes:
        target: ``(C, H, W)`` of the model.
        allowed: the conversions the user allowed (``resize``, ``grayscale``, ``rgb``).
        expected: for rows in memory, the conversions already checked (nothing to check again).
    """

    target: tuple[int, int, int]
    allowed: tuple[str, ...]
    expected: tuple[str, ...] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        needed = self.expected if self.expected is not None else self._needed(tuple(x.shape[1:]))
        if "grayscale" in needed:
            x = to_grayscale(x)
        if "resize" in needed:
            x = resize_images(x, self.target[1:])
        if "rgb" in needed:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return x

    def _needed(self, shape: tuple[int, ...]) -> list[str]:
        needed = _needed_for(shape, self.target, "image")
        missing = [n for n in needed if n not in self.allowed]
        if missing:
            raise InputError(f"image is {_fmt(shape)} but the model expects {_fmt(self.target)}; "
                             f"pass {' and '.join('--' + n for n in missing)} to convert")
        return needed


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _conform_vectors(ds: Dataset, d: int) -> Dataset:
    if ds.kind != "vector":
        shape = f"{_fmt(ds.sample_shape)} " if ds.sample_shape else ""
        raise InputError(f"{ds.name}: the source holds {shape}images but the model expects "
                         f"{d}-dimensional vectors (embed the images first with 'oodflow embed')")
    if ds.sample_shape[0] != d:
        raise InputError(f"{ds.name}: vectors have {ds.sample_shape[0]} dimensions but the model expects {d}")
    return ds


def _conform_images(ds: Dataset, target: tuple[int, int, int], flags: dict[str, bool]) -> Dataset:
    needed = _check(ds, target, flags)
    if not needed:
        return ds
    x = ds.x
    if "grayscale" in needed:
        x = _chunked(to_grayscale, x)
    if "resize" in needed:
        x = _chunked(lambda c: resize_images(c, target[1:]), x)
    if "rgb" in needed:
        x = x.expand(-1, 3, -1, -1).contiguous()
    note = f" [converted {_fmt(ds.sample_shape)} to {_fmt(target)}: {', '.join(needed)}]"
    return dataclasses.replace(ds, x=x, source=ds.source + note)


def _check(ds: Dataset | Source, target: tuple[int, ...], flags: dict[str, bool]) -> tuple[str, ...]:
    """The conversions ``ds`` (samples of one shape) needs to fit ``target``; raises if not all are allowed."""
    if len(target) == 1:
        _conform_vectors(ds, target[0])
        return ()
    if ds.kind != "image":
        raise InputError(f"{ds.name}: the source holds {ds.sample_shape[0]}-dimensional vectors but the model "
                         f"expects {_fmt(target)} images")
    needed = _conversions(ds, target)
    missing = [n for n in needed if not flags[n]]
    if missing:
        raise InputError(f"{ds.name}: images are {_fmt(ds.sample_shape)} but the model expects {_fmt(target)}; "
                         f"pass {' and '.join('--' + n for n in missing)} to convert")
    return tuple(needed)


def _conversions(ds: Dataset, target: tuple[int, int, int]) -> list[str]:
    return _needed_for(ds.sample_shape, target, f"{ds.name}: images")


def _needed_for(shape: tuple[int, ...], target: tuple[int, int, int], what: str) -> list[str]:
    """The conversions from images of ``shape`` to ``target``, in the order they are applied."""
    c, h, w = shape
    tc, th, tw = target
    needed = ["resize"] if (h, w) != (th, tw) else []
    if (c, tc) == (1, 3):
        needed.append("rgb")
    elif (c, tc) == (3, 1):
        needed.append("grayscale")
    elif c != tc:
        raise InputError(f"{what} have {c} channels but the model expects {tc}; no conversion exists")
    return needed


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)])


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> uint8 ``(N, 1, H, W)`` by ITU-R 601 luma, rounded."""
    weights = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> uint8 ``(N, C, *size)``, bilinear with antialiasing, rounded."""
    y = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)
