"""Convolutional st-networks other than the default ResNet (:mod:`ood_flow.flows.resnet`), and their parts.

``resnet-v1`` (:class:`ResNetV1`) is oodflow's network before format 2 (plain convolutions, no
skip path); files written then still load with it. :class:`GlowST` and :class:`HighwayST` are
Glow's. :class:`Bottleneck` is the paper's low-dimensional bottleneck (Section 7).

Convolutional networks run in channels-last (NHWC) memory format, which oneDNN's CPU
convolutions run faster than NCHW (or in the layout their runtime names, :meth:`ConvNet.use_layout`), and,
once their flow is prepared for a runtime (:meth:`ood_flow.runtime.Runtime.prepare`), score through its
:class:`~ood_flow.flows.fused.FusedPath` (batch norm folded into convolutions, ReLUs fused) when no gradients
are needed (``benchmarks/speed/speed.py``). Only the memory layout and the number of passes change; weights,
state-dict keys and the function stay the same, and inputs and outputs are ordinary contiguous tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ood_flow.flows.precision import STConv2d
from ood_flow.flows.weightnorm import WNConv2d

if TYPE_CHECKING:  # the fused path recognises these networks, so it imports this module
    from ood_flow.flows.fused import FusedPath


class ConvNet(nn.Module):
    """Base of the convolutional st-networks: ``self.net`` runs in memory format ``layout`` (channels-last
    unless :meth:`use_layout` says otherwise), through ``fused`` (the fused path of its prepared flow) where
    that applies."""

    layout: torch.memory_format = torch.channels_last
    fused: FusedPath | None = None  # set by ood_flow.runtime.Runtime.prepare

    def use_layout(self, layout: torch.memory_format) -> "ConvNet":
        """Store 4-d weights in ``layout``, and run inputs in it; a network calls it once its layers are built."""
        self.layout = layout
        self.to(memory_format=layout)
        for m in self.modules():
            if isinstance(m, WNConv2d):
                m.match_gradient_strides()
        return self

    def channels_last(self) -> "ConvNet":
        return self.use_layout(torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        # The input has 1-8 channels and the output 2-16, so both conversions are cheap next to
        # the hidden layers; a contiguous output keeps the coupling arithmetic on plain tensors.
        x = x.contiguous(memory_format=self.layout)
        y = self.fused.run(self.net, x) if self.fused is not None and self.fused.usable(self, x) else self.net(x)
        return y.contiguous()


def _conv(cin: int, cout: int, k: int = 3) -> STConv2d:
    return STConv2d(cin, cout, k, padding=k // 2)


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResBlock(nn.Module):
    """Pre-activation residual block: norm, ReLU, conv, norm, ReLU, conv, plus the input."""

    residual = True  # ``x + body(x)``: how :meth:`FusedPath.run` recognises it

    def __init__(self, channels: int, batchnorm: bool):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(channels)) if batchnorm else nn.Identity
        # ReLUs overwrite fresh outputs of a norm or conv in place (neither's backward needs its output);
        # without batch norm the first ReLU would overwrite the block's input, which the sum needs.
        self.body = nn.Sequential(norm(), nn.ReLU(inplace=batchnorm), _conv(channels, channels), norm(),
                                  nn.ReLU(inplace=True), _conv(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Bottleneck(nn.Module):
    """Project the whole activation map to ``dim`` numbers and back (two linear layers).

    Forces the st-network to predict ``s`` and ``t`` from a global, low-dimensional summary
    of its input instead of local pixel correlations (paper, Section 7, Figure 4).
    """

    def __init__(self, channels: int, spatial: tuple[int, int], dim: int):
        super().__init__()
        self.shape = (channels, *spatial)
        size = channels * spatial[0] * spatial[1]
        self.down = nn.Linear(size, dim)
        self.up = nn.Linear(dim, size)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x.flatten(1))).view(x.shape[0], *self.shape)


class ResNetV1(ConvNet):
    """oodflow's ResNet st-network before format 2: conv, pre-activation blocks, norm, ReLU, zero conv3x3.

    No weight normalisation, no input doubling or negation, no skip path (compare
    :class:`ood_flow.flows.resnet.ResNetST`, the authors' network). Kept so that older model files load.

    Args:
        channels: width of the hidden feature maps.
        blocks: number of residual blocks.
        batchnorm: batch norm inside the blocks (the paper's default).
        bottleneck: if set, a :class:`Bottleneck` of this dimension after the middle block.
    """

    def __init__(self, cin: int, cout: int, spatial: tuple[int, int], *, channels: int = 64, blocks: int = 8,
                 batchnorm: bool = True, bottleneck: int | None = None):
        super().__init__()
        layers = [_conv(cin, channels), *_blocks(ResBlock, channels, blocks, batchnorm, spatial, bottleneck)]
        if bottleneck and blocks == 0:
            layers.append(Bottleneck(channels, spatial, bottleneck))
        norm = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        layers += [norm, nn.ReLU(inplace=batchnorm), _zero(_conv(channels, cout))]
        self.net = nn.Sequential(*layers)
        self.channels_last()


class GlowST(ConvNet):
    """Glow's st-network (Kingma & Dhariwal 2018): conv3x3, ReLU, conv1x1, ReLU, zero-init conv3x3.

    Glow normalises the hidden layers with ActNorm; here batch norm (``batchnorm=True``) or
    nothing. ``blocks`` is ignored (Glow's network has a fixed depth).
    """

    def __init__(self, cin: int, cout: int, spatial: tuple[int, int], *, channels: int = 400, blocks: int = 0,
                 batchnorm: bool = True, bottleneck: int | None = None):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(channels)) if batchnorm else nn.Identity
        layers: list[nn.Module] = [_conv(cin, channels), norm(), nn.ReLU(inplace=True), _conv(channels, channels, 1),
                                   norm(), nn.ReLU(inplace=True)]
        if bottleneck:
            layers.append(Bottleneck(channels, spatial, bottleneck))
        layers.append(_zero(_conv(channels, cout)))
        self.net = nn.Sequential(*layers)
        self.channels_last()


class Highway(nn.Module):
    """One convolutional highway layer: ``gate * transform(h) + (1 - gate) * h`` (Srivastava et al. 2015)."""

    def __init__(self, channels: int, batchnorm: bool):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.transform = _conv(channels, channels)
        self.gate = _conv(channels, channels)

    def forward(self, h: Tensor) -> Tensor:
        u = self.norm(h)
        gate = torch.sigmoid(self.gate(u))
        return h + gate * (self.transform(u) - h)


class HighwayST(ConvNet):
    """The highway st-network of the paper's Glow (Appendix C; the authors' code, flows_ood).

    A 3x3 input convolution, ``blocks`` highway layers whose gates make the map non-linear, and
    a zero-initialised 1x1 output convolution.
    """

    def __init__(self, cin: int, cout: int, spatial: tuple[int, int], *, channels: int = 400, blocks: int = 3,
                 batchnorm: bool = False, bottleneck: int | None = None):
        super().__init__()
        layers = [_conv(cin, channels), *_blocks(Highway, channels, blocks, batchnorm, spatial, bottleneck)]
        layers.append(_zero(_conv(channels, cout, 1)))
        self.net = nn.Sequential(*layers)
        self.channels_last()


def _blocks(block, channels: int, blocks: int, batchnorm: bool, spatial: tuple[int, int],
            bottleneck: int | None) -> list[nn.Module]:
    """``blocks`` blocks of ``block(channels, batchnorm)``, with a :class:`Bottleneck` after the middle one
    when ``bottleneck`` is set."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers.append(block(channels, batchnorm))
        if bottleneck and i == (blocks - 1) // 2:
            layers.append(Bottleneck(channels, spatial, bottleneck))
    return layers
