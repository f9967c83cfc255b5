"""``oodflow train``: maximum-likelihood training of a flow on any SOURCE."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch
import typer

from ood_flow.cli import common, options
from ood_flow.data import conform, load_source
from ood_flow.errors import InputError
from ood_flow.flows import create_flow
from ood_flow.flows.configs import FEATURE_STD_FLOOR, VECTOR_MODELS
from ood_flow.train import PAPER_DEFAULTS, TrainConfig, Trainer, TrainEvents, checkpoint_path, load_training_state

MODEL_OPTIONS = ("mask", "bottleneck", "scales", "blocks", "channels", "couplings", "hidden", "net")


def train(
    data: str = typer.Option(..., "--data", help="Training SOURCE: dataset[:split], folder, image, .npy/.npz, .h5, .csv."),
    out: Optional[Path] = typer.Option(None, "--out", help="Model file to write (.pt or .h5); a checkpoint goes beside "
                                       "it. Default: DATA-MODEL.pt here, e.g. fashionmnist-train-realnvp.pt."),
    model: Optional[str] = typer.Option(None, "--model", callback=common.choice(*PAPER_DEFAULTS),
                                        help="realnvp, glow or tabular (default: realnvp for images, tabular for vectors); "
                                        "gaussian: a full-covariance Gaussian for vectors, fitted in closed form "
                                        "(Ledoit-Wolf shrinkage), the baseline a feature flow must beat."),
    mask: Optional[str] = typer.Option(None, "--mask", callback=common.choice("checkerboard", "horizontal", "vertical", "cycle"),
                                       help="realnvp coupling mask; horizontal/vertical/cycle build the paper's single-scale model."),
    bottleneck: Optional[int] = typer.Option(None, "--bottleneck", min=1, help="st-network bottleneck dimension l (Section 7)."),
    scales: Optional[int] = typer.Option(None, "--scales", min=1, help="Number of scales (realnvp, glow)."),
    blocks: Optional[int] = typer.Option(None, "--blocks", min=0, help="Residual/highway blocks per st-network."),
    channels: Optional[int] = typer.Option(None, "--channels", min=1, help="Hidden channels of the st-networks."),
    couplings: Optional[int] = typer.Option(None, "--couplings", min=1, help="Couplings (single-scale realnvp, tabular) or steps per scale (glow)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", min=1, help="Hidden units of the tabular MLP st-networks."),
    net: Optional[str] = typer.Option(None, "--net", callback=common.choice("resnet", "glow", "highway"), help="st-network family for image models."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Passes over the data (default: 10)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many steps in all."),
    batch_size: Optional[int] = options.BatchSize,
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (paper: 5e-5 realnvp/glow, 1e-3 tabular)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay (paper: 5e-5; tabular 1e-3)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", callback=common.choice("adam", "adamw", "rmsprop"),
                                            help="adam, adamw or rmsprop (paper: adam realnvp, rmsprop glow, adamw tabular)."),
    clip: float = typer.Option(100.0, "--clip", help="Gradient norm clipping."),
    negative_data: Optional[str] = typer.Option(None, "--negative-data", help="SOURCE whose likelihood to push down (Appendix B)."),
    negative_threshold: Optional[float] = typer.Option(None, "--negative-threshold", help="C: only negatives with log-likelihood "
                                                       "above C (nats) are pushed down (paper: -30000 for 28x28, -100000 for 32x32x3)."),
    perturb: Optional[float] = typer.Option(None, "--perturb", help="Replace pixels at this rate (a background model for "
                                            "the likelihood-ratio score, Ren et al. 2019)."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Share of the data held out for validation (max 2000)."),
    seed: int = options.Seed,
    device: str = typer.Option("auto", "--device", callback=common.choice("auto", "cpu", "cuda"), help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint beside --out exactly where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model file."),
    data_dir: Optional[str] = options.DataDir,
    limit: Optional[int] = options.Limit,
    columns: Optional[str] = options.Columns,
    label_column: Optional[str] = options.LabelColumn,
    class_value: Optional[str] = options.ClassValue,
    skip_invalid: bool = options.SkipInvalid,
    quiet: bool = options.Quiet,
    json_out: bool = options.Json,
) -> None:
    """Train a flow by maximum likelihood (uniform dequantization; the paper's optimiser settings by default).

    Writes the model file and a checkpoint (MODEL.ckpt.pt) every epoch and on Ctrl-C; --resume continues
    exactly where training stopped. Progress (loss in bits/dim, validation bits/dim) goes to stderr.
    """
    if negative_threshold is not None and not negative_data:
        common.fail("--negative-threshold needs --negative-data", 2)
    dev = common.resolve_device(device)
    ds = load_source(data, split="train", data_dir=data_dir, limit=limit, skip_invalid=skip_invalid,
                     columns=options.split_columns(columns), label_column=label_column, class_value=class_value)
    _report_skipped(ds, quiet)
    out = out or Path(f"{ds.name}-{_family(ds, model)}.pt")
    given = {k: v for k, v in locals().items() if k in MODEL_OPTIONS and v is not None}
    if resume:
        flow, cfg, extra = _resume(out, ds, dev, {"epochs": epochs, "max_steps": max_steps}, given, negative_data)
    else:
        _check_new(out, overwrite)
        flow = _new(ds, model, given, seed, dev)
        cfg = TrainConfig(epochs=epochs or 10, max_steps=max_steps, batch_size=batch_size, lr=lr,
                          weight_decay=weight_decay, optimizer=optimizer, clip=clip, seed=seed,
                          val_fraction=val_fraction, perturb=perturb).resolved(flow.name)
        extra = None
    negative = _negative(negative_data, flow, data_dir, limit, quiet)
    if negative is not None and cfg.negative_threshold is None:
        cfg = dataclasses.replace(cfg, negative_threshold=_threshold(negative_threshold, flow))
    info = {"data": ds.source, "negative_data": negative_data, "oodflow_command": "train"}
    _run(flow, ds, cfg, out, negative, info, extra, quiet, json_out, overwrite)


def _threshold(value: Optional[float], flow) -> float:
    if value is not None:
        return value
    if flow.kind == "image":
        return -30000.0 if flow.dim <= 28 * 28 else -100000.0
    return -38.0 * flow.dim  # the paper's thresholds are about -38 nats per dimension


def _check_new(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() not in (".pt", ".pth", ".h5", ".hdf5"):
        raise InputError(f"{out}: model files end in .pt or .h5")
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --resume to continue training it or --overwrite to replace it")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such folder for the model file")


def _family(ds, model: Optional[str]) -> str:
    """--model, or the default family for the data: realnvp for images, tabular for vectors."""
    return model or ("realnvp" if ds.kind == "image" else "tabular")


def _new(ds, model: Optional[str], given: dict, seed: int, device: str):
    name = _family(ds, model)
    if (name in VECTOR_MODELS) != (ds.kind == "vector"):
        what = "vectors" if ds.kind == "vector" else "images"
        need = "tabular or gaussian" if ds.kind == "vector" else "realnvp or glow"
        raise InputError(f"{ds.name}: {what} need --model {need}, not {name}")
    if ds.meta.get("backbone"):  # features written by embed: floor near-constant columns (see Standardize)
        given = {"std_floor": FEATURE_STD_FLOOR, **given}
    torch.manual_seed(seed)
    return create_flow(name, ds.sample_shape, **given).to(device)


def _resume(out: Path, ds, device: str, overrides: dict, given: dict, negative_data: Optional[str]):
    flow, extra = load_training_state(checkpoint_path(out), device)
    if extra.get("data") != ds.source or tuple(ds.sample_shape) != flow.input_shape:
        raise InputError(f"{checkpoint_path(out)} was trained on {extra.get('data')}, not {ds.source}; "
                         "resume with the same --data (and --limit)")
    if extra.get("negative_data") != negative_data:
        raise InputError(f"{checkpoint_path(out)} was trained with --negative-data {extra.get('negative_data')}; "
                         "resume with the same negative data")
    if given:
        raise InputError(f"--resume keeps the model's architecture; drop {', '.join('--' + k for k in given)}")
    saved = TrainConfig(**extra["train_config"])
    cfg = dataclasses.replace(saved, **{k: v for k, v in overrides.items() if v is not None})
    return flow, cfg, extra


def _negative(source: Optional[str], flow, data_dir, limit, quiet: bool):
    if not source:
        return None
    neg = conform(load_source(source, split="train", data_dir=data_dir, limit=limit), flow.input_shape)
    common.message(f"negative training: pushing down {len(neg)} samples of {neg.source}", quiet)
    return neg.x


def _report_skipped(ds, quiet: bool) -> None:
    for path, reason in ds.skipped:
        common.message(f"skipped {path}: {reason}", quiet)


def _run(flow, ds, cfg, out, negative, info, extra, quiet, json_out, overwrite) -> None:
    bar = common.progress(quiet)
    task = {}

    def on_start(total, done):
        task["id"] = bar.add_task("train", total=total, completed=done, info="")

    log_line = common.plain_logger(quiet)

    def on_step(step, m):
        text = f"{m['bpd']:.3f} bits/dim" + (f"  ll {m['ll']:.0f} / negative {m['neg_ll']:.0f}" if "neg_ll" in m else "")
        bar.update(task["id"], completed=step, info=text)
        log_line(f"step {step}/{bar.tasks[0].total}: {text}")

    def on_epoch(s):
        val = f", val {s['val_bpd']:.3f}" if s["val_bpd"] is not None else ""
        train_text = f"{s['train_bpd']:.3f}" if s["train_bpd"] is not None else "n/a"
        neg = f"; mean ll train {s['train_ll']:.0f} / negative {s['negative_ll']:.0f} nats" if "negative_ll" in s else ""
        if not quiet:
            bar.console.print(f"epoch {s['epoch']}: train {train_text} bits/dim{val}{neg} (step {s['step']})", highlight=False)

    events = TrainEvents(on_start, on_step, on_epoch, lambda text: bar.console.print(text, highlight=False))
    trainer = Trainer(flow, ds.x, cfg, out, negative=negative, events=events, info=info, overwrite=overwrite)
    if extra:
        trainer.restore(extra)
    else:
        trainer.fit_preprocessing()
    with bar:
        result = trainer.run()
    _finish(result, flow, cfg, out, ds, trainer, quiet, json_out)


def _finish(result, flow, cfg, out, ds, trainer, quiet, json_out) -> None:
    last = result.last
    summary = {"model": str(out), "checkpoint": str(result.checkpoint), "family": flow.name, "steps": result.steps,
               "train_bpd": last.get("train_bpd"), "val_bpd": last.get("val_bpd"), "seconds": round(result.seconds, 1),
               "n_train": int(trainer.train_idx.numel()), "n_val": int(trainer.val_idx.numel()), "data": ds.source,
               "interrupted": result.interrupted}
    if json_out:
        common.print_json(summary)
    if result.interrupted:
        common.fail(f"interrupted ({result.signal}) at step {result.steps}; checkpoint saved to {result.checkpoint}; "
                    "continue with the same command plus --resume", 143 if result.signal == "SIGTERM" else 130)
    fmt = lambda v: f"{v:.3f}" if v is not None else "n/a"  # noqa: E731
    common.message(f"done: {flow.name} on {ds.name} ({summary['n_train']} train / {summary['n_val']} val), "
                   f"{fmt(summary['train_bpd'])} bits/dim train, {fmt(summary['val_bpd'])} val, {result.steps} steps "
                   f"in {common.duration(result.seconds)}; model: {out}", quiet)


def register(app: typer.Typer) -> None:
    app.command("train")(common.handle_errors(train))
