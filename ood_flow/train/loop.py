"""Maximum-likelihood training of a flow, with optional negative training and perturbed inputs.

One readable loop: dequantize, ``-log P(x)`` per sample (nats, of the 8-bit data), clip the
gradient norm, step. Every epoch a held-out bits/dim is computed; every epoch and every
``SNAPSHOT_EVERY`` steps the state is checked finite, kept as the last good one and written
(checkpoint, then model file, each atomically). Non-finite losses, gradients or weights never
reach a saved file (:mod:`ood_flow.train.guard`). SIGINT and SIGTERM stop after the current step
and save it (:mod:`ood_flow.train.stop`); a resumed run then continues bit for bit as if it had
never stopped, and so does one resumed from the last checkpoint after ``kill -9``.

Under torchrun the same loop runs in every process (:mod:`ood_flow.distributed`): the batches are
global and each process takes its share, every decision (skip, roll back, stop) is taken together,
and only rank 0 writes; draws depend on (seed, epoch, sample index), not on the number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from pathlib import Path

import torch
from torch import Tensor

from ood_flow import distributed
from ood_flow.errors import InputError
from ood_flow.flows.models import Flow
from ood_flow.runtime import Runtime, resolve
from ood_flow.score.calibration import Settings
from ood_flow.train import closed_form
from ood_flow.train.best import BestEpoch, next_best
from ood_flow.train.calibration import score_split
from ood_flow.train.checkpoint import checkpoint_path
from ood_flow.train.epoch import add_step, epoch_batches, epoch_summary, validate, zero_sums
from ood_flow.train.config import OPTIMIZERS, TrainConfig, check_input_options, param_groups
from ood_flow.train.estimate import StepTimer
from ood_flow.train.losses import BatchLoss, noise_std
from ood_flow.train.objective import split_holdout
from ood_flow.train.guard import Guard, TrainingDiverged
from ood_flow.train.result import TrainEvents, TrainResult
from ood_flow.train.saving import RunState, claim_output, save_run
from ood_flow.train.stop import StopRequest, stop_message

SNAPSHOT_EVERY = 100


class Trainer:
    """Holds the state of one training run; :meth:`run` trains until done, stopped or diverged.

    Args:
        flow, x, cfg: the model, the training samples and how to train.
        out: the model file; the checkpoint goes beside it (:func:`checkpoint_path`).
        negative: samples whose likelihood to push down (negative training), or None.
        events: progress callbacks.
        info: plain values recorded in the model file and checkpoint (data source, command).
        overwrite: a fresh run may replace an existing model file and checkpoint at ``out``.
        stop: where SIGINT/SIGTERM land during :meth:`run` (a new one by default); its ``on_request`` is set to
            report the stop through ``events.on_message`` at once.
        runtime: how the run executes: the st-networks' precision, compilation, the processes sharing the run
            (default: ``cfg.precision`` and ``cfg.compile`` resolved on the flow's device, one process). The
            flow is prepared for it, and the configuration the files record takes its precision and compilation.
        settings: how the calibration split is scored, as its record states (default: like ``oodflow score``'s
            defaults; a detector's names the precision its features were embedded in).
    """

    def __init__(self, flow: Flow, x: Tensor, cfg: TrainConfig, out: Path, *, negative: Tensor | None = None,
                 events: TrainEvents | None = None, info: dict | None = None, overwrite: bool = False,
                 stop: StopRequest | None = None, runtime: Runtime | None = None, settings: Settings | None = None):
        self.runtime = runtime or resolve(next(flow.parameters()).device.type, st=cfg.precision, compile=cfg.compile)
        cfg = dataclasses.replace(cfg.resolved(flow.name), precision=self.runtime.st, compile=self.runtime.compile)
        self.flow, self.x, self.cfg, self.out, self.dist = self.runtime.prepare(flow), x, cfg, Path(out), \
            self.runtime.dist
        self.negative, self.events, self.info = negative, events or TrainEvents(), info or {}
        self.overwrite, self.stop, self.resumed = overwrite, stop or StopRequest(), False
        self.device = next(flow.parameters()).device
        self.train_idx, self.val_idx, self.cal_idx = split_holdout(x.shape[0], cfg.val_fraction, cfg.cal_fraction,
                                                                   cfg.seed)
        self.settings = settings or Settings()
        if self.train_idx.numel() == 0:
            raise InputError("no training samples")
        # multi-tensor updates: the same arithmetic as torch's one-tensor-at-a-time default on CPU, so the same
        # weights bit for bit, in fewer calls (benchmarks/results/optimizer_speed.md)
        self.optimizer = OPTIMIZERS[cfg.optimizer](param_groups(flow, cfg.weight_decay), lr=cfg.lr, foreach=True)
        self.guard = Guard(flow, self.optimizer, cfg.max_bad_steps, cfg.max_rollbacks, agree=self.dist.flags)
        log_prob = distributed.log_prob_fn(flow, self.dist)
        check_input_options(cfg, vectors=x.dtype != torch.uint8,  # --noise, --perturb where they apply
                            closed_form_model=flow.name if flow.closed_form else None)
        self.batch_loss = BatchLoss(x, negative, cfg, torch.compile(log_prob) if cfg.compile else log_prob,
                                    self.dist, self.device, noise_std=noise_std(x[self.train_idx], cfg.noise))
        self.stopping = False  # a stop every process agreed on
        self.position = {"epoch": 0, "batch": 0, "step": 0, "sums": zero_sums()}
        self.history: list[dict] = []
        self.calibration: dict | None = None  # the calibration split's scores under the weights as last validated
        self.best: BestEpoch | None = None  # early stopping (cfg.patience): the best epoch so far
        self._before: list[Tensor] | None = None  # buffers before the step in progress
        self.guard.mark_good(self.position, 0)
        self.timer = StepTimer()
        self.step_seconds: float | None = None  # probed before the first step (train_flow), then measured
        self.step_measured = False
        self.diverged = False  # every roll-back spent: the last good state is saved and the run ends
        self.stop.on_request = self._announce_stop

    def _announce_stop(self, name: str) -> None:
        """Say at once what the first SIGINT/SIGTERM does and how long the step it waits for takes."""
        self.events.on_message(stop_message(name, self.step_seconds, self.step_measured))

    # -- state ---------------------------------------------------------------------------------
    def fit_preprocessing(self) -> None:
        """Fit the model's data statistics (vector standardization) on the training part only."""
        if self.x.dtype != torch.uint8:
            self.flow.fit_preprocessing(self.x[self.train_idx].float().to(self.device))
        self.guard.mark_good(self.position, 0)

    def restore(self, extra: dict) -> None:
        """Continue from a checkpoint's ``extra`` dict (optimiser state, position, history, guard)."""
        try:
            self.optimizer.load_state_dict(extra["optimizer"])
        except ValueError:
            raise InputError(f"{checkpoint_path(self.out)}: its optimiser state does not fit this model (a checkpoint "
                             "of an older oodflow, whose parameters differ); train anew") from None
        self.position = {"sums": zero_sums(), **copy.deepcopy(extra["position"])}
        if not self.dist.writer:  # rank 0 carries the epoch's sums so far, the others add theirs
            self.position["sums"] = zero_sums()
        self.history = list(extra.get("history", []))
        self.calibration = extra.get("calibration")
        self.best = BestEpoch.from_dict(extra.get("best"))
        self.guard.mark_good(self.position, len(self.history))
        self.guard.load(extra.get("guard", {}))
        saved = extra.get("train_config", {})
        for name in ("lr", "weight_decay"):  # a value changed on resume replaces the optimiser's (and roll-back's)
            if name in saved and getattr(self.cfg, name) != saved[name]:
                self.set_hyper(name, getattr(self.cfg, name))
        self.resumed = True

    def set_hyper(self, name: str, value: float) -> None:
        """Change an optimiser setting (``lr``, ``weight_decay``) of a resumed run, roll-back state included."""
        self.guard.set_hyper(name, value)

    def save(self) -> None:
        """Write the checkpoint, then the model file (:func:`~ood_flow.train.saving.save_run`); rank 0 only."""
        if self.dist.writer:
            save_run(self.out, self._state())

    def _state(self) -> RunState:
        stopped = self.stop.signal or ("diverged" if self.diverged else None)
        return RunState(self.flow, self.optimizer, copy.deepcopy(self.position), self.cfg, self.info, self.history,
                        self.guard.state(self.position), self.calibration, self.best,
                        0 if self.flow.closed_form else self.total_steps(), stopped,
                        interrupted=self.stop.signal is not None, has_split=self.cal_idx.numel() > 0,
                        stopped_early=self.stopped_early())

    def stopped_early(self) -> bool:
        """Early stopping ended the run: ``patience`` epochs in a row did not beat the best validation
        bits/dim by ``min_delta`` (the run has converged by that rule)."""
        return bool(self.position.get("stopped_early"))

    # -- loop ----------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[Tensor]:
        return epoch_batches(self.train_idx, self.cfg.batch_size, self.cfg.seed, epoch)

    def steps_per_epoch(self) -> int:
        return len(self._batches(0))

    def total_steps(self) -> int:
        total = self.steps_per_epoch() * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _loss(self, batch: Tensor, step: int) -> tuple[Tensor, dict]:
        return self.batch_loss(batch, self.position["epoch"], step)

    def _step(self, idx: Tensor) -> dict | None:
        """One optimiser step; None when it was skipped (non-finite loss or gradient). The position
        advances with the weights, in one critical section, so a stop never sees half a step."""
        self._before = [b.detach().clone() for b in self.flow.buffers()]
        self.flow.train()
        with self.runtime.st_networks():
            loss, metrics = self._loss(idx, self.position["step"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.cfg.clip)
        bad, self.stopping = self.dist.flags(not bool(torch.isfinite(loss.detach()) & torch.isfinite(norm)),
                                             self.stop.signal is not None or self.stopping)
        if self.stopping:
            self.stop.request("SIGTERM")  # another process was stopped: stop with it after this step
        if bad:
            self._undo_partial_step()
            with self.stop.critical():
                self._move()
            self._skipped()
            return None
        with self.stop.critical():
            self.optimizer.step()
            self._move()
        self.guard.stepped()
        if not self.guard.state_finite():
            self._rollback("non-finite weights or statistics after the step")
            return None
        return metrics

    def _move(self) -> None:
        self.position = {**self.position, "batch": self.position["batch"] + 1, "step": self.position["step"] + 1}
        self._before = None

    def _undo_partial_step(self) -> None:
        """Put back the buffers (batch-norm running statistics) that a step's forward pass changed."""
        if self._before is not None:
            with torch.no_grad():
                for b, saved in zip(self.flow.buffers(), self._before):
                    b.copy_(saved)
            self._before = None

    def _skipped(self) -> None:
        self.events.on_message(f"warning: non-finite loss or gradient at step {self.position['step'] - 1}; "
                               "step skipped")
        if self.guard.skipped():
            self._rollback(f"{self.cfg.max_bad_steps} non-finite steps in a row")

    def _rollback(self, why: str) -> None:
        lr = self.guard.rollback()
        self.events.on_message(f"warning: {why} at step {self.position['step']}; rolled back to the last good state "
                               f"(step {self.guard.good.position['step']}) and lowered the learning rate to {lr:.3g}")

    def validate(self) -> float | None:
        """Mean validation bits/dim (:func:`~ood_flow.train.epoch.validate`); also scores the calibration split
        with the weights as they are now (:func:`~ood_flow.train.calibration.score_split`)."""
        val_bpd = validate(self.flow, self.x, self.val_idx, self.cfg.seed, self.dist)
        self.calibration = score_split(self.flow, self.x, self.cal_idx, seed=self.cfg.seed, dist=self.dist,
                                       step=self.position["step"], data=str(self.info.get("data")),
                                       settings=self.settings) or self.calibration
        return val_bpd

    def run(self) -> TrainResult:
        """Train until done. SIGINT/SIGTERM stop after the current step with its state saved.

        Raises:
            TrainingDiverged: every roll-back allowed was spent; the last good state was saved first.
            OutputError: ``out`` exists (a fresh run without ``overwrite``) or is being trained elsewhere.
        """
        if self.flow.closed_form:
            return self._fit_closed_form()
        start, total = time.time(), self.total_steps()
        self._total = total
        with contextlib.ExitStack() as stack, self.stop.catching():
            self._claim(stack)
            self.events.on_start(total, min(self.position["step"], total))
            before = copy.deepcopy(self.position)
            try:
                self._epochs(total)
                if self.stopping:
                    self._merge_sums()
            except KeyboardInterrupt:
                self._undo_partial_step()
                self.stop.request("SIGINT")
            except TrainingDiverged as exc:
                self._give_up(exc)
            self._wrap_up(before)
        return self._result(time.time() - start)

    def _fit_closed_form(self) -> TrainResult:
        """One fit on the training part (:mod:`~ood_flow.train.closed_form`), validated, recorded and saved as
        a single epoch; it reports once, through ``events.on_fit``."""
        start = time.time()
        with contextlib.ExitStack() as stack:
            self._claim(stack)
            train_bpd = closed_form.fit(self.flow, self.x[self.train_idx].float().to(self.device))
            self.history.append(closed_form.summary(train_bpd, self.validate()))
            self.position = {"epoch": 1, "batch": 0, "step": 0, "sums": zero_sums()}
            self.save()
        self.events.on_fit({"model": self.flow.name, "n_train": int(self.train_idx.numel()),
                            "n_val": int(self.val_idx.numel()), "train_bpd": train_bpd,
                            "val_bpd": self.history[-1]["val_bpd"], "seconds": time.time() - start})
        return self._result(time.time() - start)

    def _result(self, seconds: float) -> TrainResult:
        keep = self.best if self.cfg.patience else None
        return TrainResult(self.flow, self.position["step"], self.history, seconds,
                           interrupted=self.stop.signal is not None, checkpoint=checkpoint_path(self.out),
                           signal=self.stop.signal, model=self.out, n_train=int(self.train_idx.numel()),
                           n_val=int(self.val_idx.numel()), n_calibration=int(self.cal_idx.numel()),
                           stopped_early=self.stopped_early(),
                           best_epoch=keep.epoch if keep else None, best_val_bpd=keep.val_bpd if keep else None)

    def _wrap_up(self, before: dict) -> None:
        """Save a stopped run; record a resumed one that had nothing left to do as done (its new target);
        with early stopping, return the flow the model file holds."""
        if self.stop.signal:
            with contextlib.suppress(KeyboardInterrupt), self.stop.critical():
                self.save()
            return
        if self.resumed and self.position == before:
            with self.stop.critical():
                self.save()
        if self.cfg.patience and self.best is not None:
            self.flow.load_state_dict(self.best.state)

    def _claim(self, stack: contextlib.ExitStack) -> None:
        """Rank 0 takes the lock of ``out`` and checks it may write it; a failure stops every process."""
        self.dist.agree(lambda: claim_output(self.out, stack, self.resumed or self.overwrite), writer_only=True)

    def _give_up(self, exc: TrainingDiverged) -> None:
        good = self.guard.restore_good()
        self.position, self.history = copy.deepcopy(good.position), self.history[: good.history_length]
        self.diverged = True
        with self.stop.critical():
            self.save()
        raise TrainingDiverged(f"training diverged: {exc}; kept the last finite model (step {good.position['step']}) "
                               f"in {self.out}; try a smaller --lr") from None

    def _epochs(self, total: int) -> None:
        while (self.position["epoch"] < self.cfg.epochs and (self.position["step"] < total or self._summary_due())
               and not self._stopped() and not self.stopped_early()):
            batches = self._batches(self.position["epoch"])
            if self.position["batch"] == 0:
                self.position["sums"] = zero_sums()
            while self.position["batch"] < len(batches) and self.position["step"] < total and not self._stopped():
                self._advance(self._step(batches[self.position["batch"]]))
            if not self._stopped():
                self._end_epoch(finished=self.position["batch"] >= len(batches))

    def _summary_due(self) -> bool:
        """Steps were taken in the current epoch since its last summary: a run stopped after its last step, before
        validating it, resumes to write that summary (as the run that was never stopped did)."""
        last = self.history[-1]["step"] if self.history else None
        return self.position["batch"] > 0 and last != self.position["step"]

    def _stopped(self) -> bool:
        """A stop to honour now: the signal in one process; in several, the stop they all agreed on."""
        return self.stopping if self.dist.active else self.stop.signal is not None

    def _merge_sums(self) -> None:
        """Rank 0 holds the epoch's sums over all processes, the others add afresh."""
        self.position["sums"] = distributed.merge_sums(self.position["sums"], self.dist)

    def _advance(self, metrics: dict | None) -> None:
        if metrics is None:
            return
        report = add_step(self.position["sums"], metrics, self.flow.dim)
        if self.position["step"] % SNAPSHOT_EVERY == 0:
            self._checkpoint()
        estimate = self.timer.tick(self.position["step"], self._total)
        if estimate:
            self.step_seconds, self.step_measured = estimate["seconds_per_step"], True
            self.events.on_estimate({**estimate, "early_stopping": bool(self.cfg.patience)})
        self.events.on_step(self.position["step"], report)

    def _checkpoint(self) -> None:
        """Take the current state as good (when it is all finite) and save it; else roll back."""
        self._merge_sums()
        if not self.guard.mark_good(self.position, len(self.history)):
            self._rollback("non-finite batch-norm statistics")
            return
        with self.stop.critical():
            self.save()

    def _end_epoch(self, finished: bool) -> None:
        self._merge_sums()
        summary = epoch_summary(self.position["sums"], self.position["epoch"] + 1, self.position["step"],
                                self.validate(), finished, self.flow.dim)
        with self.stop.critical():
            self.history.append(summary)
            if finished:
                self.position = {**self.position, "epoch": self.position["epoch"] + 1, "batch": 0}
            self._early_stopping(summary)
        self._checkpoint()
        self.events.on_epoch(summary)
        if self.position.get("stopped_early"):
            self.events.on_message(f"early stopping: no better validation bits/dim for {self.cfg.patience} epochs; "
                                   f"the model file keeps epoch {self.best.epoch} ({self.best.val_bpd:.4f} bits/dim)")

    def _early_stopping(self, summary: dict) -> None:
        """Keep the best epoch (lowest validation bits/dim); stop once ``patience`` epochs bring none better."""
        if self.cfg.patience:
            self.best, stop = next_best(self.best, summary, self.flow, self.calibration, self.cfg.patience,
                                        self.cfg.min_delta or 0.0)
            if stop:
                self.position = {**self.position, "stopped_early": True}
