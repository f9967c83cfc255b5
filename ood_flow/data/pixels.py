"""Pixel conversions of uint8 image batches ``(N, C, H, W)``: to grayscale and resized, rounded back to 8 bits.

They depend on nothing else in :mod:`ood_flow.data`, so both the conversions to a model's input
(:mod:`ood_flow.data.conform`) and the readers in the DataLoader's workers (:mod:`ood_flow.data.workers`)
import them without importing each other.

Example:
    >>> import torch
    >>> resize_images(torch.full((1, 1, 8, 8), 200, dtype=torch.uint8), (4, 4)).unique().tolist()
    [200]
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights (what PIL's ``convert("L")`` uses)."""
CHUNK = 1024
"""Images converted in one call by :func:`in_chunks` (bounds the float32 copy)."""


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> uint8 ``(N, 1, H, W)`` by ITU-R 601 luma, rounded."""
    weights = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> uint8 ``(N, C, *size)``, bilinear with antialiasing, rounded."""
    y = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` computed :data:`CHUNK` images at a time."""
    return torch.cat([fn(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])
