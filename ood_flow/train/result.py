"""What a training run reports: events while it runs (the core never prints), the result when it ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ood_flow import log
from ood_flow.flows.models import Flow


_log = logging.getLogger("ood_flow.train")


def _log_epoch(s: dict) -> None:
    val = f", val {s['val_bpd']:.3f}" if s.get("val_bpd") is not None else ""
    train = f"{s['train_bpd']:.3f}" if s.get("train_bpd") is not None else "n/a"
    _log.info("epoch %d: train %s bits/dim%s (step %d)", s["epoch"], train, val, s["step"])


def _log_estimate(e: dict) -> None:
    if "seconds_left" in e:
        _log.info("about %.0f s left for %d steps", e["seconds_left"], e.get("steps_left", 0))


@dataclass
class TrainEvents:
    """Callbacks through which the loop reports (the core never prints). Left out, the start, each epoch, the
    estimate, the fit and every message go to the ``ood_flow.train`` logger (see :mod:`ood_flow.log`); steps and
    embedding progress are not logged."""

    on_start: Callable[[int, int], None] = lambda total, done: _log.info("training: step %d of %d", done, total)
    on_step: Callable[[int, dict], None] = lambda step, metrics: None
    on_epoch: Callable[[dict], None] = _log_epoch
    on_message: Callable[[str], None] = field(default_factory=lambda: log.messages("train"))
    on_embed: Callable[[int, int], None] = lambda done, total: None  # images embedded (train --features)
    on_estimate: Callable[[dict], None] = _log_estimate  # time left: probed, then measured
    on_fit: Callable[[dict], None] = lambda fit: _log.info("fitted in closed form: %s", fit)  # gaussian's one report


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        flow: the trained flow.
        steps: optimiser steps in all (across resumes).
        history: one summary per epoch (``train_bpd``, ``val_bpd``, ...).
        interrupted: stopped by ``signal`` (SIGINT, SIGTERM); the checkpoint holds the state to resume from.
        model, checkpoint: the files written.
        n_train, n_val, n_calibration: training samples, and those held out for validation and calibration.
        data, name: the training source's provenance text and name.
        stopped_early: early stopping (``patience``/``min_delta``) ended the run.
        best_epoch, best_val_bpd: with early stopping, the epoch whose weights the model file holds and its
            validation bits/dim (None without).
    """

    flow: Flow
    steps: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    checkpoint: Path | None = None
    signal: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM), when one did
    model: Path | None = None
    n_train: int = 0
    n_val: int = 0
    n_calibration: int = 0
    data: str = ""
    name: str = ""
    stopped_early: bool = False  # early stopping ended the run (validation bits/dim converged)
    best_epoch: int | None = None
    best_val_bpd: float | None = None

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}
