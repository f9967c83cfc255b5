"""The pieces of the training objective that are pure functions of their inputs and of (seed, epoch, step).

Every random draw is a pure function of the run's seed and where it is used: a sample's
dequantization noise and pixel perturbation of (seed, epoch, sample index) (:func:`noise_seed`
with :func:`~ood_flow.dequantize.counter_uniform`), the negatives of a step of (seed, step). So a
resumed run draws exactly what an uninterrupted one would, and the draws do not depend on how
many processes share the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ood_flow.dequantize import bits_per_dim, counter_uniform


MAX_HELD_OUT = 2000
"""The most samples the validation split, and the calibration split, each hold out."""


def split_holdout(n: int, val_fraction: float, cal_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(train, validation, calibration) indices: one seeded shuffle, its first part the validation split
    (at most :data:`MAX_HELD_OUT`), the next the calibration split (likewise), none held out below 20 samples.

    Example:
        >>> train, val, cal = split_holdout(100, 0.1, 0.2, seed=0)
        >>> len(train), len(val), len(cal), len(set(train.tolist()) | set(val.tolist()) | set(cal.tolist()))
        (70, 10, 20, 100)
    """
    k = min(int(n * val_fraction), MAX_HELD_OUT) if n >= 20 else 0
    c = min(int(n * cal_fraction), MAX_HELD_OUT) if n >= 20 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k + c:].sort().values, perm[:k].sort().values, perm[k:k + c].sort().values


def noise_seed(seed: int, epoch: int, salt: int) -> int:
    """The seed of the per-sample noise of ``epoch`` (``salt`` tells its uses apart), for
    :func:`~ood_flow.dequantize.counter_uniform` keyed by sample index."""
    return (seed * 1_000_003 + epoch * 7919 + salt * 104_729) % (2**63)


def step_generator(seed: int, step: int, salt: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 31 + salt) % (2**63))


def negative_objective(ll: Tensor, neg_ll: Tensor, threshold: float, n: int | None = None,
                       n_above: int | None = None) -> tuple[Tensor, Tensor]:
    """The paper's objective (7) (Appendix B): ``0.5 * (mean NLL_in + mean of ll_neg over negatives above C)``.

    Negatives whose log-likelihood is at or below ``threshold`` (C) are dropped, so they give no
    gradient; when none is above C the loss is the plain mean NLL, as in the authors' code.
    ``n`` and ``n_above`` are the sizes of the whole batch and of its negatives above C when ``ll``
    and ``neg_ll`` are one process's share (default: these tensors' own).

    Returns:
        The loss and the boolean mask of the negatives that count.
    """
    above = neg_ll > threshold
    n = ll.numel() if n is None else n
    n_above = int(above.sum()) if n_above is None else n_above
    if n_above == 0:
        return -ll.sum() / n, above
    return 0.5 * (-ll.sum() / n + neg_ll[above].sum() / n_above), above


def perturb_pixels(x: Tensor, rate: float, keys: Tensor, seed: int) -> Tensor:
    """Replace each pixel with a uniform random 8-bit value with probability ``rate`` (Ren et al. 2019);
    which pixels and their values are a pure function of (seed, sample key)."""
    shape = tuple(x.shape[1:])
    replace = counter_uniform(keys, shape, seed).to(x.device) < rate
    noise = (counter_uniform(keys, shape, seed ^ 0x9E3779B9).to(x.device) * 256).to(torch.uint8)
    return torch.where(replace, noise, x)


def bpd(ll: Tensor, dim: int) -> float:
    """Mean bits/dim of the log-likelihoods ``ll`` (nats) of ``dim``-dimensional data."""
    return float(bits_per_dim(ll.double().mean(), dim))
