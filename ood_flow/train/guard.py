"""The guard against non-finite training: a step never leaves NaN or inf in the weights.

A step whose loss or gradient norm is not finite is skipped (the batch-norm statistics its forward
pass touched are put back). Weights or statistics that are not finite after a step, or ``max_bad_steps``
skipped steps in a row, roll the model and the optimiser back to the last *good* state (every
weight and statistic checked finite when it was taken) with half the learning rate. After
``max_rollbacks`` roll-backs the run gives up (:class:`TrainingDiverged`) and the caller keeps the
last good state. Only a good state is ever saved.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from ood_flow.errors import OodflowError
from ood_flow.flows.io import first_non_finite


class TrainingDiverged(OodflowError):
    """Training kept producing non-finite losses or weights after every roll-back allowed."""


@dataclass
class GoodState:
    """A state whose weights and statistics were all finite when it was taken."""

    model: dict
    optimizer: dict
    position: dict
    history_length: int


class Guard:
    """Counts skipped steps and roll-backs and keeps the last good state of ``flow`` and ``optimizer``."""

    def __init__(self, flow: torch.nn.Module, optimizer: torch.optim.Optimizer, max_bad_steps: int,
                 max_rollbacks: int, agree: Callable[[bool], list[bool]] = lambda flag: [flag]):
        self.flow, self.optimizer, self.agree = flow, optimizer, agree
        self.max_bad_steps, self.max_rollbacks = max_bad_steps, max_rollbacks
        self.bad_steps = 0
        self.rollbacks = 0
        self.good: GoodState | None = None

    def mark_good(self, position: dict, history_length: int) -> bool:
        """Take the current state as the good one if all of it is finite; False (nothing taken) otherwise."""
        if not self.state_finite():
            return False
        self.good = GoodState(copy.deepcopy(self.flow.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                              copy.deepcopy(position), history_length)
        return True

    def state_finite(self) -> bool:
        """Whether every weight and statistic (batch-norm running statistics included) is finite (in every
        process: ``agree`` ORs a flag over the processes of a data-parallel run)."""
        return not self.agree(first_non_finite(self.flow.state_dict().items()) is not None)[0]

    def skipped(self) -> bool:
        """Count one skipped step; True when as many in a row as allowed were skipped (roll back now)."""
        self.bad_steps += 1
        return self.bad_steps >= self.max_bad_steps

    def stepped(self) -> None:
        self.bad_steps = 0

    def rollback(self) -> float:
        """Restore the good state's weights and optimiser state with half the current learning rate.

        Returns:
            The new learning rate.

        Raises:
            TrainingDiverged: ``max_rollbacks`` roll-backs were already spent.
        """
        self.bad_steps = 0
        if self.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(f"non-finite losses or weights persisted through {self.rollbacks} roll-backs")
        self.rollbacks += 1
        lr = self.optimizer.param_groups[0]["lr"] * 0.5
        self.flow.load_state_dict(self.good.model)
        self.optimizer.load_state_dict(self.good.optimizer)
        self.set_hyper("lr", lr)
        return lr

    def set_hyper(self, name: str, value: float) -> None:
        """Set an optimiser setting (lr, weight_decay) now and in the good state a roll-back returns to."""
        for group in self.optimizer.param_groups:
            if name != "weight_decay" or group.get("decay", True):  # groups without decay keep none
                group[name] = value
        if self.good is not None:
            for group in self.good.optimizer["param_groups"]:
                if name != "weight_decay" or group.get("decay", True):
                    group[name] = value

    def restore_good(self) -> GoodState:
        """Put the good state back into the model and optimiser (when giving up); returns it."""
        lr = self.optimizer.param_groups[0]["lr"]
        self.flow.load_state_dict(self.good.model)
        self.optimizer.load_state_dict(self.good.optimizer)
        self.set_hyper("lr", lr)
        return self.good

    def state(self, position: dict) -> dict:
        """What a checkpoint needs to continue the guard exactly: counters, and the good state when it is
        not the current one."""
        record = {"bad_steps": self.bad_steps, "rollbacks": self.rollbacks}
        if self.good is not None and self.good.position != position:
            record["good"] = {"model": self.good.model, "optimizer": self.good.optimizer,
                              "position": self.good.position, "history_length": self.good.history_length}
        return record

    def load(self, record: dict) -> None:
        self.bad_steps, self.rollbacks = int(record.get("bad_steps", 0)), int(record.get("rollbacks", 0))
        if "good" in record:
            self.good = GoodState(**record["good"])
