"""Where a training run's state goes: the model file it claims (locked, never replaced by accident)
and the checkpoint and model file it writes (each atomically, the checkpoint first).

With early stopping (``patience``) the model file holds the best epoch's weights and their calibration,
while the checkpoint holds the latest state, from which ``--resume`` continues.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ood_flow.errors import AlreadyExists
from ood_flow.fileio import file_lock
from ood_flow.flows.io import save_model
from ood_flow.train.calibration import for_model_file
from ood_flow.train.checkpoint import checkpoint_path, plain_values, save_checkpoint

if TYPE_CHECKING:
    from ood_flow.train.loop import Trainer


def claim_output(out: Path, stack: contextlib.ExitStack, may_replace: bool) -> None:
    """Hold the lock of ``out`` for the rest of ``stack`` (failing at once if another run holds it) and,
    unless ``may_replace`` (a resumed run or ``--overwrite``), refuse an existing model file or checkpoint."""
    stack.enter_context(file_lock(out, timeout=0))
    if may_replace:
        return
    for path in (out, checkpoint_path(out)):
        if path.exists():
            raise AlreadyExists(str(path), resume=True)


def save_run(trainer: Trainer) -> None:
    """Write ``trainer``'s checkpoint, then its model file, which carries the calibration of exactly its
    weights or none and the reason (:func:`~ood_flow.train.calibration.for_model_file`)."""
    t = trainer
    info = {**t.info, **run_state(t), "history": t.history, "guard": t.guard.state(t.position),
            "calibration": t.calibration, "best": t.best.to_dict() if t.best else None}
    save_checkpoint(checkpoint_path(t.out), t.flow, t.optimizer, copy.deepcopy(t.position), t.cfg, info)
    keep = t.best if t.cfg.patience else None  # early stopping: the model file holds the best epoch
    calibration, note = for_model_file(keep.calibration if keep else t.calibration, t.flow,
                                       keep.state if keep else None, step=t.position["step"],
                                       interrupted=t.stop.signal is not None, has_split=t.cal_idx.numel() > 0)
    extra = plain_values({**t.info, **run_state(t), "history": t.history, "train_config": dataclasses.asdict(t.cfg),
                          "steps": t.position["step"], "calibration": calibration, "calibration_note": note,
                          "best_epoch": keep.epoch if keep else None, "stopped_early": t.stopped_early()})
    save_model(t.flow, t.out, extra=extra, overwrite=True, state=keep.state if keep else None)


def run_state(trainer: Trainer) -> dict:
    """What tells a finished run from a stopped one in the files: the steps the run was to take (0 for a
    closed-form fit) and what stopped it early (a signal's name, ``diverged``, or None)."""
    t = trainer
    stopped = t.stop.signal or ("diverged" if t.diverged else None)
    return {"total_steps": 0 if t.flow.closed_form else t.total_steps(), "stopped_by": stopped}
