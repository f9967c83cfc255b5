"""The one contract every invertible layer and model follows.

Every bijection ``f`` is an ``nn.Module`` with

* ``forward(x) -> (y, logdet)``: ``y = f(x)`` and ``logdet = log|det df/dx|``, shape ``(batch,)``;
* ``inverse(y) -> (x, logdet)``: ``x = f^{-1}(y)`` and ``logdet = log|det df^{-1}/dy|``, i.e. the
  negation of the forward log-det at that point.

No layer keeps log-dets or shapes as hidden state between calls: everything a caller needs is
returned. Composites sum log-dets starting from ``x.new_zeros(batch)`` and invert in reverse order.

Two optional hooks serve inspection (they never change results):

* ``trace(x, records)`` runs ``forward`` and appends a dict per coupling layer to ``records``
  (its input, ``s``, ``t``, output and masks), for the paper's coupling figures;
* ``push_mask(m)`` maps a boolean mask over this layer's input positions to the positions of its
  output that hold the same variables (identity for element-wise layers, a reshuffle for squeezes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Bijection(nn.Module):
    """Base class of every invertible layer; see the module docstring for the contract."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def trace(self, x: Tensor, records: list) -> tuple[Tensor, Tensor]:
        """Forward pass that also records coupling internals (default: nothing to record)."""
        return self.forward(x)

    def push_mask(self, mask: Tensor) -> Tensor:
        """Positions of the output holding the variables at ``mask``'s positions of the input."""
        return mask


class Sequential(Bijection):
    """Apply bijections in order; log-dets add up.

    ``fused``: the fused inference path of a prepared flow (set by :meth:`ood_flow.runtime.Runtime.prepare`),
    which runs a chain of couplings on vectors in one go and the steps of an image flow with what they make from
    their parameters kept (:meth:`ood_flow.flows.fused.FusedPath.run_chain`).
    """

    fused = None

    def __init__(self, *layers: Bijection):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.fused is not None and self.fused.chain_usable(self, x):
            return self.fused.run_chain(self, x)
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, ld = layer.inverse(y)
            logdet = logdet + ld
        return y, logdet

    def trace(self, x: Tensor, records: list) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer.trace(x, records)
            logdet = logdet + ld
        return x, logdet

    def push_mask(self, mask: Tensor) -> Tensor:
        for layer in self.layers:
            mask = layer.push_mask(mask)
        return mask


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: per-sample totals, shape ``(batch,)``."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).sum(dim=1)  # not -1: an empty batch has no size to infer


def standard_normal_logprob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per sample, summed over all latent dimensions (nats)."""
    d = math.prod(z.shape[1:])
    return -0.5 * sum_except_batch(z.pow(2)) - 0.5 * d * torch.log(torch.tensor(2 * torch.pi, dtype=z.dtype))
