"""Maximum-likelihood training of a flow, with optional negative training and perturbed inputs.

One readable loop: dequantize, ``-log P(x)`` per sample (nats, of the 8-bit data), clip the
gradient norm, step. Every epoch a held-out bits/dim is computed and the model file and a
checkpoint are written (atomically). A non-finite loss never reaches the weights: the step is
skipped, and if it happens ``max_bad_steps`` times in a row the model and optimiser go back to the
last good snapshot with half the learning rate. Ctrl-C writes a checkpoint first.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ood_flow.flows.io import save_model
from ood_flow.flows.models import Flow
from ood_flow.preprocess import LOG_256, dequantize
from ood_flow.score.likelihood import score_likelihood
from ood_flow.train.checkpoint import checkpoint_path, save_checkpoint
from ood_flow.train.config import OPTIMIZERS, TrainConfig

SNAPSHOT_EVERY = 100


@dataclass
class TrainEvents:
    """Callbacks through which the loop reports (the core never prints)."""

    on_start: Callable[[int, int], None] = lambda total, done: None
    on_step: Callable[[int, dict], None] = lambda step, metrics: None
    on_epoch: Callable[[dict], None] = lambda summary: None
    on_message: Callable[[str], None] = lambda text: None


@dataclass
class TrainResult:
    flow: Flow
    steps: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    checkpoint: Path | None = None

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def split_validation(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, validation) indices: a seeded shuffle, at most 2000 held out, none below 20 samples."""
    k = min(int(n * fraction), 2000) if n >= 20 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def _step_generator(seed: int, step: int, salt: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 31 + salt) % (2**63))


def negative_objective(ll: Tensor, neg_ll: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """The paper's objective (7) (Appendix B): ``0.5 * (mean NLL_in + mean of ll_neg over negatives above C)``.

    Negatives whose log-likelihood is at or below ``threshold`` (C) are dropped, so they give no
    gradient; when none is above C the loss is the plain mean NLL, as in the authors' code.

    Returns:
        The loss and the boolean mask of the negatives that count.
    """
    above = neg_ll > threshold
    if not bool(above.any()):
        return -ll.mean(), above
    return 0.5 * (-ll.mean() + neg_ll[above].mean()), above


def perturb_pixels(x: Tensor, rate: float, gen: torch.Generator) -> Tensor:
    """Replace each pixel with a uniform random 8-bit value with probability ``rate`` (Ren et al. 2019)."""
    replace = torch.rand(x.shape, generator=gen, device=x.device) < rate
    noise = torch.randint(0, 256, x.shape, generator=gen, device=x.device, dtype=torch.uint8)
    return torch.where(replace, noise, x)


class Trainer:
    """Holds the state of one training run; :meth:`run` trains until done or interrupted."""

    def __init__(self, flow: Flow, x: Tensor, cfg: TrainConfig, out: Path, *, negative: Tensor | None = None,
                 events: TrainEvents | None = None, info: dict | None = None):
        self.flow, self.x, self.cfg, self.out = flow, x, cfg, Path(out)
        self.negative, self.events, self.info = negative, events or TrainEvents(), info or {}
        self.device = next(flow.parameters()).device
        self.train_idx, self.val_idx = split_validation(x.shape[0], cfg.val_fraction, cfg.seed)
        if self.train_idx.numel() == 0:
            raise ValueError("no training samples")
        self.optimizer = OPTIMIZERS[cfg.optimizer](flow.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.position = {"epoch": 0, "batch": 0, "step": 0}
        self.history: list[dict] = []
        self.bad_steps = 0
        self.snapshot = self._snapshot()

    # -- state ---------------------------------------------------------------------------------
    def fit_preprocessing(self) -> None:
        """Fit the model's data statistics (vector standardization) on the training part only."""
        if self.x.dtype != torch.uint8:
            self.flow.fit_preprocessing(self.x[self.train_idx].float().to(self.device))
        self.snapshot = self._snapshot()

    def restore(self, extra: dict) -> None:
        """Continue from a checkpoint's ``extra`` dict (optimiser state, position, history)."""
        self.optimizer.load_state_dict(extra["optimizer"])
        self.position = dict(extra["position"])
        self.history = list(extra.get("history", []))
        self.snapshot = self._snapshot()

    def _snapshot(self) -> dict:
        return {"model": copy.deepcopy(self.flow.state_dict()), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def _rollback(self) -> None:
        self.flow.load_state_dict(self.snapshot["model"])
        self.optimizer.load_state_dict(self.snapshot["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        self.snapshot["optimizer"] = copy.deepcopy(self.optimizer.state_dict())
        self.bad_steps = 0
        self.events.on_message(f"warning: {self.cfg.max_bad_steps} non-finite losses in a row at step "
                               f"{self.position['step']}; rolled back to the last good state and lowered the "
                               f"learning rate to {self.optimizer.param_groups[0]['lr']:.3g}")

    def save(self) -> None:
        info = {**self.info, "history": self.history}
        save_checkpoint(checkpoint_path(self.out), self.flow, self.optimizer, dict(self.position), self.cfg, info)
        save_model(self.flow, self.out, extra=_plain({**info, "train_config": dataclasses.asdict(self.cfg),
                                                      "steps": self.position["step"]}), overwrite=True)

    # -- loop ----------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[Tensor]:
        n, b = self.train_idx.numel(), self.cfg.batch_size
        perm = self.train_idx[torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch))]
        full = n // b * b if n >= b else n
        return list(perm[:full].split(max(1, min(b, n))))

    def total_steps(self) -> int:
        per_epoch = len(self._batches(0))
        total = per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _log_likelihood(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if x.dtype == torch.uint8:
            return self.flow.log_prob(dequantize(x, gen)) - x[0].numel() * LOG_256
        return self.flow.log_prob(x.float())

    def _loss(self, idx: Tensor, step: int) -> tuple[Tensor, dict]:
        gen = _step_generator(self.cfg.seed, step, 0, self.device)
        x = self.x[idx].to(self.device)
        if self.cfg.perturb:
            x = perturb_pixels(x, self.cfg.perturb, gen)
        if self.negative is None:
            ll = self._log_likelihood(x, gen)
            return -ll.mean(), {"ll": ll.detach()}
        ll, neg_ll = self._joint_log_likelihood(x, gen, self._negative_batch(step, idx.numel()), step)
        loss, _ = negative_objective(ll, neg_ll, self.cfg.negative_threshold)
        return loss, {"ll": ll.detach(), "neg_ll": neg_ll.detach()}

    def _negative_batch(self, step: int, size: int) -> Tensor:
        gen = _step_generator(self.cfg.seed, step, 1, "cpu")
        return self.negative[torch.randint(0, self.negative.shape[0], (size,), generator=gen)].to(self.device)

    def _joint_log_likelihood(self, x: Tensor, gen: torch.Generator, neg: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Log-likelihoods of both batches from one forward pass, as the authors' code does: in train mode
        batch norm then normalises with the statistics of the mixed batch, which its running (eval)
        statistics also track."""
        if x.dtype == torch.uint8:
            neg_gen = _step_generator(self.cfg.seed, step, 2, self.device)
            ll = self.flow.log_prob(torch.cat([dequantize(x, gen), dequantize(neg, neg_gen)])) - x[0].numel() * LOG_256
        else:
            ll = self.flow.log_prob(torch.cat([x, neg]).float())
        return ll[: len(x)], ll[len(x):]

    def _step(self, idx: Tensor) -> dict | None:
        self.flow.train()
        loss, metrics = self._loss(idx, self.position["step"])
        if not torch.isfinite(loss):
            self.bad_steps += 1
            self.events.on_message(f"warning: non-finite loss at step {self.position['step']}; step skipped")
            if self.bad_steps >= self.cfg.max_bad_steps:
                self._rollback()
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.cfg.clip)
        self.optimizer.step()
        self.bad_steps = 0
        return metrics

    def validate(self) -> float | None:
        if self.val_idx.numel() == 0:
            return None
        scores = score_likelihood(self.flow, self.x[self.val_idx], self.val_idx, seed=self.cfg.seed)
        return float(scores["bits_per_dim"].mean())

    def run(self) -> TrainResult:
        start, total = time.time(), self.total_steps()
        self.events.on_start(total, min(self.position["step"], total))
        try:
            self._epochs(total)
        except KeyboardInterrupt:
            self.save()  # the state between two steps: resuming continues from the next batch
            return TrainResult(self.flow, self.position["step"], self.history, time.time() - start, True,
                               checkpoint_path(self.out))
        return TrainResult(self.flow, self.position["step"], self.history, time.time() - start, False,
                           checkpoint_path(self.out))

    def _epochs(self, total: int) -> None:
        while self.position["epoch"] < self.cfg.epochs and self.position["step"] < total:
            batches, sums = self._batches(self.position["epoch"]), {"ll": 0.0, "n": 0, "neg_ll": 0.0, "neg_n": 0}
            while self.position["batch"] < len(batches) and self.position["step"] < total:
                metrics = self._step(batches[self.position["batch"]])
                self._advance(metrics, sums)
            self._end_epoch(sums, finished=self.position["batch"] >= len(batches))

    def _advance(self, metrics: dict | None, sums: dict) -> None:
        # position and state change together, between steps, so an interrupt always sees a consistent pair
        self.position = {**self.position, "batch": self.position["batch"] + 1, "step": self.position["step"] + 1}
        if metrics is None:
            return
        report = {"bpd": _bpd(metrics["ll"], self.flow.dim)}
        if "neg_ll" in metrics:
            report["ll"], report["neg_ll"] = float(metrics["ll"].mean()), float(metrics["neg_ll"].mean())
            sums["neg_ll"] += float(metrics["neg_ll"].sum())
            sums["neg_n"] += metrics["neg_ll"].numel()
        sums["ll"] += float(metrics["ll"].sum())
        sums["n"] += metrics["ll"].numel()
        if self.position["step"] % SNAPSHOT_EVERY == 0:
            self.snapshot = self._snapshot()
        self.events.on_step(self.position["step"], report)

    def _end_epoch(self, sums: dict, finished: bool) -> None:
        train_bpd = _bpd(torch.tensor(sums["ll"] / max(sums["n"], 1)), self.flow.dim) if sums["n"] else None
        summary = {"epoch": self.position["epoch"] + 1, "step": self.position["step"], "train_bpd": train_bpd,
                   "val_bpd": self.validate(), "complete": finished}
        if sums["neg_n"]:  # negative training: the mean log-likelihood (nats) of the negatives seen this epoch
            summary["train_ll"] = sums["ll"] / max(sums["n"], 1)
            summary["negative_ll"] = sums["neg_ll"] / sums["neg_n"]
        self.history.append(summary)
        if finished:
            self.position = {**self.position, "epoch": self.position["epoch"] + 1, "batch": 0}
        self.snapshot = self._snapshot()
        self.save()
        self.events.on_epoch(summary)


def _bpd(ll: Tensor, dim: int) -> float:
    return float(-ll.double().mean() / (dim * math.log(2)))


def _plain(obj):
    """Drop values a ``.h5`` attribute or ``weights_only`` load could not hold (keeps plain data)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)
