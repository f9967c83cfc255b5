"""The loss of one training step: ``-log P(x)`` of a batch, or the paper's negative-training objective.

The batch is the global one (what one process would train on); each process computes its share
(:func:`~ood_flow.distributed.shard`) and scales its sum so that the gradient averaged over the
processes is that of the whole batch (:func:`~ood_flow.distributed.loss_scale`). Dequantization
noise and pixel perturbation are pure functions of (seed, epoch, sample index), the negatives of
(seed, step), so no draw depends on the number of processes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ood_flow import distributed
from ood_flow.dequantize import counter_normal, dequantize_indexed, discrete_log_likelihood
from ood_flow.device import to_device
from ood_flow.distributed import Dist
from ood_flow.train.config import TrainConfig
from ood_flow.train.objective import negative_objective, noise_seed, perturb_pixels, step_generator


class BatchLoss:
    """Computes the training loss of a batch of sample indices.

    Args:
        x: the training samples (uint8 images or float vectors).
        negative: samples whose likelihood to push down, or None.
        cfg: seed, perturbation rate and negative threshold.
        log_prob: the flow's log-density (under DDP in a data-parallel run).
        dist: the processes sharing each batch.
        device: where the flow runs.
        noise_std: vectors: the standard deviation of the Gaussian noise added to each column
            (``cfg.noise`` times the column's spread over the training part), or None for none.
    """

    def __init__(self, x: Tensor, negative: Tensor | None, cfg: TrainConfig, log_prob: Callable[[Tensor], Tensor],
                 dist: Dist, device, noise_std: Tensor | None = None):
        self.x, self.negative, self.cfg, self.log_prob = x, negative, cfg, log_prob
        self.dist, self.device = dist, device
        self.noise_std = None if noise_std is None else to_device(noise_std.float(), device)

    def _input(self, x: Tensor, keys: Tensor, seed: int) -> Tensor:
        if x.dtype == torch.uint8:
            return dequantize_indexed(x, keys, seed)
        if self.noise_std is None:
            return x.float()
        return x.float() + counter_normal(keys, tuple(x.shape[1:]), seed).to(x.device) * self.noise_std

    def __call__(self, batch: Tensor, epoch: int, step: int) -> tuple[Tensor, dict]:
        """The loss of this process's share of the global ``batch`` (indices into ``x``) at ``epoch`` and
        ``step``, and its per-sample log-likelihoods (``ll``, ``neg_ll``)."""
        idx, seed = distributed.shard(batch, self.dist), self.cfg.seed
        scale = distributed.loss_scale(batch.numel(), self.dist)
        x = to_device(self.x[idx], self.device)
        if self.cfg.perturb:
            x = perturb_pixels(x, self.cfg.perturb, idx, noise_seed(seed, epoch, 1))
        xin = self._input(x, idx, noise_seed(seed, epoch, 0))
        if self.negative is None:
            ll = discrete_log_likelihood(self.log_prob(xin), x)
            return -ll.sum() * scale, {"ll": ll.detach()}
        ll, neg_ll = self._joint_log_likelihood(x, xin, step, batch.numel())
        above = int(self.dist.sum(torch.tensor([(neg_ll > self.cfg.negative_threshold).sum()]))[0])
        loss, _ = negative_objective(ll, neg_ll, self.cfg.negative_threshold, n=batch.numel(), n_above=above)
        return loss * self.dist.world, {"ll": ll.detach(), "neg_ll": neg_ll.detach()}

    def _joint_log_likelihood(self, x: Tensor, xin: Tensor, step: int, size: int) -> tuple[Tensor, Tensor]:
        """Log-likelihoods of the batch and of as many negatives from one forward pass, as the authors' code
        does: in train mode batch norm then normalises with the statistics of the mixed batch, which its
        running (eval) statistics also track. The step's negatives are drawn for the global batch (a
        function of seed and step) and shared out like it; their noise is keyed by position in it."""
        gen = step_generator(self.cfg.seed, step, 1, "cpu")
        picks = distributed.shard(torch.randint(0, self.negative.shape[0], (size,), generator=gen), self.dist)
        neg = to_device(self.negative[picks], self.device)
        neg_in = self._input(neg, distributed.shard(torch.arange(size), self.dist), noise_seed(self.cfg.seed, step, 2))
        ll = discrete_log_likelihood(self.log_prob(torch.cat([xin, neg_in])), x)
        return ll[: len(x)], ll[len(x):]


def noise_std(x_train: Tensor, noise: float | None) -> Tensor | None:
    """``--noise``: the per-column standard deviation of the Gaussian noise added to training vectors, ``noise``
    times each column's over the training part ``x_train`` (None: no noise)."""
    if not noise:
        return None
    return noise * x_train.double().std(0, correction=0).float()
