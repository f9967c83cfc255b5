"""st-networks: the conditioners that predict a coupling's log-scale ``s`` and shift ``t``, by name.

Every network's last layer is zero-initialised, so a new coupling is the identity and a new flow
starts at the logit/standardization preprocessing alone. Networks are built by :func:`create_net`
from a name, so the coupling layer decides the sizes and the caller the family:

- ``resnet``: the authors' RealNVP network (Dinh et al. 2017 as flows_ood ships it), with its
  skip path of 1x1 convolutions; the default for RealNVP.
- ``resnet-noskip``: the same without the skip path, the paper's baseline for the bottleneck
  comparison (Appendix I), and the one that takes ``bottleneck``.
- ``resnet-v1``: oodflow's network before model format 2 (older files load with it).
- ``glow``: Glow's conv3x3-conv1x1-conv3x3 network; ``highway``: the paper's Glow network.
- ``mlp``: fully connected, for vectors (Appendix K.1).

:data:`NET_OPTIONS` lists which options each network uses, so that an option that would be
ignored is refused instead (:mod:`ood_flow.flows.configs`).

Convolutional networks run in channels-last (NHWC) memory format, which oneDNN's CPU
convolutions run faster than NCHW, and score through :mod:`ood_flow.flows.fused` (batch norm
folded into convolutions, ReLUs fused) when no gradients are needed (``benchmarks/speed/speed.py``).
Only the memory layout and the number of passes change; weights, state-dict keys and the
function stay the same, and inputs and outputs are ordinary contiguous tensors.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

from torch import Tensor, nn

from ood_flow import names
from ood_flow.flows.convnets import GlowST, HighwayST, ResNetV1, _zero
from ood_flow.flows.resnet import ResNetST

if TYPE_CHECKING:  # the fused path recognises these networks, so it imports this module
    from ood_flow.flows.fused import FusedPath


class MLP(nn.Module):
    """Fully connected st-network for vectors: ``layers`` hidden layers of ``hidden`` units, ReLU."""

    def __init__(self, cin: int, cout: int, spatial: None = None, *, hidden: int = 256, layers: int = 2,
                 batchnorm: bool = False):
        super().__init__()
        mods: list[nn.Module] = []
        width = cin
        for _ in range(layers):
            mods += [nn.Linear(width, hidden)]
            mods += [nn.BatchNorm1d(hidden)] if batchnorm else []
            mods += [nn.ReLU()]
            width = hidden
        mods.append(_zero(nn.Linear(width, cout)))
        self.net = nn.Sequential(*mods)
        self.fused: FusedPath | None = None  # set by ood_flow.runtime.Runtime.prepare

    def forward(self, x: Tensor) -> Tensor:
        if self.fused is not None and self.fused.usable(self, x):
            return self.fused.run_mlp(self.net, x)
        return self.net(x)


NETS: dict[str, Callable[..., nn.Module]] = {
    "resnet": functools.partial(ResNetST, skip=True),
    "resnet-noskip": functools.partial(ResNetST, skip=False),
    "resnet-v1": ResNetV1,
    "glow": GlowST,
    "highway": HighwayST,
    "mlp": MLP,
}
IMAGE_NETS = names.IMAGE_NETS

# The architecture options each network takes; any other option given for it would do nothing.
NET_OPTIONS: dict[str, frozenset[str]] = {
    "resnet": frozenset({"channels", "blocks", "batchnorm"}),
    "resnet-noskip": frozenset({"channels", "blocks", "batchnorm", "bottleneck"}),
    "resnet-v1": frozenset({"channels", "blocks", "batchnorm", "bottleneck"}),
    "glow": frozenset({"channels", "batchnorm", "bottleneck"}),
    "highway": frozenset({"channels", "blocks", "batchnorm", "bottleneck"}),
    "mlp": frozenset({"hidden", "layers", "batchnorm"}),
}


def create_net(name: str, cin: int, cout: int, spatial: tuple[int, int] | None, **options) -> nn.Module:
    """Build st-network ``name`` mapping ``cin`` channels (or features) to ``cout``.

    ``double_input`` (the authors' ResNet doubles its normalised input in checkerboard couplings)
    is passed to the ``resnet`` family only; other networks have no such step.
    """
    if name not in NETS:
        raise ValueError(f"unknown st-network {name!r}; valid networks: {', '.join(NETS)}")
    double = options.pop("double_input", False)
    if name in ("resnet", "resnet-noskip"):
        options["double_input"] = double
    return NETS[name](cin, cout, spatial, **options)
