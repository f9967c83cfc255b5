"""Models fitted in closed form (such as the Gaussian baseline): one fit on the training part, which the
:class:`~ood_flow.train.loop.Trainer` validates, records and saves as a single epoch.

There are no steps to count, so the fit reports once, through ``events.on_fit``, instead of a
progress bar of one step and an epoch line."""

from __future__ import annotations

import torch
from torch import Tensor

from ood_flow.flows.models import Flow
from ood_flow.train.objective import bpd


def fit(flow: Flow, x: Tensor) -> float:
    """Fit ``flow`` on the training vectors ``x`` (on its device); returns their bits/dim under the fit."""
    flow.fit_closed_form(x)
    with torch.no_grad():
        return bpd(flow.log_prob(x), flow.dim)


def summary(train_bpd: float, val_bpd: float | None) -> dict:
    """The history record of the fit: one complete epoch of no steps."""
    return {"epoch": 1, "step": 0, "train_bpd": train_bpd, "val_bpd": val_bpd, "complete": True}
