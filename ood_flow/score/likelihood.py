"""Log-likelihood scores: ``log P(x)`` of the data as stored, with its parts.

For 8-bit images the score is the log-probability of the discrete pixels (nats), estimated with
uniform dequantization noise that is a fixed function of ``(seed, sample id)``: the same model
and input give the same score on every run, whatever the batch size or ``--limit``. With
``dequant_samples=K`` the score is the mean over K noise draws.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ood_flow.dequantize import bits_per_dim, dequantized_draws, discrete_log_likelihood
from ood_flow.device import to_device
from ood_flow.flows.models import Flow, batchnorm_train


def sample_keys(ids) -> Tensor:
    """A stable integer key per sample id (CRC-32 of the id string) that seeds its noise."""
    return torch.tensor([zlib.crc32(str(i).encode()) for i in ids], dtype=torch.int64)


def _device_of(flow: Flow) -> torch.device:
    return next(flow.parameters()).device


def _batch_parts(flow: Flow, x: Tensor, keys: Tensor, seed: int, draws: int) -> tuple[Tensor, Tensor]:
    """Mean log-prior and log-det over ``draws`` dequantization draws (one forward for all draws)."""
    if x.dtype != torch.uint8:
        return flow.log_prob_parts(x.float())
    log_prior, logdet = flow.log_prob_parts(dequantized_draws(x, keys, seed, draws))
    return log_prior.view(draws, -1).mean(0), logdet.view(draws, -1).mean(0)


def score_likelihood(flow: Flow, x: Tensor, keys: Tensor | None = None, *, batch_size: int = 256,
                     dequant_samples: int = 1, seed: int = 0, bn_train: bool = False,
                     progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Score every sample of ``x`` (uint8 images or float vectors) with ``flow``.

    Args:
        keys: per-sample noise keys (:func:`sample_keys` of the ids); default: row positions.
        dequant_samples: average the log-likelihood over this many noise draws.
        bn_train: batch norm uses each batch's statistics (Song et al. 2019); scores then depend
            on what else is in the batch.
        progress: called with the number of samples done after each batch.

    Returns:
        ``log_likelihood`` (nats, of the stored data), ``bits_per_dim``, ``log_prior`` and
        ``log_det`` (the flow's parts, before the ``-D log 256`` correction), float64 arrays.
    """
    if dequant_samples < 1:
        raise ValueError(f"dequant_samples must be at least 1, got {dequant_samples}")
    keys = torch.arange(x.shape[0]) if keys is None else keys
    device, parts = _device_of(flow), []
    flow.eval()
    with torch.inference_mode(), (batchnorm_train(flow) if bn_train else contextlib.nullcontext()):
        for start in range(0, x.shape[0], batch_size):
            xb = to_device(x[start : start + batch_size], device)
            kb = to_device(keys[start : start + batch_size], device)
            parts.append(torch.stack(_batch_parts(flow, xb, kb, seed, dequant_samples)).double().cpu())
            if progress:
                progress(xb.shape[0])
    return _assemble(torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.float64), x)


def _assemble(parts: Tensor, x: Tensor) -> dict[str, np.ndarray]:
    log_prior, log_det = parts
    ll = discrete_log_likelihood(log_prior + log_det, x)
    return {"log_likelihood": ll.numpy(), "bits_per_dim": bits_per_dim(ll, math.prod(x.shape[1:])).numpy(),
            "log_prior": log_prior.numpy(), "log_det": log_det.numpy()}
