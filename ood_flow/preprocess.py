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


_MASK32 = 0xFFFFFFFF


def _mix32(h: Tensor) -> Tensor:
    """A 32-bit integer finaliser (xor-shift-multiply), on int64 tensors holding 32-bit values."""
    h = ((h ^ (h >> 16)) * 0x7FEB352D) & _MASK32
    h = ((h ^ (h >> 15)) * 0x846CA68B) & _MASK32
    return h ^ (h >> 16)


def counter_uniform(index: Tensor, shape: tuple[int, ...], seed: int) -> Tensor:
    """Uniform [0, 1) noise for samples ``index`` (int64, (B,)), a pure function of (seed, index, position).

    Scoring noise drawn this way gives every sample the same dequantization whatever the batch
    size, ``--limit`` or order, so a sample's score never depends on what else is scored.
    """
    n = math.prod(shape)
    counter = index.to(torch.int64)[:, None] * n + torch.arange(n, device=index.device)[None]
    h = _mix32((counter & _MASK32) ^ _mix32(torch.tensor(seed & _MASK32, device=index.device)))
    h = _mix32(h ^ ((counter >> 32) & _MASK32) ^ 0x5BD1E995)
    return ((h >> 8).to(torch.float32) / 2.0**24).reshape(index.shape[0], *shape)  # 24 bits: exact in float32


def dequantize_indexed(x: Tensor, index: Tensor, seed: int) -> Tensor:
    """:func:`dequantize` with :func:`counter_uniform` noise (deterministic per sample)."""
    u = counter_uniform(index, tuple(x.shape[1:]), seed).to(x.device)
    return (x.float() + u) / 256.0
