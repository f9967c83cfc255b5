"""Weight-normalised layers: a weight ``w = g * v / ||v||`` stored as its magnitude ``g`` and direction ``v``.

RealNVP as Dinh et al. (2017) and the paper's authors build it normalises every convolution of its
st-networks and the per-channel factor that bounds the log-scale this way (parameters ``weight_g``
and ``weight_v``). Training moves ``g`` and ``v`` separately; weight decay, as in the authors'
code, applies to the magnitudes ``g`` only (:func:`ood_flow.train.config.param_groups`).

References:
    Salimans & Kingma, "Weight Normalization", NeurIPS 2016.
    Dinh et al., "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_flow.flows.precision import is_narrow, is_widening, narrow_forward


def normalised(g: Tensor, v: Tensor) -> Tensor:
    """``g * v / ||v||``, the norm taken over every dimension of ``v`` but the first (one per output)."""
    return g * v / v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()


class WNConv2d(nn.Module):
    """A 2-d convolution with a weight-normalised kernel (same padding, stride 1).

    Initialised like ``nn.Conv2d`` with ``g = ||v||``, so at the start it is that convolution;
    ``zero=True`` makes its output 0 (``g = 0``, bias 0): a new coupling then starts as the identity.
    ``narrow``: it runs in float32 under autocast (:func:`~ood_flow.flows.precision.is_narrow`, decided here),
    handing its output on in the autocast dtype if it ``widens`` (:func:`~ood_flow.flows.precision.is_widening`).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, *, bias: bool = True, zero: bool = False):
        super().__init__()
        self.padding = kernel // 2
        v = torch.empty(cout, cin, kernel, kernel)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Conv2d's default
        self.weight_v = nn.Parameter(v)
        norm = v.flatten(1).norm(dim=1).view(cout, 1, 1, 1)
        self.weight_g = nn.Parameter(torch.zeros_like(norm) if zero else norm)
        if bias:
            bound = 1 / math.sqrt(cin * kernel * kernel)
            self.bias = nn.Parameter(torch.zeros(cout) if zero else torch.empty(cout).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        self.narrow, self.widens = is_narrow(cin, cout), is_widening(cin, cout)

    def match_gradient_strides(self) -> None:
        """Give a 1x1 direction ``v`` the standard strides, after a change of memory format. Its gradient comes from
        the weight-norm formula's element-wise operations, which write a 1x1 kernel with the standard strides
        whatever the layout (for a 1x1 kernel both layouts are the same memory); DistributedDataParallel compares
        each gradient's strides with its parameter's and warns where they differ."""
        if self.weight_v.shape[2:] == (1, 1):
            with torch.no_grad():
                self.weight_v.set_(self.weight_v.clone(memory_format=torch.contiguous_format))

    def weight(self) -> Tensor:
        """The effective kernel ``g * v / ||v||`` (:func:`normalised`). Under autocast (bf16 st-networks) with
        gradients on, through torch's fused weight-norm kernel (``torch._weight_norm``, what
        ``nn.utils.weight_norm`` runs: forward and backward in one pass each over ``v``, where autograd's graph of
        the formula makes about ten; the same function to float rounding); in float32, through the formula, so
        that float32 training and scoring stay what they were bit for bit."""
        v, g = self.weight_v, self.weight_g
        if not (torch.is_grad_enabled() and torch.is_autocast_enabled(v.device.type)):
            return normalised(g, v)
        if v.is_contiguous() or not v.is_contiguous(memory_format=torch.channels_last):
            return torch._weight_norm(v, g, 0)
        # channels-last: the kernel writes a contiguous result, so run it on the NHWC view and view that back
        return torch._weight_norm(v.permute(0, 2, 3, 1), g.permute(0, 2, 3, 1), 0).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return narrow_forward(self._conv, x, self.widens) if self.narrow else self._conv(x)

    def _conv(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


class WNScale(nn.Module):
    """A weight-normalised factor per channel, ``g * v / |v|``, multiplying its input.

    With one number per channel, ``v / |v|`` is just the sign of ``v``, so ``v`` never receives
    a gradient; it is kept because it is part of the authors' model (and of its parameter count).
    """

    def __init__(self, channels: int, ndim: int):
        super().__init__()
        view = (1, channels) + (1,) * (ndim - 1)
        self.weight_g = nn.Parameter(torch.ones(view))
        self.weight_v = nn.Parameter(torch.ones(view))

    def factor(self) -> Tensor:
        """The factor per channel, ``g * v / |v|``, shaped to broadcast over an input."""
        return self.weight_g * self.weight_v / self.weight_v.abs()

    def forward(self, x: Tensor) -> Tensor:
        return self.factor() * x
