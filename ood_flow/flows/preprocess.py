"""Preprocessing bijections that are part of the likelihood: logit for images, standardization for vectors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_flow.flows.base import Bijection, sum_except_batch


class Logit(Bijection):
    """``y = logit(a + (1 - 2a) x)`` for continuous pixels ``x`` in [0, 1].

    The squeeze by ``a`` keeps the logit finite at 0 and 1. Log-det per element:
    ``log(1 - 2a) - log p - log(1 - p)`` with ``p = a + (1 - 2a) x``.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017, Section 4.1 (a = 0.05).
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_p, log_q = torch.log(p), torch.log1p(-p)  # each once: both terms need them
        y = log_p - log_q
        ld = math.log(1 - 2 * self.alpha) - log_p - log_q
        return y, sum_except_batch(ld)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(y)
        x = (p - self.alpha) / (1 - 2 * self.alpha)
        ld = F.logsigmoid(y) + F.logsigmoid(-y) - math.log(1 - 2 * self.alpha)
        return x, sum_except_batch(ld)


class Standardize(Bijection):
    """``y = (x - mean) / std`` with statistics fitted once on training data and stored as buffers.

    Embeddings and raw tabular columns can have wildly different scales; without this the first
    couplings spend their capacity (and huge log-dets) on rescaling.

    With ``floor > 0`` a column's std is floored at ``floor`` times the median column std. CNN
    embeddings have near-constant columns (pooled ReLU channels that are zero for almost every
    training image): dividing by their tiny std turned a test value a little off that spike into a
    latent of hundreds of standard deviations, and in-distribution bits/dim of a few samples into
    the thousands (issue 13). Feature files written by ``oodflow embed`` get
    :data:`~ood_flow.flows.configs.FEATURE_STD_FLOOR`; tables keep ``floor = 0``, since their columns
    may rightly differ in scale by orders of magnitude. Constant columns get std 1 without a floor.
    """

    def __init__(self, dim: int, eps: float = 1e-6, floor: float = 0.0):
        super().__init__()
        self.eps, self.floor = eps, floor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("log_std", torch.zeros(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Fit mean and std on ``x`` (N, D), flooring each std at ``floor`` x the median column std."""
        x = x.to(self.mean.dtype)
        std = x.std(dim=0, unbiased=False)
        spread = std[std > self.eps]
        if self.floor > 0 and spread.numel():
            std = torch.clamp(std, min=self.floor * float(spread.median()))
        std = torch.where(std > self.eps, std, torch.ones_like(std))  # constant: nothing to rescale
        self.mean.copy_(x.mean(dim=0))
        self.log_std.copy_(std.log())
        self.fitted.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = (x - self.mean) * torch.exp(-self.log_std)
        return y, (-self.log_std.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y * torch.exp(self.log_std) + self.mean
        return x, self.log_std.sum().expand(y.shape[0])
