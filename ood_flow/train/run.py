"""Training a flow on a SOURCE: :func:`train_flow`, the work behind ``oodflow train``.

It reads the source, builds a new flow (or rebuilds one from its checkpoint to resume), fills in
the paper's training settings for the model family, loads negative data if asked, and runs the
:class:`~ood_flow.train.loop.Trainer`, which writes the model file and its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ood_flow import distributed, runtime
from ood_flow.data import Dataset, SourceOptions, open_with_options, read_source
from ood_flow.errors import AlreadyExists, OutputError, UsageError
from ood_flow.fileio import check_output, file_lock
from ood_flow.flows import Flow
from ood_flow.flows.configs import VECTOR_MODELS
from ood_flow.flows.io import MODEL_FILE
from ood_flow.flows.models import config_dict
from ood_flow.runtime import Runtime
from ood_flow.score.calibration import Settings
from ood_flow.train.choose import (alternative, default_model_path, default_negative_threshold, new_flow,
                                    plan, preset_for, resolved_config)
from ood_flow.train.checkpoint import checkpoint_path, load_training_state
from ood_flow.train.config import DEFAULTS, FeatureSpec, TrainConfig, check_input_options
from ood_flow.train.estimate import forecast
from ood_flow.train.loop import Trainer
from ood_flow.train.objective import split_holdout
from ood_flow.train.result import TrainEvents, TrainResult
from ood_flow.train.resume import check_architecture, plan_resume

MODEL_SUFFIXES = (".pt", ".pth", ".h5", ".hdf5")


def train_flow(source: str | Dataset, config: TrainConfig | None = None, *, out: str | os.PathLike | None = None,
               model: str | None = None, model_options: dict[str, Any] | None = None, negative: str | None = None,
               resume: bool = False, overwrite: bool = False, device: str = "cpu",
               options: SourceOptions | None = None, events: TrainEvents | None = None,
               sync_bn: bool = False, features: FeatureSpec | None = None, preset: str = "paper") -> TrainResult:
    """Train a flow on ``source`` by maximum likelihood; write the model file and a checkpoint beside it.

    Args:
        source: SOURCE text (default split: train) or a :class:`~ood_flow.data.Dataset`.
        config: how to train; unset fields take the paper's settings for the model family.
        out: model file (.pt or .h5); default ``DATA-MODEL.pt`` in the current folder.
        model: family, one of :data:`~ood_flow.flows.MODELS` (default: realnvp for images, tabular for vectors).
        model_options: architecture options of :func:`~ood_flow.create_flow` (None values are ignored).
        negative: SOURCE whose likelihood is pushed down (the paper's Appendix B).
        resume: continue from the checkpoint beside ``out`` exactly where it stopped (from scratch, saying
            so, when there is none yet). Settings given in ``config`` or ``model_options`` that equal the saved
            ones are fine; a different value is applied where training can continue with it (epochs,
            max_steps, lr, weight_decay, clip, negative_threshold, precision, batch_size between epochs) and refused
            with a :class:`UsageError` naming it otherwise (see :mod:`ood_flow.train.resume`).
        overwrite: replace an existing model file (only an oodflow model file).
        options: how to read the source (the negative source uses only its data root and limit).
        preset: ``paper`` (the paper's model and training for the kind of data) or ``cpu`` (a small model
            of the same structure, early stopping); see :mod:`ood_flow.train.presets`. Architecture
            options and ``config`` fields that are set override it.
        events: callbacks for progress and messages.
        features: train on a pretrained backbone's features of the source's images (or on a features
            file of that backbone): the model file is then a detector that ``score`` runs on raw images,
            recording the backbone (name, weights sha256, transform); the weights are not copied.
        sync_bn: under torchrun, batch norm normalises over the global batch (default: each process's
            share, as DDP does); needs a process group.

    Under torchrun (see docs/distributed.md) every process calls this with the same arguments: the
    batches are shared out, ``config.batch_size`` is the global batch, and only rank 0 writes.

    Returns:
        The result of the run; ``interrupted`` is True after Ctrl-C (a checkpoint was written).

    Example (docs/api.md runs it)::

        r = train_flow("demo-mnist", TrainConfig(max_steps=2, batch_size=8), out="m.pt",
                       model_options={"channels": 4, "blocks": 1})
    """
    events = events or TrainEvents()
    config = config or TrainConfig()
    if config.negative_threshold is not None and not negative:
        raise UsageError("--negative-threshold needs --negative-data")
    if sync_bn and not (distributed.launched() or torch.distributed.is_initialized()):
        raise UsageError("--sync-bn needs a process group: run under torchrun with several processes "
                         "(see docs/distributed.md)")
    config.validate()  # before any work
    check_input_options(config, vectors=True if features is not None else None,
                        closed_form_model="gaussian" if model == "gaussian" else None)  # before any embedding
    if out is not None and not distributed.launched():  # under torchrun, rank 0 checks it below
        check_model_output(Path(out), resume=resume, overwrite=overwrite)
    job = _Job(source, config, out, model, model_options, negative, resume, overwrite, options, events, sync_bn,
               features, preset)
    with runtime.session(device, st=config.precision, backbone=features.precision if features else None,
                         compile=config.compile) as rt:  # a bad --precision fails before any work
        return _train(job, rt)


@dataclass(frozen=True)
class _Job:
    """What :func:`train_flow` was asked to do: everything but how it runs (the runtime)."""

    source: Any
    config: TrainConfig
    out: Any
    model: str | None
    model_options: dict[str, Any] | None
    negative: str | None
    resume: bool
    overwrite: bool
    options: SourceOptions | None
    events: TrainEvents
    sync_bn: bool
    features: FeatureSpec | None
    preset: str


def _train(job: _Job, rt: Runtime) -> TrainResult:
    events = job.events
    ds, detector = _training_data(job, rt)
    check_input_options(job.config, vectors=ds.kind == "vector")  # before the preset is chosen and announced
    for path, reason in ds.skipped:
        events.on_message(f"skipped {path}: {reason}")
    out = Path(job.out) if job.out is not None else default_model_path(ds, job.model)
    rt.dist.agree(lambda: check_model_output(out, resume=job.resume, overwrite=job.overwrite), writer_only=True)
    given = {k: v for k, v in (job.model_options or {}).items() if v is not None}
    if job.resume and _checkpoint_to_resume(out, job.overwrite, events):
        flow, cfg, extra = _resume(out, ds, rt.device, job.config, given, job.model, job.negative, events)
        rt = rt.continuing(precision=None if job.config.precision else cfg.precision,
                           compile=None if job.config.compile is not None else cfg.compile)
    else:
        chosen = preset_for(job.preset, ds, job.model)
        seed = DEFAULTS['seed'] if job.config.seed is None else job.config.seed
        flow, extra = new_flow(ds, job.model, given, chosen.model, seed, rt.device), None
        cfg = resolved_config(job.config, flow, ds, chosen)
        if chosen.model or chosen.train:  # a closed-form family (gaussian) has no preset settings to show
            events.on_message(chosen.describe())
    neg = _negative(job.negative, flow, job.options or SourceOptions(), events)
    if neg is not None and cfg.negative_threshold is None:
        cfg = dataclasses.replace(cfg, negative_threshold=default_negative_threshold(flow))
    info = {"data": ds.source, "negative_data": job.negative, "oodflow_command": "train",
            "preset": extra.get("preset") if extra else job.preset}
    if detector is not None:
        info["detector"] = detector.to_dict()
    if rt.dist.active:
        info.update(processes=rt.dist.world, sync_bn=job.sync_bn)
        flow = _parallel(flow, rt.dist, job.sync_bn, ds, cfg, events)
    trainer = Trainer(flow, ds.x, cfg, out, negative=neg, events=events, info=info, overwrite=job.overwrite,
                      runtime=rt, settings=_calibration_settings(ds, detector))
    events.on_message(plan(flow, trainer.cfg, trainer.steps_per_epoch()))
    if extra:
        trainer.restore(extra)
    else:
        trainer.fit_preprocessing()
    _estimate(trainer, events, alternative("cpu", ds, job.model, given, job.config, trainer)
              if job.preset == "paper" and not extra else None)
    return dataclasses.replace(trainer.run(), data=ds.source, name=ds.name)


def _estimate(trainer: Trainer, events: TrainEvents, alternative) -> None:
    """Report the time the run will take, probed before its first step (nothing for a closed-form fit)."""
    estimate = forecast(trainer, alternative)
    if estimate is not None:
        trainer.step_seconds = estimate["seconds_per_step"]
        events.on_estimate({**estimate, "alternative_preset": "cpu" if "alternative" in estimate else None})



def _calibration_settings(ds: Dataset, detector) -> Settings:
    """How the calibration split is scored: like ``oodflow score``'s defaults; a detector's backbone in the
    precision its features were embedded in."""
    if detector is None:
        return Settings()
    return Settings(backbone_precision=str(ds.meta.get("precision") or "fp32"))


def check_model_output(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Fail before any work if the model file (and its checkpoint) could not be written."""
    if out.suffix.lower() not in MODEL_SUFFIXES:
        raise UsageError(f"--out {out}: model files end in .pt or .h5")
    if os.path.lexists(out) and not resume and not overwrite:
        with file_lock(out, timeout=0):  # a run training it now is named first (it holds the lock)
            raise AlreadyExists(str(out), resume=True)
    check_output(out, overwrite=True, kind=MODEL_FILE)
    check_output(checkpoint_path(out), overwrite=True, kind=MODEL_FILE)


def _checkpoint_to_resume(out: Path, overwrite: bool, events: TrainEvents) -> bool:
    """Whether --resume has a checkpoint to continue; without one it starts from scratch and says so."""
    ckpt = checkpoint_path(out)
    if ckpt.exists():
        return True
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists but has no checkpoint ({ckpt.name}) to resume from; pass --overwrite to "
                          "train a new model in its place")
    events.on_message(f"--resume: no checkpoint {ckpt} yet (the run stopped before its first one); starting from "
                      "scratch")
    return False


def _training_data(job: _Job, rt: Runtime):
    """The training samples, and the backbone record when training a detector on features (embedded as ``rt``
    says: the backbone in ``rt.backbone`` precision)."""
    model, negative, events = job.model, job.negative, job.events
    if job.features is None:
        return read_source(job.source, "train", job.options), None
    if model not in (None, *VECTOR_MODELS) or negative:
        given = f"--model {model}" if model not in (None, *VECTOR_MODELS) else "--negative-data"
        raise UsageError(f"--features trains a tabular flow or a gaussian on the backbone's features; drop {given}")
    from ood_flow.embed.detector import training_features  # imports timm, slow: only when asked

    src = open_with_options(job.source, "train", job.options)
    start = time.perf_counter()
    ds, record = training_features(src, job.features, rt, progress=_counter(len(src), events.on_embed))
    if src.kind == "image":
        events.on_message(f"embedded {len(ds):,} images of {src.name} in {time.perf_counter() - start:.1f}s with "
                          f"{record.describe()}")
    return ds, record


def _counter(total: int, report):
    done = [0]

    def advance(k: int) -> None:
        done[0] += k
        report(done[0], total)

    return advance








def _resume(out: Path, ds: Dataset, device: str, config: TrainConfig, given: dict, model: str | None,
            negative: str | None, events: TrainEvents):
    """The checkpoint's flow and configuration with the changes that may apply (see :mod:`.resume`)."""
    ckpt = checkpoint_path(out)
    flow, extra = load_training_state(ckpt, device)
    if extra.get("data") != ds.source or tuple(ds.sample_shape) != flow.input_shape:
        raise UsageError(f"--resume: {ckpt.name} was trained on --data {extra.get('data')}, not {ds.source}; "
                         "resume with the same --data (and --limit)")
    if extra.get("negative_data") != negative:
        raise UsageError(f"--resume: {ckpt.name} was trained with --negative-data {extra.get('negative_data')}, "
                         f"not {negative}; resume with the same negative data")
    check_architecture(model, config_dict(flow), given, flow.name)
    position = extra["position"]
    saved = {"cal_fraction": 0.0, **extra["train_config"]}  # a checkpoint of an older oodflow held out none
    cfg, changes = plan_resume(TrainConfig(**saved), config, position)
    events.on_message(f"resuming from {ckpt} at step {position['step']}"
                      + (f"; applied {', '.join(changes)}" if changes else ""))
    return flow, cfg, extra


def _parallel(flow: Flow, dist: distributed.Dist, sync_bn: bool, ds: Dataset, cfg: TrainConfig,
              events: TrainEvents) -> Flow:
    """The flow readied for data-parallel training: the split checked and logged, ActNorm initialised on the
    global batch, batch norm synchronized when asked."""
    n_train = split_holdout(len(ds), cfg.val_fraction, cfg.cal_fraction, cfg.seed)[0].numel()
    distributed.check_layout(dist, n_train, cfg.batch_size)
    events.on_message(distributed.describe(dist, cfg.batch_size) + (", batch norm over the global batch"
                                                                     if sync_bn else ""))
    distributed.global_actnorm_init(flow, dist)
    return distributed.sync_batchnorm(flow, dist) if sync_bn else flow


def _negative(source: str | None, flow: Flow, options: SourceOptions, events: TrainEvents):
    if not source:
        return None
    plain = SourceOptions(data_dir=options.data_dir, limit=options.limit)
    neg = read_source(source, "train", plain, shape=flow.input_shape)
    events.on_message(f"negative training: pushing down {len(neg)} samples of {neg.source}")
    return neg.x
