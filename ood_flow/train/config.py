"""Training configuration: a frozen dataclass with the paper's optimiser settings as defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}

# The paper's settings (Appendix C and the authors' code): Adam 5e-5 for RealNVP, RMSprop 5e-5 for
# Glow, weight decay 5e-5, batch 32, gradient norm clipped at 100; tabular flows AdamW 1e-3 with
# weight decay 1e-3 (Appendix K.1).
PAPER_DEFAULTS = {
    "realnvp": {"optimizer": "adam", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32},
    "glow": {"optimizer": "rmsprop", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32},
    "tabular": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 256},
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``None`` fields take the paper default for the model family.

    Attributes:
        epochs: passes over the training data.
        max_steps: stop after this many optimiser steps in all (across resumes).
        val_fraction: share of the training source held out for validation (at most 2000 samples).
        negative_threshold: C of the paper's objective (7): only negative samples whose
            log-likelihood is above C are pushed down.
        perturb: rate of random pixel replacement (Ren et al. 2019 background model).
        max_bad_steps: consecutive non-finite losses before rolling back and halving the lr.
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    clip: float = 100.0
    seed: int = 0
    val_fraction: float = 0.05
    negative_threshold: float | None = None
    perturb: float | None = None
    max_bad_steps: int = 3

    def resolved(self, model: str) -> "TrainConfig":
        """Fill unset fields with the paper's defaults for ``model`` and validate."""
        filled = {k: v for k, v in PAPER_DEFAULTS[model].items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **filled)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "weight_decay": self.weight_decay >= 0, "clip": self.clip > 0,
                  "max_steps": self.max_steps is None or self.max_steps >= 1,
                  "val_fraction": 0 <= self.val_fraction < 1,
                  "perturb": self.perturb is None or 0 < self.perturb <= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training setting {bad[0]}={getattr(self, bad[0])}")
