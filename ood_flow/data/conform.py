"""Make a dataset fit a model's input shape, converting only what the user allowed."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from ood_flow.data.dataset import Dataset
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


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _conform_vectors(ds: Dataset, d: int) -> Dataset:
    if ds.kind != "vector":
        raise InputError(f"{ds.name}: the source holds {_fmt(ds.sample_shape)} images but the model expects "
                         f"{d}-dimensional vectors (embed the images first with 'oodflow embed')")
    if ds.sample_shape[0] != d:
        raise InputError(f"{ds.name}: vectors have {ds.sample_shape[0]} dimensions but the model expects {d}")
    return ds


def _conform_images(ds: Dataset, target: tuple[int, int, int], flags: dict[str, bool]) -> Dataset:
    if ds.kind != "image":
        raise InputError(f"{ds.name}: the source holds {ds.sample_shape[0]}-dimensional vectors but the model "
                         f"expects {_fmt(target)} images")
    needed = _conversions(ds, target)
    if not needed:
        return ds
    missing = [n for n in needed if not flags[n]]
    if missing:
        raise InputError(f"{ds.name}: images are {_fmt(ds.sample_shape)} but the model expects {_fmt(target)}; "
                         f"pass {' and '.join('--' + n for n in missing)} to convert")
    x = ds.x
    if "grayscale" in needed:
        x = _chunked(to_grayscale, x)
    if "resize" in needed:
        x = _chunked(lambda c: resize_images(c, target[1:]), x)
    if "rgb" in needed:
        x = x.expand(-1, 3, -1, -1).contiguous()
    note = f" [converted {_fmt(ds.sample_shape)} to {_fmt(target)}: {', '.join(needed)}]"
    return dataclasses.replace(ds, x=x, source=ds.source + note)


def _conversions(ds: Dataset, target: tuple[int, int, int]) -> list[str]:
    c, h, w = ds.sample_shape
    tc, th, tw = target
    needed = ["resize"] if (h, w) != (th, tw) else []
    if (c, tc) == (1, 3):
        needed.append("rgb")
    elif (c, tc) == (3, 1):
        needed.append("grayscale")
    elif c != tc:
        raise InputError(f"{ds.name}: images have {c} channels but the model expects {tc}; no conversion exists")
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
