"""Coupling-layer internals in image layout (paper, Fig. 1b-c, 3, 11, 12 and Appendix E).

A coupling deep inside a multi-scale flow works on a squeezed tensor (4C x H/2 x W/2) or on the
half of the channels that continues after a factor-out. To show it as a picture, every value is
carried back to the pixel it came from: the factored-out half is joined back (the latents that
left the flow earlier, or a fill value for ``s``, ``t`` and the masks) and each squeeze is
undone, exactly as the data went in. The walk below mirrors the flow's own structure
(:class:`Sequential`, :class:`FactorOut`, :class:`Squeeze`, :class:`Unsqueeze`), so the mapping
is the exact inverse of what the flow did, for every model the core builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ood_flow.flows.base import Sequential
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.flows.layers import FactorOut, Squeeze, Unsqueeze, squeeze, unsqueeze
from ood_flow.flows.models import Flow

# embed(v, fill): a tensor of the coupling's own space -> image layout; ``fill`` is what the
# factored-out part becomes (None: the actual latents that left the flow).
Embed = Callable[[Tensor, object], Tensor]


@dataclass
class CouplingView:
    """One coupling layer, every map in the input's (C, H, W) layout, for a batch of inputs.

    Attributes:
        index: position among the flow's couplings (0 = first applied to the data).
        mask: mask name (checkerboard, channel, horizontal, vertical, cycle).
        shape: the coupling's own input shape (after squeezes and factor-outs).
        scale: how many squeezes lie between the data and this coupling.
        input, output: the coupling's input and output (B, C, H, W), in logit space.
        s, t: log-scale and shift (zero where the coupling changes nothing).
        cond, change: bool (C, H, W): what the st-network sees and what the coupling changes.
    """

    index: int
    mask: str
    shape: tuple[int, ...]
    scale: int
    input: Tensor
    output: Tensor
    s: Tensor
    t: Tensor
    cond: Tensor
    change: Tensor

    @property
    def title(self) -> str:
        shape = "x".join(str(d) for d in self.shape)
        where = "input resolution" if self.scale == 0 else f"after {self.scale} squeeze(s), un-squeezed"
        return f"coupling {self.index}: {self.mask} mask on {shape} ({where})"


def coupling_views(flow: Flow, x: Tensor) -> tuple[list[CouplingView], Tensor]:
    """Run ``flow`` on ``x`` (continuous inputs) and return every coupling in image layout, and ``z``.

    Raises:
        ValueError: the flow is not an image flow, or holds a composite layer this walk
            does not know (its couplings could not be placed).
    """
    if flow.kind != "image":
        raise ValueError(f"coupling maps need an image model; this is a {flow.name} model over vectors")
    if tuple(x.shape[1:]) != flow.input_shape:
        raise ValueError(f"{flow.name} expects inputs of shape {flow.input_shape}, got {tuple(x.shape[1:])}")
    h, _ = flow.preprocess(x)
    views: list[CouplingView] = []
    z = _walk(flow.body, h, lambda v, fill: v, 0, views)
    return views, z


def _walk(layer: nn.Module, x: Tensor, embed: Embed, scale: int, views: list) -> Tensor:
    """Apply ``layer`` to ``x``, recording couplings; ``embed`` maps ``x``'s layout to the image."""
    if isinstance(layer, Sequential):
        for sub in layer.layers:
            x, embed, scale = _step(sub, x, embed, scale, views)
        return x
    return _step(layer, x, embed, scale, views)[0]


def _step(layer: nn.Module, x: Tensor, embed: Embed, scale: int, views: list) -> tuple[Tensor, Embed, int]:
    """One layer of a sequence; squeezes change how what follows maps back to the image."""
    if isinstance(layer, Squeeze):
        y, _ = layer(x)
        return y, (lambda v, fill, up=embed: up(unsqueeze(v), fill)), scale + 1
    if isinstance(layer, Unsqueeze):
        y, _ = layer(x)
        return y, (lambda v, fill, up=embed: up(squeeze(v), fill)), scale - 1
    if isinstance(layer, FactorOut):
        return _factor_out(layer, x, embed, scale, views), embed, scale
    if isinstance(layer, AffineCoupling):
        return _coupling(layer, x, embed, scale, views), embed, scale
    if isinstance(layer, Sequential):
        return _walk(layer, x, embed, scale, views), embed, scale
    if any(isinstance(m, AffineCoupling) for m in layer.modules()):
        raise ValueError(f"cannot place the couplings inside a {type(layer).__name__} layer in image layout")
    return layer(x)[0], embed, scale


def _factor_out(layer: FactorOut, x: Tensor, embed: Embed, scale: int, views: list) -> Tensor:
    out, rest = layer.split(x)

    def join(v: Tensor, fill, up=embed) -> Tensor:
        kept = out if fill is None else torch.full((v.shape[0], *out.shape[1:]), fill, dtype=v.dtype, device=v.device)
        return up(layer.join(kept, v), fill)

    rest = _walk(layer.inner, rest, join, scale, views)
    return layer.join(out, rest)


def _coupling(layer: AffineCoupling, x: Tensor, embed: Embed, scale: int, views: list) -> Tensor:
    records: list[dict] = []
    y, _ = layer.trace(x, records)
    r = records[0]
    views.append(CouplingView(
        index=len(views), mask=r["mask"], shape=tuple(r["shape"]), scale=scale,
        input=embed(r["input"], None), output=embed(r["output"], None),
        s=embed(r["s"], 0.0), t=embed(r["t"], 0.0),
        cond=embed(r["cond"][None], False)[0], change=embed(r["change"][None], False)[0],
    ))
    return y
