"""Models fitted in closed form (such as the Gaussian baseline): one fit on the training part,
validated, recorded and saved as a single epoch by the same :class:`~ood_flow.train.loop.Trainer`.

There are no steps to count, so the fit reports once, through ``events.on_fit``, instead of a
progress bar of one step and an epoch line."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import torch

from ood_flow.train.checkpoint import checkpoint_path
from ood_flow.train.epoch import zero_sums
from ood_flow.train.objective import bpd
from ood_flow.train.result import TrainResult

if TYPE_CHECKING:
    from ood_flow.train.loop import Trainer


def fit_closed_form(trainer: Trainer) -> TrainResult:
    """Fit ``trainer.flow`` on the training part, validate it and write the model file and checkpoint."""
    start = time.time()
    flow = trainer.flow
    with contextlib.ExitStack() as stack:
        trainer._claim(stack)
        x = trainer.x[trainer.train_idx].float().to(trainer.device)
        flow.fit_closed_form(x)
        with torch.no_grad():
            train_bpd = bpd(flow.log_prob(x), flow.dim)
        summary = {"epoch": 1, "step": 0, "train_bpd": train_bpd, "val_bpd": trainer.validate(), "complete": True}
        trainer.history.append(summary)
        trainer.position = {"epoch": 1, "batch": 0, "step": 0, "sums": zero_sums()}
        trainer.save()
    trainer.events.on_fit({"model": flow.name, "n_train": int(trainer.train_idx.numel()),
                           "n_val": int(trainer.val_idx.numel()), "train_bpd": train_bpd,
                           "val_bpd": summary["val_bpd"], "seconds": time.time() - start})
    return TrainResult(flow, 0, trainer.history, time.time() - start, checkpoint=checkpoint_path(trainer.out),
                       model=trainer.out, n_train=int(trainer.train_idx.numel()), n_val=int(trainer.val_idx.numel()),
                       n_calibration=int(trainer.cal_idx.numel()))
