"""The pieces of the training objective that are pure functions of their inputs and of (seed, step).

Every random draw of a training step comes from a generator seeded by ``(seed, step, salt)``, so a
resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ood_flow.dequantize import bits_per_dim


def split_validation(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, validation) indices: a seeded shuffle, at most 2000 held out, none below 20 samples."""
    k = min(int(n * fraction), 2000) if n >= 20 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def step_generator(seed: int, step: int, salt: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 31 + salt) % (2**63))


def negative_objective(ll: Tensor, neg_ll: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """The paper's objective (7) (Appendix B): ``0.5 * (mean NLL_in + mean of ll_neg over negatives above C)``.

    Negatives whose log-likelihood is at or below ``threshold`` (C) are dropped, so they give no
    gradient; when none is above C the loss is the plain mean NLL, as in the authors' code.

    Returns:
        The loss and the boolean mask of the negatives that count.
    """
    above = neg_ll > threshold
    if not bool(above.any()):
        return -ll.mean(), above
    return 0.5 * (-ll.mean() + neg_ll[above].mean()), above


def perturb_pixels(x: Tensor, rate: float, gen: torch.Generator) -> Tensor:
    """Replace each pixel with a uniform random 8-bit value with probability ``rate`` (Ren et al. 2019)."""
    replace = torch.rand(x.shape, generator=gen, device=x.device) < rate
    noise = torch.randint(0, 256, x.shape, generator=gen, device=x.device, dtype=torch.uint8)
    return torch.where(replace, noise, x)


def bpd(ll: Tensor, dim: int) -> float:
    """Mean bits/dim of the log-likelihoods ``ll`` (nats) of ``dim``-dimensional data."""
    return float(bits_per_dim(ll.double().mean(), dim))
