"""What an epoch of training adds up and reports: the running sums of its steps, the held-out
validation, and the summary that goes into the history.

The sums are plain numbers so that they travel in a checkpoint's ``position`` (a run stopped
mid-epoch resumes with them) and merge across processes (:func:`ood_flow.distributed.merge_sums`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ood_flow import distributed
from ood_flow.distributed import Dist
from ood_flow.score.likelihood import score_likelihood
from ood_flow.train.objective import bpd

SHUFFLE_SEED_STRIDE = 7919
"""The data order of epoch ``e`` is drawn with seed ``seed * SHUFFLE_SEED_STRIDE + e`` (the same number as
:data:`ood_flow.dequantize.DRAW_STRIDE`, by history; a different thing)."""


def epoch_batches(train_idx: Tensor, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """The batches (sample indices) of ``epoch``: a seeded shuffle of ``train_idx`` cut into full batches
    (the last partial one dropped), or one batch of them all when there are fewer than ``batch_size``."""
    n = train_idx.numel()
    order = torch.Generator().manual_seed(seed * SHUFFLE_SEED_STRIDE + epoch)
    perm = train_idx[torch.randperm(n, generator=order)]
    full = n // batch_size * batch_size if n >= batch_size else n
    return list(perm[:full].split(max(1, min(batch_size, n))))


def zero_sums() -> dict:
    """The sums of an epoch before its first step."""
    return {"ll": 0.0, "n": 0, "neg_ll": 0.0, "neg_n": 0}


def add_step(sums: dict, metrics: dict, dim: int) -> dict:
    """Add one step's log-likelihoods (nats) to ``sums`` (in place); return the step's report."""
    report = {"bpd": bpd(metrics["ll"], dim)}
    if "neg_ll" in metrics:
        report["ll"], report["neg_ll"] = float(metrics["ll"].mean()), float(metrics["neg_ll"].mean())
        sums["neg_ll"] += float(metrics["neg_ll"].sum())
        sums["neg_n"] += metrics["neg_ll"].numel()
    sums["ll"] += float(metrics["ll"].sum())
    sums["n"] += metrics["ll"].numel()
    return report


def epoch_summary(sums: dict, epoch: int, step: int, val_bpd: float | None, finished: bool, dim: int) -> dict:
    """The history record of an epoch: mean training and validation bits/dim, and for negative
    training the mean log-likelihoods (nats) of the in-distribution samples and the negatives seen."""
    train_bpd = bpd(torch.tensor(sums["ll"] / max(sums["n"], 1)), dim) if sums["n"] else None
    summary = {"epoch": epoch, "step": step, "train_bpd": train_bpd, "val_bpd": val_bpd, "complete": finished}
    if sums["neg_n"]:
        summary["train_ll"] = sums["ll"] / max(sums["n"], 1)
        summary["negative_ll"] = sums["neg_ll"] / sums["neg_n"]
    return summary


def held_out_scores(flow: nn.Module, x: Tensor, idx: Tensor, seed: int, dist: Dist) -> np.ndarray:
    """The log-likelihoods (nats) of the held-out samples ``idx`` under ``flow`` as it is, scored as ``oodflow
    score`` scores them (one dequantization draw keyed by sample index, fp32). Each process scores its share
    and every process gets them all (in ``idx``'s order for one process, grouped by process for several)."""
    distributed.broadcast_buffers(flow, dist)  # per-process batch norm: rank 0's statistics
    mine = distributed.shard(idx, dist)
    scores = score_likelihood(flow, x[mine], mine, seed=seed)
    return np.concatenate([p["log_likelihood"] for p in dist.gather({"log_likelihood": scores["log_likelihood"]})])


def validate(flow: nn.Module, x: Tensor, val_idx: Tensor, seed: int, dist: Dist) -> float | None:
    """Mean validation bits/dim (None without a validation split)."""
    if val_idx.numel() == 0:
        return None
    return bpd(torch.from_numpy(held_out_scores(flow, x, val_idx, seed, dist)), flow.dim)
