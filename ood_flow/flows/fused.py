"""Fused inference for the convolutional st-networks: the same function in fewer passes over memory.

When nothing needs gradients and every layer is in eval mode (scoring), a convolution followed by
batch norm is one convolution with folded weights, and a following ReLU runs inside oneDNN's
convolution (a post-op) instead of as a separate pass; the ReLU after a batch norm runs in place.
The folded weights are cached per convolution and rebuilt whenever a weight or statistic changes.

The result is the same function: conv+ReLU fusion is bit-identical, batch-norm folding moves
results by float rounding only (relative 1e-6 in log-likelihoods). It is used for float32 on CPU
with oneDNN; anything else, any layer it does not know, and any failure of the fused kernel fall
back to the plain modules. :func:`disabled` turns it off, e.g. to compare against the plain path.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_flow.flows.precision import NARROW

_state = {"enabled": True, "kernel": None}


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain modules inside this block (the reference path)."""
    previous = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = previous


def usable(net: nn.Module, x: Tensor) -> bool:
    """Whether ``net(x)`` may take the fused path: inference only, float32 CPU (bf16 under autocast), every
    layer in eval mode."""
    return (_state["enabled"] and not torch.is_grad_enabled() and x.dtype == torch.float32
            and x.device.type == "cpu" and _kernel() is not None and not any(m.training for m in net.modules()))


def _kernel():
    """oneDNN's convolution with a fused element-wise post-op, where this torch build has it."""
    if _state["kernel"] is None:
        op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
        _state["kernel"] = op if op is not None and torch.backends.mkldnn.is_available() else False
    return _state["kernel"] or None


def run(layers: nn.Sequential, x: Tensor) -> Tensor:
    """``layers(x)`` with conv+BN folded and ReLUs fused or in place; ``x`` itself is never modified."""
    mods = [m for m in layers if not isinstance(m, nn.Identity)]
    owned, i = False, 0  # owned: x is a tensor made here, so it may be overwritten in place
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d):
            bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) else None
            j = i + 1 + (bn is not None)
            relu = j < len(mods) and isinstance(mods[j], nn.ReLU)
            x, i = _conv(m, bn, x, relu), j + relu
        elif isinstance(m, nn.BatchNorm2d):
            x, i = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps), i + 1
        elif isinstance(m, nn.ReLU):
            x, i = (torch.relu_(x) if owned else torch.relu(x)), i + 1
        elif hasattr(m, "body") and getattr(m, "residual", False):
            x, i = x + run(m.body, x), i + 1
        else:
            x, i, owned = m(x), i + 1, False
            continue
        owned = True
    return x


def _conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, x: Tensor, relu: bool) -> Tensor:
    x = x.to(_dtype(conv, x))
    weight, bias = _folded(conv, bn, x.dtype)
    if relu and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple):
        try:
            return _kernel()(x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                             conv.groups, "relu", [], "")
        except RuntimeError:  # a build whose kernel rejects this case: plain ops from now on
            _state["kernel"] = False
    y = conv._conv_forward(x, weight, bias)
    return torch.relu_(y) if relu else y


def _dtype(conv: nn.Conv2d, x: Tensor) -> torch.dtype:
    """The autocast dtype (the st-network's precision) for wide convolutions, else float32, as the plain
    modules run them (:mod:`ood_flow.flows.precision`)."""
    if torch.is_autocast_enabled(x.device.type) and min(conv.in_channels, conv.out_channels) >= NARROW:
        return torch.get_autocast_dtype(x.device.type)
    return torch.float32


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """``conv`` then ``bn`` (eval) as one convolution in ``dtype``: weights scaled per output channel, cached."""
    if bn is None and dtype == conv.weight.dtype:
        return conv.weight, conv.bias
    tensors = (conv.weight, conv.bias) + ((bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn else ())
    key = tuple((t.data_ptr(), t._version) if t is not None else None for t in tensors) + (bn and bn.eps, dtype)
    cached = conv.__dict__.get("_fused_cache")
    if cached is None or cached[0] != key:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            weight, bias = _fold(conv, bn) if bn is not None else (conv.weight, conv.bias)
            weight = weight.to(dtype).contiguous(memory_format=torch.channels_last)
            bias = bias.to(dtype) if bias is not None else None
        cached = conv.__dict__["_fused_cache"] = (key, weight, bias)
    return cached[1], cached[2]


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    scale = scale * bn.weight if bn.weight is not None else scale
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    return weight, bias * scale + (bn.bias if bn.bias is not None else 0.0)
