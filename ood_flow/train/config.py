"""Training configuration: a frozen dataclass with the paper's optimiser settings as defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ood_flow import names
from ood_flow.errors import UsageError
from ood_flow.validation import check_number, check_seed

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}
names.check("optimizers", OPTIMIZERS, names.OPTIMIZERS)

# The paper's settings (Appendix C and the authors' code): Adam 5e-5 for RealNVP, RMSprop 5e-5 for
# Glow, weight decay 5e-5, batch 32, gradient norm clipped at 100; tabular flows AdamW 1e-3 with
# weight decay 1e-3 (Appendix K.1).
FEATURE_PATIENCE = 10  # epochs without a better validation bits/dim before a feature flow stops

PAPER_DEFAULTS = {
    "realnvp": {"optimizer": "adam", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32},
    "glow": {"optimizer": "rmsprop", "lr": 5e-5, "weight_decay": 5e-5, "batch_size": 32},
    "tabular": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 256},
    "gaussian": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256},  # fitted in closed form
    # A flow on a backbone's features (Appendix K.1, image embeddings): AdamW 1e-3, weight decay 1e-3, batch
    # 1024, 120 epochs; early stopping on validation bits/dim keeps it from over-fitting a few thousand vectors.
    "features": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 1024, "epochs": 120,
                 "patience": FEATURE_PATIENCE},
}

DEFAULT_EPOCHS = 10
# settings of every family; None in a TrainConfig means "not given" (so --resume can tell)
DEFAULTS = {"epochs": DEFAULT_EPOCHS, "clip": 100.0, "seed": 0, "val_fraction": 0.05, "cal_fraction": 0.05,
            "compile": False, "noise": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``None`` fields take the paper default for the model family, or :data:`DEFAULTS`.

    Attributes:
        epochs: passes over the training data (default :data:`DEFAULT_EPOCHS`).
        clip: the gradient norm is clipped at this value (default 100).
        seed: fixes the initial weights, the validation split and every random draw (default 0).
        max_steps: stop after this many optimiser steps in all (across resumes).
        val_fraction: share of the training source held out for validation (at most 2000 samples): it
            chooses the kept epoch under early stopping and reports the fit.
        cal_fraction: share held out, besides, for calibration (at most 2000 samples): in-distribution scores
            of the weights the model file holds, on data used for no choice, that the gate of ``score``
            rests on (:mod:`ood_flow.score.calibration`); 0: none.
        negative_threshold: C of the paper's objective (7): only negative samples whose
            log-likelihood is above C are pushed down.
        perturb: rate of random pixel replacement (Ren et al. 2019 background model); images only.
        noise: vectors only: add Gaussian noise to each training vector, its standard deviation this multiple
            of each column's standard deviation over the training part (default 0: none). A regulariser for
            a flow on a few thousand vectors; validation and scoring see the vectors as they are.
        max_bad_steps: consecutive skipped steps (non-finite loss or gradient) before rolling back to
            the last good state and halving the lr.
        max_rollbacks: roll-backs allowed before training gives up (exit 1), keeping the last good model.
        precision: of the st-networks (:mod:`ood_flow.flows.precision`): ``fp32`` (None: the default, so
            that one seed gives one model on every machine), ``bf16``, or ``auto`` (bf16 where it pays), resolved
            once (:mod:`ood_flow.runtime`); the :class:`~ood_flow.train.loop.Trainer` stores the one it runs in.
        patience: early stopping: stop when validation bits/dim has not beaten its best by at least
            ``min_delta`` for this many epochs, and keep the best epoch's weights in the model file (0: off;
            default off, 10 for feature flows, 3 in the cpu preset).
        min_delta: the improvement in validation bits/dim that counts for ``patience`` (default 0).
        compile: run the training step's log-density through ``torch.compile`` (default off). It compiles
            once and then trains faster, so it pays on long runs only (docs/speed.md, "Compiled graphs",
            measures both with ``benchmarks/speed/compile_check.py``); floating-point results differ from
            eager ones in the last bits, so a compiled run is not bit-identical to an eager one.
    """

    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    clip: float | None = None
    seed: int | None = None
    val_fraction: float | None = None
    cal_fraction: float | None = None
    negative_threshold: float | None = None
    perturb: float | None = None
    noise: float | None = None
    max_bad_steps: int = 3
    max_rollbacks: int = 6
    precision: str | None = None
    patience: int | None = None
    min_delta: float | None = None
    compile: bool | None = None

    def resolved(self, model: str, defaults: dict | None = None) -> "TrainConfig":
        """Fill unset fields from ``defaults`` (a preset's), then the paper's for ``model`` (a family, or
        ``features``), then :data:`DEFAULTS`; validate."""
        base = {**DEFAULTS, "patience": 0, "min_delta": 0.0, **PAPER_DEFAULTS[model], **(defaults or {})}
        filled = {k: v for k, v in base.items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **filled)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`UsageError` (exit 2) for an unknown optimizer or a value out of its range (or not
        finite); the message names the option as on the command line. Fields left None are not checked."""
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer: unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        for option, value, bounds in _RANGES:
            check_number(option, getattr(self, value), **bounds)
        check_seed("--seed", self.seed)


def check_input_options(cfg: TrainConfig, *, vectors: bool | None, closed_form_model: str | None = None) -> None:
    """Refuse (:class:`UsageError`, exit 2) an option on training inputs that would not apply: ``--perturb`` on
    vectors, ``--noise`` on images or on a model fitted in closed form.

    Args:
        vectors: whether the training data are vectors (None: not known yet, e.g. before loading).
        closed_form_model: the name of the model when it is fitted in closed form, else None.
    """
    if cfg.perturb and vectors:
        raise UsageError("--perturb replaces pixels of images; vectors (a table, or --features) have none: drop "
                         "--perturb")
    if cfg.noise and vectors is False:
        raise UsageError("--noise adds Gaussian noise to vectors; images are dequantized instead: drop --noise")
    if cfg.noise and closed_form_model:
        raise UsageError(f"--noise does not apply to --model {closed_form_model} (fitted in closed form): drop it")


_POSITIVE_INT = {"low": 1, "integer": True}
_RANGES = (  # option, field, allowed range
    ("--epochs", "epochs", _POSITIVE_INT), ("--max-steps", "max_steps", _POSITIVE_INT),
    ("--batch-size", "batch_size", _POSITIVE_INT), ("--lr", "lr", {"low": 0, "low_open": True}),
    ("--weight-decay", "weight_decay", {"low": 0}), ("--clip", "clip", {"low": 0, "low_open": True}),
    ("--val-fraction", "val_fraction", {"low": 0, "high": 1, "high_open": True}),
    ("--calibration-fraction", "cal_fraction", {"low": 0, "high": 1, "high_open": True}),
    ("--negative-threshold", "negative_threshold", {}), ("--perturb", "perturb", {"low": 0, "high": 1}),
    ("--noise", "noise", {"low": 0}),
    ("--patience", "patience", {"low": 0, "integer": True}), ("--min-delta", "min_delta", {"low": 0}),
    ("max_bad_steps", "max_bad_steps", _POSITIVE_INT), ("max_rollbacks", "max_rollbacks", {"low": 0, "integer": True}),
)


@dataclass(frozen=True)
class FeatureSpec:
    """``train --features``: train on a pretrained backbone's features of the images, writing a one-file
    detector (see :mod:`ood_flow.embed.detector`).

    Attributes:
        backbone: any timm model name ``oodflow embed`` accepts (or one of its extras).
        weights: a local state dict; default timm's pretrained weights (hub cache, or the Lite0 package).
        image_size: resize images to N x N (default: the backbone's input size).
        precision: of the backbone, ``fp32`` (None: the default), ``bf16`` (autocast) or ``auto``, resolved with
            the run's other settings (:mod:`ood_flow.runtime`).
        batch_size: images per forward pass of the backbone.
    """

    backbone: str
    weights: str | None = None
    image_size: int | None = None
    precision: str | None = None
    batch_size: int = 64


def param_groups(flow: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups: which parameters weight decay applies to (``decay`` marks them).

    Never to the directions ``v`` of weight-normalised layers (their length is meaningless, and the
    coupling's factor keeps its sign there). For RealNVP with the authors' ResNet st-networks, only to
    the weight-norm magnitudes ``g``, as the authors' training script does; otherwise to all the rest.
    """
    authors = getattr(getattr(flow, "config", None), "net", None) in ("resnet", "resnet-noskip")
    decay, free = [], []
    for name, p in flow.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        wanted = leaf == "weight_g" if authors else leaf != "weight_v"
        (decay if wanted else free).append(p)
    groups = ({"params": decay, "weight_decay": weight_decay, "decay": True},
              {"params": free, "weight_decay": 0.0, "decay": False})
    return [g for g in groups if g["params"]]


def no_improvement(values: list[float], min_delta: float) -> int:
    """How many of the last evaluations in a row failed to beat the best before them by ``min_delta``.

    >>> no_improvement([3.0, 2.5, 2.499, 2.6], 0.005)
    2
    """
    best, waited = float("inf"), 0
    for v in values:
        if v < best - min_delta:
            best, waited = v, 0
        else:
            waited += 1
    return waited
