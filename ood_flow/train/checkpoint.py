"""Training checkpoints: the full state needed to continue exactly where a run stopped.

A checkpoint is a ``.pt`` file (loaded with ``weights_only=True``) beside the model file:
``m.pt`` -> ``m.ckpt.pt``. It holds the model file's header and weights, the optimiser state,
the position (epoch, batch within the epoch, global step), the current learning rate, the
training configuration and the history of epoch summaries. Random draws are functions of
``(seed, step)``, so no generator state is needed to resume bit-exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ood_flow.errors import ModelFileError
from ood_flow.fileio import atomic_write, name_max, shorten
from ood_flow.flows.io import MODEL_FILE, header, load_checkpoint
from ood_flow.train.config import TrainConfig

CHECKPOINT_FORMAT = "oodflow-checkpoint"
CHECKPOINT_SUFFIX = ".ckpt.pt"


def checkpoint_path(model_path: str | Path) -> Path:
    """``m.pt`` -> ``m.ckpt.pt`` beside it; a stem too long for the file system with the suffix is
    shortened with a hash of it (:func:`~ood_flow.fileio.shorten`), so every model name that fits has a
    checkpoint."""
    model_path = Path(model_path)
    room = name_max(model_path.parent) - len(CHECKPOINT_SUFFIX)
    return model_path.with_name(shorten(model_path.stem, room) + CHECKPOINT_SUFFIX)


def save_checkpoint(path: Path, flow, optimizer, position: dict, cfg: TrainConfig, info: dict) -> None:
    state = {k: v.detach().cpu().clone() for k, v in flow.state_dict().items()}
    record = {**header(flow), "state_dict": state,
              "extra": {"checkpoint": CHECKPOINT_FORMAT, "optimizer": optimizer.state_dict(), "position": position,
                        "train_config": dataclasses.asdict(cfg), **info}}
    with atomic_write(path, overwrite=True, kind=MODEL_FILE) as tmp:
        torch.save(record, tmp)


def load_training_state(path: Path, device) -> tuple[Any, dict]:
    """The flow and the ``extra`` dict of a checkpoint (optimiser state, position, config)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint to resume from (train without --resume first)")
    flow, extra = load_checkpoint(path, device=device)
    if extra.get("checkpoint") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not an oodflow training checkpoint")
    return flow, extra


def plain_values(obj):
    """Drop values a ``.h5`` attribute or ``weights_only`` load could not hold (keeps plain data)."""
    if isinstance(obj, dict):
        return {k: plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_values(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)
