"""Turning stored data into flow inputs: uniform dequantization of 8-bit images.

A flow models a density over continuous inputs in [0, 1]. For 8-bit images the discrete
probability of pixel values ``k`` is approximated by the density of ``(k + u) / 256``,
``u ~ U[0, 1)``, times the bin volume ``256^-D`` (Theis et al. 2016), so

    log P(x) = log p((x + u) / 256) - D log 256        (nats)

and bits/dim = ``-log P(x) / (D ln 2)``. Vectors (features, tables) are used as they are.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_256 = math.log(256.0)


def dequantize(x: Tensor, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images -> continuous values ``(x + u) / 256`` in [0, 1) with ``u ~ U[0, 1)``."""
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    return (x.to(dtype) + u) / 256.0


def to_flow_input(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dequantize uint8 images; pass float vectors through as float32."""
    if x.dtype == torch.uint8:
        return dequantize(x, generator)
    return x.float()


def discrete_correction(x: Tensor) -> float:
    """What to add to a continuous log-density to get the log-probability of the stored data.

    ``-D log 256`` for 8-bit images (pixels scaled by 1/256), 0 for vectors.
    """
    return -x[0].numel() * LOG_256 if x.dtype == torch.uint8 else 0.0


def bits_per_dim(log_likelihood: Tensor, dim: int) -> Tensor:
    """Negative log-likelihood in bits per dimension."""
    return -log_likelihood / (dim * math.log(2.0))
