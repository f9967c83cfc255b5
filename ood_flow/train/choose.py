"""What a new training run trains: the model family for the data, the preset's settings, the flow and its
training configuration, where the model file goes by default, and the line that announces the plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ood_flow.data import Dataset
from ood_flow.errors import InputError, UsageError
from ood_flow.flows import Flow, create_flow
from ood_flow.flows.configs import FEATURE_STD_FLOOR, VECTOR_MODELS
from ood_flow.train.config import TrainConfig
from ood_flow.train.loop import Trainer
from ood_flow.train.presets import Preset, data_kind, get_preset


def resolved_config(config: TrainConfig, flow: Flow, ds: Dataset, chosen: Preset) -> TrainConfig:
    """``config`` with unset fields from the preset, then the paper's settings for the family (or for features)."""
    return config.resolved("features" if flow.name == "tabular" and ds.meta.get("backbone") else flow.name,
                           chosen.train)


def alternative(name: str, ds: Dataset, model: str | None, given: dict, config: TrainConfig, trainer: Trainer):
    """A builder of the run that the same command with ``--preset name`` would start (for its estimate only)."""

    def build() -> Trainer | None:
        chosen = preset_for(name, ds, model)
        if not (chosen.model or chosen.train):
            return None
        flow = new_flow(ds, model, given, chosen.model, trainer.cfg.seed, trainer.device)
        cfg = dataclasses.replace(resolved_config(config, flow, ds, chosen),
                                  negative_threshold=trainer.cfg.negative_threshold)
        other = Trainer(flow, ds.x, cfg, trainer.out, negative=trainer.negative, runtime=trainer.runtime)
        other.fit_preprocessing()
        return other

    return build


def plan(flow: Flow, cfg: TrainConfig, steps_per_epoch: int) -> str:
    """One line: the parameter count and the training to come (printed at the start of training)."""
    count = f"{flow.name}: {sum(p.numel() for p in flow.parameters()):,} parameters"
    if flow.closed_form:  # no optimiser, epochs or batches: one fit on the training split
        return f"{count}, fitted in closed form on the training split (mean, shrunk covariance); no gradient steps"
    stop = f", early stopping: patience {cfg.patience}, min delta {cfg.min_delta:g}" if cfg.patience else ""
    cap = f", at most {cfg.max_steps:,} steps" if cfg.max_steps else ""
    noise = f", noise {cfg.noise:g} x each column's std" if cfg.noise else ""
    return (f"{count}; {cfg.epochs} epochs of "
            f"{steps_per_epoch:,} steps (batch {cfg.batch_size}), {cfg.optimizer} lr {cfg.lr:g}, weight decay "
            f"{cfg.weight_decay:g}{noise}{stop}{cap}")


def preset_for(name: str, ds: Dataset, model: str | None) -> Preset:
    """Preset ``name`` for the model family and kind of data; a family without presets (gaussian) gets none."""
    fam = family(ds, model)
    kind = "embedding" if ds.meta.get("backbone") else data_kind(ds.kind, ds.sample_shape, ds.source)
    try:
        return get_preset(name, fam, kind)
    except ValueError as exc:
        if fam in ("realnvp", "glow", "tabular") and (fam in VECTOR_MODELS) == (ds.kind == "vector"):
            raise UsageError(f"--preset: {exc}") from None
        return Preset(name, fam, kind)  # gaussian, or a family the data does not fit (refused in new_flow)


def family(ds: Dataset, model: str | None) -> str:
    """``model``, or the default family for the data: realnvp for images, tabular for vectors."""
    return model or ("realnvp" if ds.kind == "image" else "tabular")


def default_model_path(ds: Dataset, model: str | None) -> Path:
    """``DATA-MODEL.pt`` in the current folder, e.g. ``fashionmnist-train-realnvp.pt``."""
    return Path(f"{ds.name}-{family(ds, model)}.pt")


def default_negative_threshold(flow: Flow) -> float:
    """C of the paper's objective (7): -30000 nats for 28x28 images, -100000 for larger ones; about -38
    nats per dimension for vectors."""
    if flow.kind == "image":
        return -30000.0 if flow.dim <= 28 * 28 else -100000.0
    return -38.0 * flow.dim


def new_flow(ds: Dataset, model: str | None, given: dict, defaults: dict, seed: int, device: str) -> Flow:
    name = family(ds, model)
    if (name in VECTOR_MODELS) != (ds.kind == "vector"):
        what = "vectors" if ds.kind == "vector" else "images"
        need = "tabular or gaussian" if ds.kind == "vector" else "realnvp or glow"
        raise InputError(f"{ds.name}: {what} need --model {need}, not {name}")
    if ds.meta.get("backbone"):  # features written by embed: floor near-constant columns (see Standardize)
        given = {"std_floor": FEATURE_STD_FLOOR, **given}  # the st-networks come from the preset
    torch.manual_seed(seed)
    return create_flow(name, ds.sample_shape, defaults=defaults, **given).to(device)
