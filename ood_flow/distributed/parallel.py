"""Data-parallel training: the flow's log-density under DistributedDataParallel, and each process's share.

Batches are drawn for the whole job (the global batch of ``--batch-size``), exactly as one process
would draw them; process ``r`` of ``W`` takes positions ``r, r + W, ...`` of each (the strided
split of :class:`~torch.utils.data.DistributedSampler`). Losses are sums over the share divided
by the global batch size and multiplied by ``W``, so DDP's average of the gradients is exactly the
gradient of the mean over the global batch, whatever ``W`` and however uneven the shares.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ood_flow.distributed.group import Dist
from ood_flow.errors import UsageError


class _LogProb(nn.Module):
    """``flow.log_prob`` as a module's forward, which is what DDP wraps."""

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)


def log_prob_fn(flow: nn.Module, d: Dist) -> Callable[[Tensor], Tensor]:
    """The log-density to train with: ``flow.log_prob``, under DDP inside a process group (its
    construction broadcasts rank 0's weights and statistics, so every process starts alike)."""
    if not d.active or not any(p.requires_grad for p in flow.parameters()):  # closed-form models: no gradient
        return lambda x: flow.log_prob(x)  # looked up per call (a test may replace it)
    ids = [d.local_rank] if d.backend == "nccl" else None
    return DistributedDataParallel(_LogProb(flow), device_ids=ids)


def shard(batch: Tensor, d: Dist) -> Tensor:
    """This process's positions of a global batch (every ``world``-th, from ``rank``)."""
    return batch[d.rank :: d.world]


def loss_scale(global_size: int, d: Dist) -> float:
    """The factor of a sum over this process's share that makes DDP's averaged gradient the gradient of
    the mean over the global batch."""
    return d.world / global_size


def check_layout(d: Dist, n_train: int, batch_size: int) -> None:
    """Refuse what data parallelism cannot split: more processes than samples, or a global batch that the
    processes cannot share equally (UsageError, exit 2)."""
    if d.world <= 1:
        return
    if d.world > n_train:
        raise UsageError(f"{d.world} processes but only {n_train} training samples; use at most {n_train} processes")
    if batch_size % d.world:
        raise UsageError(f"--batch-size {batch_size} is the global batch and must be a multiple of the {d.world} "
                         "processes")


def describe(d: Dist, batch_size: int) -> str:
    """The log line that says how the job is split."""
    threads = f", {d.threads} thread(s) each" if d.threads else ""
    return (f"data parallel: {d.world} processes ({d.backend}{threads}); --batch-size {batch_size} is the global "
            f"batch, {batch_size // d.world} per process")


@torch.no_grad()
def broadcast_buffers(module: nn.Module, d: Dist) -> None:
    """Rank 0's batch-norm statistics everywhere (what DDP does before each forward pass)."""
    if not d.active:
        return
    import torch.distributed as dist

    for b in module.buffers():
        dist.broadcast(b, 0)


def merge_sums(sums: dict, d: Dist) -> dict:
    """Running sums (of a training epoch) added over all processes into rank 0's; the others restart from zero,
    so that adding everyone's again later counts each sample once (one all-reduce)."""
    if not d.active:
        return sums
    total = d.sum(torch.tensor([float(v) for v in sums.values()], dtype=torch.float64)).tolist()
    mine = total if d.writer else [0.0] * len(total)
    return {k: type(v)(t) for (k, v), t in zip(sums.items(), mine)}
