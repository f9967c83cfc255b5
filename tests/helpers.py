"""Helpers shared by the tests: random non-trivial weights, brute-force Jacobians, the real data's root."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ood_flow.flows.layers import ActNorm


def real_data_root() -> tuple[Path | None, str]:
    """``(root, reason)``: the real datasets' root, ``$OODFLOW_DATA_DIR``, where it names a folder, else None
    and why the tests that need it skip (unset, or set to a folder that is not there, as CI sets it to
    ``../shared/data`` on a machine that may not have it)."""
    root = os.environ.get("OODFLOW_DATA_DIR")
    if not root:
        return None, "OODFLOW_DATA_DIR not set: real datasets not available"
    if not Path(root).is_dir():
        return None, f"OODFLOW_DATA_DIR={root} is not a folder: real datasets not available"
    return Path(root), ""


@torch.no_grad()
def randomize(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Give every parameter and batch-norm statistic a random, non-trivial value.

    Zero-initialised last layers make every coupling the identity, and every log-det formula
    passes on the identity; tests must perturb them first.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype) * scale
        p.add_(noise if p.dim() > 0 else noise.abs())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5)
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    return module


def jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """``slogdet`` of the autograd Jacobian of ``fn`` at each sample of ``x`` (per-sample, brute force)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(xi)).reshape(-1), xi.reshape(-1),
                                                   vectorize=True)
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        out.append(logabs)
    return torch.stack(out)
