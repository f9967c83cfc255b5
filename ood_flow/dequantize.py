"""8-bit data as a flow sees it: dequantization noise, and the log-likelihood of the discrete data.

A flow models a density over continuous inputs in [0, 1]. For 8-bit images the discrete
probability of pixel values ``k`` is approximated by the density of ``(k + u) / 256``,
``u ~ U[0, 1)``, times the bin volume ``256^-D`` (Theis et al. 2016), so

    log P(x) = log p((x + u) / 256) - D log 256        (nats)

and bits/dim = ``-log P(x) / (D ln 2)``. Vectors (features, tables) are used as they are.
:func:`discrete_log_likelihood` is that formula, the one place every command takes it from.

Training draws the noise from a generator; scoring and the figures draw it with
:func:`counter_uniform`, a pure function of ``(seed, sample key)``, draw ``k`` of a sample using
the seed ``seed + DRAW_STRIDE * k``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_256 = math.log(256.0)
DRAW_STRIDE = 7919
"""Seed step between the dequantization draws of one sample (draw ``k`` uses ``seed + 7919 k``)."""


def discrete_log_likelihood(log_density: Tensor, x: Tensor) -> Tensor:
    """``log P(x)`` in nats of the stored data ``x`` from the flow's log-density of its (dequantized) input.

    For 8-bit ``x`` (uint8, (N, ...)) the ``-D log 256`` of the bin volume is added, D the size of
    one sample; vectors take the log-density as it is.

    Example:
        >>> x = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
        >>> discrete_log_likelihood(torch.tensor([2.0]), x)
        tensor([-20.1807])
    """
    if x.dtype != torch.uint8:
        return log_density
    return log_density - math.prod(x.shape[1:]) * LOG_256


def bits_per_dim(log_likelihood: Tensor, dim: int) -> Tensor:
    """Negative log-likelihood in bits per dimension.

    Example:
        >>> bits_per_dim(torch.tensor([-8 * math.log(2.0)]), 4)
        tensor([2.])
    """
    return -log_likelihood / (dim * math.log(2.0))


def dequantize(x: Tensor, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images -> continuous values ``(x + u) / 256`` in [0, 1) with ``u ~ U[0, 1)``."""
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    return (x.to(dtype) + u) / 256.0


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


def counter_normal(index: Tensor, shape: tuple[int, ...], seed: int) -> Tensor:
    """Standard normal noise for samples ``index``, a pure function of (seed, index, position): the
    Box-Muller transform of two :func:`counter_uniform` draws."""
    u1 = counter_uniform(index, shape, seed)
    u2 = counter_uniform(index, shape, seed ^ 0x2545F491)
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)


def dequantize_indexed(x: Tensor, index: Tensor, seed: int) -> Tensor:
    """:func:`dequantize` with :func:`counter_uniform` noise (deterministic per sample)."""
    u = counter_uniform(index, tuple(x.shape[1:]), seed).to(x.device)
    return (x.float() + u) / 256.0


def dequantized_draws(x: Tensor, keys: Tensor, seed: int, draws: int) -> Tensor:
    """``draws`` dequantizations of uint8 ``x`` (N, ...) as one batch of ``draws * N`` (draw-major)."""
    return torch.cat([dequantize_indexed(x, keys, seed + DRAW_STRIDE * k) for k in range(draws)])
