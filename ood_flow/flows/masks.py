"""Which part of the input a coupling layer conditions on and which part it changes.

A mask has two disjoint parts: ``cond`` (what the st-network sees) and ``change`` (what the
coupling transforms). Positions in neither part pass through untouched (the cycle mask has two
such quadrants per layer).

Spatial masks (checkerboard, horizontal, vertical, cycle) are fixed ``(1, 1, H, W)`` buffers built
once; the st-network sees ``x * cond`` and its ``s``, ``t`` are zeroed outside ``change``. The
channel mask splits dimension 1 in two halves (channels of an image, features of a vector) and
slices instead of multiplying, so the st-network only computes what is used.

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017 (checkerboard, channel-wise).
    Kirichenko et al., "Why Normalizing Flows Fail to Detect Out-of-Distribution Data",
    NeurIPS 2020, Section 7 and Appendix I.1 (horizontal and cycle masks).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class SpatialMask(nn.Module):
    """A fixed pattern over (H, W), shared by all channels."""

    kind = "spatial"

    def __init__(self, cond: Tensor, change: Tensor, name: str):
        super().__init__()
        if (cond & change).any():
            raise ValueError("mask parts overlap")
        self.name = name
        self.register_buffer("cond", cond.view(1, 1, *cond.shape).float(), persistent=False)
        self.register_buffer("change", change.view(1, 1, *change.shape).float(), persistent=False)

    def net_channels(self, channels: int) -> tuple[int, int]:
        """(input channels of the st-network, channels of ``s`` and of ``t``)."""
        return channels, channels

    def conditioner(self, x: Tensor) -> Tensor:
        return x * self.cond.to(x.dtype)

    def changed(self, x: Tensor) -> Tensor:
        return x

    def restrict(self, s: Tensor) -> Tensor:
        """Zero ``s`` (or ``t``) outside the changed positions."""
        return s * self.change.to(s.dtype)

    def merge(self, x: Tensor, y_changed: Tensor) -> Tensor:
        return y_changed  # s = t = 0 outside `change`, so y_changed already equals x there

    def parts(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Boolean (cond, change) masks over a single input of ``shape`` (C, H, W)."""
        return (self.cond[0].bool().expand(shape), self.change[0].bool().expand(shape))


class ChannelMask(nn.Module):
    """Split dimension 1 into halves; ``parity`` 0 conditions on the first half and changes the second."""

    kind = "channel"

    def __init__(self, channels: int, parity: int, name: str = "channel"):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a channel mask needs at least 2 channels/features, got {channels}")
        self.name = name
        self.parity = parity
        half = channels // 2
        first, second = (0, half), (half, channels)
        self.cond_range, self.change_range = (first, second) if parity == 0 else (second, first)

    def net_channels(self, channels: int) -> tuple[int, int]:
        return _size(self.cond_range), _size(self.change_range)

    def conditioner(self, x: Tensor) -> Tensor:
        return x[:, slice(*self.cond_range)]

    def changed(self, x: Tensor) -> Tensor:
        return x[:, slice(*self.change_range)]

    def restrict(self, s: Tensor) -> Tensor:
        return s

    def merge(self, x: Tensor, y_changed: Tensor) -> Tensor:
        kept = self.conditioner(x)
        return torch.cat([kept, y_changed] if self.parity == 0 else [y_changed, kept], dim=1)

    def parts(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        cond, change = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
        cond[slice(*self.cond_range)] = True
        change[slice(*self.change_range)] = True
        return cond, change


def _size(r: tuple[int, int]) -> int:
    return r[1] - r[0]


def _grid(height: int, width: int) -> tuple[Tensor, Tensor]:
    return torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")


def checkerboard(shape: tuple[int, ...], index: int) -> SpatialMask:
    """Alternating pixels; layer ``index`` conditions on pixels with ``(i + j + index)`` even."""
    i, j = _grid(*shape[-2:])
    cond = (i + j + index) % 2 == 0
    return SpatialMask(cond, ~cond, "checkerboard")


def horizontal(shape: tuple[int, ...], index: int) -> SpatialMask:
    """Top and bottom halves; even layers condition on the top half, odd layers on the bottom."""
    height = _even(shape[-2], "height")
    i, _ = _grid(*shape[-2:])
    top = i < height // 2
    return SpatialMask(top, ~top, "horizontal") if index % 2 == 0 else SpatialMask(~top, top, "horizontal")


def vertical(shape: tuple[int, ...], index: int) -> SpatialMask:
    """Left and right halves; even layers condition on the left half, odd layers on the right."""
    width = _even(shape[-1], "width")
    _, j = _grid(*shape[-2:])
    left = j < width // 2
    return SpatialMask(left, ~left, "vertical") if index % 2 == 0 else SpatialMask(~left, left, "vertical")


def quadrants(height: int, width: int) -> list[Tensor]:
    """The four quadrants in cycle order: top-left, top-right, bottom-right, bottom-left."""
    i, j = _grid(height, width)
    top, left = i < height // 2, j < width // 2
    return [top & left, top & ~left, ~top & ~left, ~top & left]


def cycle(shape: tuple[int, ...], index: int) -> SpatialMask:
    """Layer ``index`` changes quadrant ``index + 1`` conditioned on quadrant ``index`` (mod 4).

    Information from one quadrant needs four layers to come back to it, which stops couplings
    from co-adapting to predict a pixel from its own neighbourhood (paper, Appendix I.1).
    """
    h, w = _even(shape[-2], "height"), _even(shape[-1], "width")
    q = quadrants(h, w)
    return SpatialMask(q[index % 4], q[(index + 1) % 4], "cycle")


def channel(shape: tuple[int, ...], index: int) -> ChannelMask:
    """Channel-wise (after a squeeze) or half-vector mask, alternating halves."""
    return ChannelMask(shape[0], index % 2)


def _even(n: int, what: str) -> int:
    if n % 2:
        raise ValueError(f"this mask needs an even image {what}, got {n}")
    return n


MASKS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "checkerboard": checkerboard,
    "channel": channel,
    "horizontal": horizontal,
    "vertical": vertical,
    "cycle": cycle,
}


def create_mask(name: str, shape: tuple[int, ...], index: int) -> nn.Module:
    """Mask ``name`` for inputs of ``shape`` (C, H, W) or (D,), as used by the ``index``-th coupling."""
    if name not in MASKS:
        raise ValueError(f"unknown mask {name!r}; valid masks: {', '.join(MASKS)}")
    return MASKS[name](tuple(shape), index)
