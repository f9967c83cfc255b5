"""Where a training run's state goes: the model file it claims (locked, never replaced by accident)
and the checkpoint and model file it writes (each atomically, the checkpoint first).

With early stopping (``patience``) the model file holds the best epoch's weights and their calibration,
while the checkpoint holds the latest state, from which ``--resume`` continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ood_flow.errors import AlreadyExists
from ood_flow.fileio import file_lock
from ood_flow.flows.io import save_model
from ood_flow.flows.models import Flow
from ood_flow.train.best import BestEpoch
from ood_flow.train.calibration import for_model_file
from ood_flow.train.checkpoint import checkpoint_path, plain_values, save_checkpoint
from ood_flow.train.config import TrainConfig


def claim_output(out: Path, stack: contextlib.ExitStack, may_replace: bool) -> None:
    """Hold the lock of ``out`` for the rest of ``stack`` (failing at once if another run holds it) and,
    unless ``may_replace`` (a resumed run or ``--overwrite``), refuse an existing model file or checkpoint."""
    stack.enter_context(file_lock(out, timeout=0))
    if may_replace:
        return
    for path in (out, checkpoint_path(out)):
        if path.exists():
            raise AlreadyExists(str(path), resume=True)


@dataclass(frozen=True)
class RunState:
    """What a training run writes, as the :class:`~ood_flow.train.loop.Trainer` hands it over.

    Attributes:
        flow, optimizer, position, cfg: the model, the optimiser, where the run stands and how it trains.
        info: plain values recorded in both files (data source, command, backbone).
        history, guard, calibration, best: the epoch summaries, the roll-back state, the calibration of the
            weights as last validated, and the best epoch under early stopping.
        total_steps: the steps the run was to take (0 for a closed-form fit).
        stopped_by: what stopped it early (a signal's name, ``diverged``), or None.
        interrupted: a signal stopped it; has_split: it holds out a calibration split;
        stopped_early: early stopping ended it.
    """

    flow: Flow
    optimizer: Any
    position: dict
    cfg: TrainConfig
    info: dict
    history: list
    guard: dict
    calibration: dict | None
    best: BestEpoch | None
    total_steps: int
    stopped_by: str | None
    interrupted: bool = False
    has_split: bool = True
    stopped_early: bool = False


def save_run(out: Path, s: RunState) -> None:
    """Write the checkpoint of ``s`` beside ``out``, then the model file ``out``, which carries the calibration of
    exactly its weights or none and the reason (:func:`~ood_flow.train.calibration.for_model_file`)."""
    ran = {"total_steps": s.total_steps, "stopped_by": s.stopped_by}
    info = {**s.info, **ran, "history": s.history, "guard": s.guard, "calibration": s.calibration,
            "best": s.best.to_dict() if s.best else None}
    save_checkpoint(checkpoint_path(out), s.flow, s.optimizer, s.position, s.cfg, info)
    keep = s.best if s.cfg.patience else None  # early stopping: the model file holds the best epoch
    calibration, note = for_model_file(keep.calibration if keep else s.calibration, s.flow,
                                       keep.state if keep else None, step=s.position["step"],
                                       interrupted=s.interrupted, has_split=s.has_split)
    extra = plain_values({**s.info, **ran, "history": s.history, "train_config": dataclasses.asdict(s.cfg),
                          "steps": s.position["step"], "calibration": calibration, "calibration_note": note,
                          "best_epoch": keep.epoch if keep else None, "stopped_early": s.stopped_early})
    save_model(s.flow, out, extra=extra, overwrite=True, state=keep.state if keep else None)
