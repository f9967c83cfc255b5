"""Early stopping on validation bits/dim: the best epoch so far, its weights and their calibration.

With ``patience`` set, training stops after that many epochs without a lower validation bits/dim and
the model file holds the best epoch's weights (and the calibration scores of exactly those weights, which
``score``'s gate rests on), so a default run on a few thousand feature vectors does not keep over-fitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BestEpoch:
    """The epoch with the lowest validation bits/dim so far.

    Attributes:
        epoch: its number (1-based, as in the history).
        val_bpd: its mean validation bits/dim.
        state: the flow's weights and buffers after it (CPU copies).
        calibration: the calibration record of those weights (:meth:`~ood_flow.score.calibration.Calibration.to_dict`),
            or None without a calibration split.
    """

    epoch: int
    val_bpd: float
    state: dict[str, torch.Tensor]
    calibration: dict | None

    @classmethod
    def of(cls, flow: nn.Module, epoch: int, val_bpd: float, calibration: dict | None) -> BestEpoch:
        state = {k: v.detach().cpu().clone() for k, v in flow.state_dict().items()}
        return cls(epoch, float(val_bpd), state, calibration)

    def to_dict(self) -> dict:
        """For the checkpoint (tensors and plain values: loads with ``weights_only=True``)."""
        return {"epoch": self.epoch, "val_bpd": self.val_bpd, "state": self.state, "calibration": self.calibration}

    @classmethod
    def from_dict(cls, d: dict | None) -> BestEpoch | None:
        return cls(int(d["epoch"]), float(d["val_bpd"]), dict(d["state"]), d.get("calibration")) if d else None


def improved(best: BestEpoch | None, val_bpd: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``val_bpd`` (finite) beats the best so far by more than ``min_delta``."""
    if val_bpd is None or not torch.isfinite(torch.tensor(val_bpd)):
        return False
    return best is None or val_bpd < best.val_bpd - min_delta


def out_of_patience(best: BestEpoch | None, epoch: int, patience: int | None) -> bool:
    """Whether ``patience`` epochs have passed since the best one (never without patience or a best)."""
    return bool(patience) and best is not None and epoch - best.epoch >= patience


def next_best(best: BestEpoch | None, summary: dict, flow: nn.Module, calibration: dict | None, patience: int,
              min_delta: float = 0.0) -> tuple[BestEpoch | None, bool]:
    """Early stopping after an epoch (``summary`` from the history): the best epoch from now on, and
    whether to stop (``patience`` epochs since the best without beating it by more than ``min_delta``)."""
    if improved(best, summary["val_bpd"], min_delta):
        return BestEpoch.of(flow, summary["epoch"], summary["val_bpd"], calibration), False
    return best, out_of_patience(best, summary["epoch"], patience)
