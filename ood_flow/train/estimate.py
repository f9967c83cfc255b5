"""How long training will take: probed before the first step, then measured on the run's own steps.

Before the first step, :func:`probe` counts the FLOPs of one training step per sample
(``torch.utils.flop_counter``) and times the forward and backward pass of one batch, on a deep copy of
the flow under a forked random state: the run's weights, batch-norm statistics, ActNorm initialisation
and random draws cannot be touched by it (and the run's own draws are functions of seed and step).
The counting pass also warms up the kernels, so the timed pass sees what later steps see.

After the first steps, :class:`StepTimer` refines the estimate: the first step pays one-off costs
(memory allocation, kernel selection), so the clock starts when it ends; after ``steps`` more real
optimiser steps the mean time per step gives the estimate. No extra forward pass, batch-norm update or
random draw is made for it.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ood_flow.distributed import SINGLE
from ood_flow.train.losses import BatchLoss

if TYPE_CHECKING:
    from ood_flow.train.loop import Trainer

DAY = 24 * 3600.0


class StepTimer:
    """Call :meth:`tick` after every step; it returns the estimate once, after ``1 + steps`` steps."""

    def __init__(self, steps: int = 5):
        self.steps, self.start, self.first, self.done = steps, None, None, False

    def tick(self, step: int, total: int) -> dict | None:
        now = time.perf_counter()
        if self.done:
            return None
        if self.start is None:
            self.start, self.first = now, step
            return None
        measured = step - self.first
        if measured < self.steps and step < total:
            return None
        self.done = True
        per_step = (now - self.start) / max(measured, 1)
        left = max(total - step, 0)
        if not left:  # the run is over: nothing left to estimate
            return None
        return {"seconds_per_step": per_step, "measured_steps": measured, "from_step": self.first + 1,
                "total_steps": total, "steps_left": left, "seconds_left": per_step * left}


def probe_step(flow: nn.Module, loss: Callable[[nn.Module, int], Tensor], batch_size: int) -> dict:
    """Time one training step's forward and backward pass on a copy of ``flow``.

    Args:
        flow: the model to train; never run itself.
        loss: ``loss(copy, n)`` is the training loss of the first ``n`` samples of a batch under ``copy``.
        batch_size: the samples of one step.

    Returns:
        ``seconds_per_step`` (one forward and backward pass of ``batch_size`` samples; the optimiser update and
        validation are not included) and ``flops_per_sample`` (of that pass, counted on two samples).
    """
    device = next(flow.parameters()).device
    twin = copy.deepcopy(flow).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with FlopCounterMode(display=False) as counter:  # two samples: batch norm needs more than one
            loss(twin, min(2, batch_size)).backward()
        twin.zero_grad(set_to_none=True)
        _sync(device)
        start = time.perf_counter()
        loss(twin, batch_size).backward()
        _sync(device)
        seconds = time.perf_counter() - start
    return {"seconds_per_step": seconds, "flops_per_sample": counter.get_total_flops() / min(2, batch_size)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(trainer: Trainer) -> dict | None:
    """The time left for ``trainer``'s run, from :func:`probe_step` on its first batch; None for a model
    fitted in closed form, which takes no steps, for a run with none left, and in a process group, whose layers
    may synchronise across processes (the measured estimate follows after the first steps there)."""
    total = trainer.total_steps()
    left = max(total - trainer.position["step"], 0)
    if trainer.flow.closed_form or trainer.dist.active or not left:
        return None
    cfg, batch = trainer.cfg, trainer.train_idx[: trainer.cfg.batch_size]

    def loss(twin: nn.Module, n: int) -> Tensor:
        step_loss = BatchLoss(trainer.x, trainer.negative, cfg, twin.log_prob, SINGLE, trainer.device,
                              noise_std=trainer.batch_loss.noise_std)
        with trainer.runtime.st_networks():
            return step_loss(batch[:n], trainer.position["epoch"], trainer.position["step"])[0]

    probed = probe_step(trainer.flow, loss, int(batch.numel()))
    return {**probed, "probed": True, "batch_size": int(batch.numel()), "total_steps": total, "steps_left": left,
            "seconds_left": probed["seconds_per_step"] * left, "early_stopping": bool(cfg.patience),
            "device": trainer.device.type, "parameters": sum(p.numel() for p in trainer.flow.parameters()),
            "compiled": bool(cfg.compile)}  # the probe runs eagerly: compilation's first minute is not in it


def forecast(trainer: Trainer, alternative: Callable[[], Trainer | None] | None = None) -> dict | None:
    """:func:`probe`'s estimate for ``trainer`` (``over_a_day`` says whether it is); beyond a day, also that of
    the run ``alternative()`` builds (the same command with a smaller preset), under ``alternative`` with its
    ``parameters``, ``total_steps``, ``seconds`` (for all its steps: an upper bound where it stops early) and
    ``early_stopping``."""
    estimate = probe(trainer)
    if estimate is None:
        return None
    estimate["over_a_day"] = estimate["seconds_left"] > DAY
    if not estimate["over_a_day"] or alternative is None:
        return estimate
    device = trainer.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # building seeds the RNG
        other = alternative()
        theirs = probe(other) if other is not None else None
    if theirs is not None:
        estimate["alternative"] = {"parameters": theirs["parameters"], "total_steps": theirs["total_steps"],
                                   "seconds": theirs["seconds_left"], "early_stopping": theirs["early_stopping"]}
    return estimate
