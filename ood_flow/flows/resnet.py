"""The authors' RealNVP st-network: a weight-normalised ResNet with a skip path (Dinh et al. 2017).

Layer by layer, for ``c`` conditioning channels, hidden width ``m`` and ``B`` blocks:

1. batch norm of the input (``c`` channels), doubled in checkerboard couplings (``double_input``);
2. concatenated with its own negation (``2c`` channels), ReLU, weight-normalised 3x3 conv to ``m``;
3. ``B`` residual blocks: BN, ReLU, 3x3 conv (no bias), BN, ReLU, 3x3 conv, plus the block's input;
4. the skip path: a weight-normalised 1x1 conv of the input conv's output and of every block's
   output, summed; the sum replaces the trunk's output (``skip=False`` drops this path: the
   paper's bottleneck baseline, "without additional skip connections", Appendix I);
5. BN, ReLU, and a weight-normalised 1x1 conv to ``s`` and ``t`` (zero-initialised here).

Optionally a bottleneck (two linear layers through ``bottleneck`` numbers) after the first
``B // 2`` blocks (the paper's Section 7; only without the skip path, which would go around it).
Parameters, with ``n(k, cin, cout) = k*k*cin*cout + cout`` (+ ``cout`` for a bias)::

    2c + n(3, 2c, m) + m + B (2 (2m) + n(3, m, m) + n(3, m, m) + m) + (B + 1) (n(1, m, m) + m)
    + 2m + n(1, m, 2c) + 2c

(:func:`parameter_count`). With the authors' settings this gives their totals: 14,707,336 for a
2-scale RealNVP on 1x28x28 (64 channels, 6 blocks) and 87,859,080 for 3 scales on 3x32x32
(64 channels, 8 blocks).

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, Section 4.1.
    Kirichenko, Izmailov & Wilson, NeurIPS 2020, Appendix C and I; their code, flows_ood.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_flow.flows.convnets import Bottleneck, ConvNet
from ood_flow.flows.weightnorm import WNConv2d


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


class ResidualBlock(nn.Module):
    """BN, ReLU, 3x3 conv (no bias), BN, ReLU, 3x3 conv, plus the input; convolutions weight-normalised."""

    def __init__(self, channels: int, batchnorm: bool):
        super().__init__()
        self.in_norm = _norm(channels, batchnorm)
        self.in_conv = WNConv2d(channels, channels, 3, bias=False)
        self.out_norm = _norm(channels, batchnorm)
        self.out_conv = WNConv2d(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.in_conv(F.relu(self.in_norm(x)))
        return x + self.out_conv(F.relu(self.out_norm(h)))


class ResNetST(ConvNet):
    """The authors' st-network; see the module docstring for its layers.

    Args:
        cin, cout: conditioning channels in, ``s`` and ``t`` channels out.
        spatial: (H, W) of the input (the bottleneck's linear layers need it).
        channels: hidden width ``m``. blocks: residual blocks ``B``.
        batchnorm: the batch norms (the paper's default); without them those steps are skipped.
        bottleneck: dimension ``l`` of a bottleneck after the first ``B // 2`` blocks (needs ``skip=False``).
        skip: the skip path of 1x1 convolutions. double_input: double the normalised input
            (the authors do this in checkerboard couplings only).
    """

    def __init__(self, cin: int, cout: int, spatial: tuple[int, int] | None, *, channels: int = 64,
                 blocks: int = 8, batchnorm: bool = True, bottleneck: int | None = None, skip: bool = True,
                 double_input: bool = False):
        super().__init__()
        if bottleneck and skip:
            raise ValueError("a bottleneck needs the st-network without skip path (resnet-noskip): "
                             "the skip path would go around it")
        self.double_input, self.where = double_input, blocks // 2
        self.in_norm = _norm(cin, batchnorm)
        self.in_conv = WNConv2d(2 * cin, channels, 3)
        self.blocks = nn.ModuleList(ResidualBlock(channels, batchnorm) for _ in range(blocks))
        self.skips = nn.ModuleList(WNConv2d(channels, channels, 1) for _ in range(blocks + 1)) if skip else None
        self.bottleneck = Bottleneck(channels, spatial, bottleneck) if bottleneck else None
        self.out_norm = _norm(channels, batchnorm)
        self.out_conv = WNConv2d(channels, cout, 1, zero=True)
        self.channels_last()

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=self.layout)
        y = self.fused.run_resnet(self, x) if self.fused is not None and self.fused.usable(self, x) else self._plain(x)
        return y.contiguous()

    def _plain(self, x: Tensor) -> Tensor:
        h = self.in_norm(x)
        h = 2 * h if self.double_input else h
        h = self.in_conv(F.relu(torch.cat([h, -h], dim=1)))
        total = self.skips[0](h) if self.skips is not None else None
        for i, block in enumerate(self.blocks):
            h = self.bottleneck(h) if self.bottleneck is not None and i == self.where else h
            h = block(h)
            total = total + self.skips[i + 1](h) if total is not None else None
        h = self.bottleneck(h) if self.bottleneck is not None and len(self.blocks) == self.where else h
        h = h if total is None else total
        return self.out_conv(F.relu(self.out_norm(h)))


def parameter_count(c: int, m: int, blocks: int, *, skip: bool = True, batchnorm: bool = True,
                    bottleneck: int | None = None, spatial: tuple[int, int] = (0, 0)) -> int:
    """Parameters of :class:`ResNetST` for ``c`` conditioning channels (the formula of the module docstring).

    The coupling around it adds ``2c`` for its weight-normalised log-scale factor.
    """
    def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
        return k * k * cin * cout + cout + (cout if bias else 0)

    bn = 2 if batchnorm else 0
    block = 2 * bn * m + conv(3, m, m, bias=False) + conv(3, m, m)
    total = bn * c + conv(3, 2 * c, m) + blocks * block + bn * m + conv(1, m, 2 * c)
    if skip:
        total += (blocks + 1) * conv(1, m, m)
    if bottleneck:
        size = m * spatial[0] * spatial[1]
        total += 2 * size * bottleneck + size + bottleneck
    return total
