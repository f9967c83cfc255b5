"""Affine coupling: ``y = (x + t(x_cond)) * exp(s(x_cond))`` on the changed part, identity elsewhere."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ood_flow.flows.base import Bijection, sum_except_batch
from ood_flow.flows.precision import run_st
from ood_flow.flows.weightnorm import WNScale


class AffineCoupling(Bijection):
    """Affine coupling layer whose conditioned/changed split comes from a mask.

    The st-network sees ``mask.conditioner(x)`` and predicts ``2 * k`` channels: a raw log-scale and
    a shift for each of the ``k`` changed channels. The log-scale is bounded, ``s = rescale(tanh(raw))``
    with a learnable, weight-normalised factor per channel (:class:`WNScale`, as in RealNVP and the
    authors' code), which keeps early training stable. Log-det: the sum of ``s`` over the changed
    positions.

    Args:
        mask: a mask from :mod:`ood_flow.flows.masks`.
        shape: input shape of one sample, (C, H, W) or (D,).
        make_net: factory ``(in_channels, out_channels, spatial) -> nn.Module``; it is also told
            ``checkerboard=True`` or ``False`` (the authors' ResNet doubles its input in checkerboard couplings).

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(self, mask: nn.Module, shape: tuple[int, ...], make_net: Callable[..., nn.Module]):
        super().__init__()
        self.mask = mask
        self.shape = tuple(shape)
        cin, k = mask.net_channels(shape[0])
        self.net = make_net(cin, 2 * k, tuple(shape[1:]) or None, checkerboard=mask.name == "checkerboard")
        self.rescale = WNScale(k, len(shape))

    def _st(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale_shift(run_st(self.net, self.mask.conditioner(x)))

    def scale_shift(self, out: Tensor, factor: Tensor | None = None, *, inplace: bool = False,
                    via_sigmoid: bool = False) -> tuple[Tensor, Tensor]:
        """``s`` and ``t`` from the st-network's output ``out``: ``s`` bounded by ``tanh`` and the factor per
        channel (``self.rescale.factor()``, or that factor as the fused path keeps it), both zero outside the
        changed positions. ``inplace`` (inference only: autograd keeps ``tanh``'s output) scales that output
        where it lies: the same products, one tensor fewer. ``via_sigmoid`` (with ``inplace``; the fused path
        asks for it under bf16 only) computes ``tanh(raw)`` as ``2 sigmoid(2 raw) - 1``: within about 1e-7 of it,
        far inside bf16's rounding of ``raw`` (2^-9 relative), and 3-6x cheaper on a CPU, where ``torch.tanh``'s
        kernel is several times slower than ``torch.sigmoid``'s; float32 scoring never takes it."""
        raw, t = out.chunk(2, dim=1)
        factor = self.rescale.factor() if factor is None else factor
        if inplace and via_sigmoid:  # factor * (2 sigmoid(2 raw) - 1), in place after the first product
            s = torch.sigmoid_(raw * 2).mul_(2 * factor).sub_(factor)
        else:
            s = torch.tanh(raw).mul_(factor) if inplace else factor * torch.tanh(raw)  # self.rescale(tanh(raw))
        return self.mask.restrict(s), self.mask.restrict(t)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._st(x)
        y = self.mask.merge(x, affine(self.mask.changed(x), s, t))
        return y, sum_except_batch(s)

    def scored(self, x: Tensor, factor: Tensor, *, via_sigmoid: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`forward` without gradients, given the scale factor (``self.rescale.factor()``, which a fused
        inference path keeps between batches): ``s`` and ``exp(s)`` computed in place (:meth:`scale_shift`'s
        ``inplace``, :func:`affine`'s ``consume``), the same numbers as :meth:`forward`'s; ``via_sigmoid`` as
        :meth:`scale_shift` takes it."""
        s, t = self.scale_shift(run_st(self.net, self.mask.conditioner(x)), factor, inplace=True,
                                via_sigmoid=via_sigmoid)
        logdet = sum_except_batch(s)  # before affine turns s into exp(s)
        return self.mask.merge(x, affine(self.mask.changed(x), s, t, consume=True)), logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._st(y)  # the conditioned part is unchanged, so the st-network sees the same input
        x = self.mask.merge(y, self.mask.changed(y) * torch.exp(-s) - t)
        return x, -sum_except_batch(s)

    def trace(self, x: Tensor, records: list) -> tuple[Tensor, Tensor]:
        s, t = self._st(x)
        y = self.mask.merge(x, affine(self.mask.changed(x), s, t))
        cond, change = self.mask.parts(self.shape)
        records.append({"mask": self.mask.name, "shape": self.shape, "input": x, "output": y,
                        "s": self._full(s, x), "t": self._full(t, x), "cond": cond, "change": change})
        return y, sum_except_batch(s)

    def _full(self, v: Tensor, x: Tensor) -> Tensor:
        """``s`` or ``t`` at full input shape (zeros where nothing changes)."""
        return self.mask.merge(torch.zeros_like(x), v) if self.mask.kind == "channel" else v


def affine(x: Tensor, s: Tensor, t: Tensor, *, consume: bool = False) -> Tensor:
    """The coupling's forward map of the changed part, ``(x + t) * exp(s)``; its log-det is the sum of ``s``.
    ``consume`` (inference only, once that sum is taken) turns ``s`` into ``exp(s)`` where it lies and multiplies
    in place of ``x + t``: the same numbers, two tensors fewer."""
    return (x + t).mul_(s.exp_()) if consume else (x + t) * torch.exp(s)
