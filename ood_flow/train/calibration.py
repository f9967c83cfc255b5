"""The calibration a training run gives its model file: the calibration split scored with the weights the
file holds (see :mod:`ood_flow.score.calibration`).

The split is scored at the end of every epoch, beside validation. A model file written then (or, with
early stopping, holding the best epoch's weights) carries the calibration of exactly its weights; one
written as a snapshot within an epoch or on interruption holds weights that were never scored on the split,
so it carries none, and says why and how to add one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ood_flow.distributed import Dist
from ood_flow.flows.io import model_digest
from ood_flow.flows.models import Flow
from ood_flow.score.calibration import Settings, make
from ood_flow.train.epoch import held_out_scores


def score_split(flow: Flow, x: Tensor, cal_idx: Tensor, *, seed: int, dist: Dist, step: int, data: str,
                settings: Settings) -> dict | None:
    """The calibration record of ``flow`` as it is now, on the samples ``cal_idx`` of ``x`` (None when the
    run holds out no calibration split)."""
    if cal_idx.numel() == 0:
        return None
    with torch.no_grad():
        values = held_out_scores(flow, x, cal_idx, seed, dist)
    source = f"{data} (calibration split: {cal_idx.numel()} of {x.shape[0]} samples held out, seed {seed})"
    return make(values, "log_likelihood", source, "train", settings, model_digest(flow), step).to_dict()


def for_model_file(calibration: dict | None, flow: Flow, state: dict | None, *, step: int, interrupted: bool,
                   has_split: bool) -> tuple[dict | None, str | None]:
    """The calibration a model file holding ``state`` (default: ``flow``'s own weights) carries, or None and
    the reason why it carries none."""
    if not has_split:
        return None, ("it was trained without a calibration split (--calibration-fraction 0, or fewer than 20 "
                      "training samples)")
    if calibration is not None and calibration.get("model_digest") == model_digest(flow, state):
        return calibration, None
    when = "on interruption" if interrupted else "as a snapshot within an epoch"
    return None, (f"its weights are those of step {step}, written {when}, and were never scored on the calibration "
                  "split (that happens at the end of each epoch; 'oodflow train ... --resume' finishes the run)")
