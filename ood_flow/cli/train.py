"""``oodflow train``: maximum-likelihood training of a flow on any SOURCE.

The work is :func:`ood_flow.train_flow`; this module parses the options and prints progress and the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ood_flow.cli import common, options
from ood_flow.names import IMAGE_MASKS, IMAGE_NETS, MODELS, OPTIMIZERS, PRESETS

if TYPE_CHECKING:
    from ood_flow.train import TrainEvents, TrainResult


DATA, MODEL, TRAINING, DETECTOR, OUTPUT = options.DATA, "Model", "Training", "Detector", "Output"


def train(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", metavar="SOURCE", rich_help_panel=DATA, help="Training SOURCE: "
                             "dataset[:split], folder, image, .npy/.npz, .h5, .csv."),
    data_dir: Optional[str] = options.DataDir,
    limit: Optional[int] = options.Limit,
    columns: Optional[str] = options.Columns,
    label_column: Optional[str] = options.LabelColumn,
    class_value: Optional[str] = options.ClassValue,
    skip_invalid: bool = options.SkipInvalid,
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", metavar="X", rich_help_panel=DATA,
                                                 help="Validation share (it chooses the kept epoch), in [0, 1), at "
                                                 "most 2000 samples (default: 0.05)."),
    cal_fraction: Optional[float] = typer.Option(None, "--calibration-fraction", metavar="X", rich_help_panel=DATA,
                                                 help="Share held out, besides, to calibrate score's gate (used for no "
                                                 "choice), in [0, 1), at most 2000 samples (default: 0.05; 0: none)."),
    preset: str = typer.Option("paper", "--preset", callback=options.choice(*PRESETS), metavar=options.one_of(PRESETS),
                               rich_help_panel=MODEL,
                               help="paper: the paper's model and training for the data (Appendix C, K.1; days on "
                                    "a CPU for images); cpu: a small model of the same structure, at most 30 epochs "
                                    "with early stopping (minutes to an hour). Options given override it "
                                    "(docs/models.md)."),
    model: Optional[str] = typer.Option(None, "--model", callback=options.choice(*MODELS), metavar="NAME",
                                        rich_help_panel=MODEL,
                                        help=f"{', '.join(MODELS)} (default: realnvp for images, tabular for "
                                        "vectors); gaussian: a closed-form full-covariance Gaussian, the "
                                        "baseline a feature flow must beat."),
    mask: Optional[str] = typer.Option(None, "--mask", callback=options.choice(*IMAGE_MASKS), metavar="NAME",
                                       rich_help_panel=MODEL, help="realnvp mask: checkerboard (default); horizontal, "
                                       "vertical or cycle build the paper's single-scale model."),
    net: Optional[str] = typer.Option(None, "--net", callback=options.choice(*IMAGE_NETS), metavar="NAME",
                                      rich_help_panel=MODEL,
                                      help="Image st-network: resnet (the authors', default for realnvp), "
                                           "resnet-noskip (no skip path; default with --bottleneck), resnet-v1 "
                                           "(oodflow before model format 2), glow, highway (default for glow)."),
    scales: Optional[int] = typer.Option(None, "--scales", min=1, metavar="N", rich_help_panel=MODEL,
                                         help="Scales (realnvp checkerboard, glow); realnvp --scales 1 stacks "
                                         "--couplings couplings at one scale."),
    couplings: Optional[int] = typer.Option(None, "--couplings", min=1, metavar="N", rich_help_panel=MODEL,
                                            help="Couplings of a single-scale realnvp (default 8) or tabular flow; "
                                            "steps per scale of glow."),
    blocks: Optional[int] = typer.Option(None, "--blocks", min=0, metavar="N", rich_help_panel=MODEL,
                                         help="Residual/highway blocks per st-network (not for --net glow, whose depth "
                                         "is fixed)."),
    channels: Optional[int] = typer.Option(None, "--channels", min=1, metavar="N", rich_help_panel=MODEL,
                                           help="Hidden channels of the st-networks (realnvp: at the first scale; "
                                           "doubled at every squeeze)."),
    bottleneck: Optional[int] = typer.Option(None, "--bottleneck", min=1, metavar="L", rich_help_panel=MODEL,
                                             help="st-network bottleneck dimension l (Section 7; st-networks without "
                                             "skip path)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", min=1, metavar="N", rich_help_panel=MODEL,
                                         help="Hidden units of the tabular MLP st-networks."),
    whiten: Optional[bool] = typer.Option(None, "--whiten/--no-whiten", rich_help_panel=MODEL,
                                          help="tabular: a full-covariance Gaussian before the couplings, fitted as "
                                          "the gaussian baseline (docs/detector.md)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, metavar="N", rich_help_panel=TRAINING,
                                         help="Passes over the data (default: the preset's)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, metavar="N", rich_help_panel=TRAINING,
                                            help="Stop after this many steps in all."),
    batch_size: Optional[int] = options.in_panel(options.BatchSize, TRAINING),
    lr: Optional[float] = typer.Option(None, "--lr", metavar="X", rich_help_panel=TRAINING,
                                       help="Learning rate (default: the preset's)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", metavar="X", rich_help_panel=TRAINING,
                                                 help="Weight decay (default: the preset's)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", callback=options.choice(*OPTIMIZERS), metavar="NAME",
                                            rich_help_panel=TRAINING, help=f"{', '.join(OPTIMIZERS)} (default: adam "
                                            "for realnvp, rmsprop for glow, adamw for tabular)."),
    clip: Optional[float] = typer.Option(None, "--clip", metavar="X", rich_help_panel=TRAINING,
                                         help="Clip the gradient norm at this value (default: 100)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=0, metavar="N", rich_help_panel=TRAINING,
                                           help="Stop when validation bits/dim has not improved by --min-delta for N "
                                           "epochs, keeping the best (0: off; default off, cpu preset 3, feature "
                                           "flows 10)."),
    min_delta: Optional[float] = typer.Option(None, "--min-delta", metavar="X", rich_help_panel=TRAINING,
                                              help="Validation bits/dim gain that resets --patience (cpu preset: "
                                              "0.005)."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", rich_help_panel=TRAINING,
                                       help="Seed of the weights, the validation split and every random draw "
                                       "(default 0)."),
    negative_data: Optional[str] = typer.Option(None, "--negative-data", metavar="SOURCE", rich_help_panel=TRAINING,
                                                help="SOURCE whose likelihood to push down (Appendix B)."),
    negative_threshold: Optional[float] = typer.Option(None, "--negative-threshold", metavar="C",
                                                       rich_help_panel=TRAINING, help="Push down only negatives with "
                                                       "log-likelihood above C nats (paper: -30000 for 28x28, -100000 "
                                                       "for 32x32x3)."),
    perturb: Optional[float] = typer.Option(None, "--perturb", metavar="X", rich_help_panel=TRAINING,
                                            help="Replace pixels at this rate: a background model for the "
                                            "likelihood-ratio score."),
    noise: Optional[float] = typer.Option(None, "--noise", metavar="X", rich_help_panel=TRAINING,
                                          help="Vectors: Gaussian noise of X column standard deviations on each "
                                          "training vector (default 0)."),
    features: Optional[str] = typer.Option(None, "--features", metavar="BACKBONE", rich_help_panel=DETECTOR,
                                           help="Train a detector on this backbone's features (a timm name as embed "
                                           "takes, e.g. tf_efficientnet_lite0)."),
    weights: Optional[Path] = options.in_panel(options.Weights, DETECTOR),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=8, metavar="N", rich_help_panel=DETECTOR,
                                             help="Resize images to N x N, N >= 8 (default: the backbone's input "
                                             "size)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", rich_help_panel=OUTPUT,
                                       help="Model file to write (.pt or .h5), its checkpoint beside it "
                                       "(default: DATA-MODEL.pt here)."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                                   help="Replace an existing model file."),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=OUTPUT, help="Continue exactly from the checkpoint "
                                "beside --out (from scratch if there is none yet)."),
    device: str = options.device_option(),
    precision: Optional[str] = options.precision_option(None),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", rich_help_panel=options.RUNTIME,
                                            help="torch.compile the training step: a one-off compile, then faster "
                                            "steps (docs/speed.md); results differ in the last bits."),
    sync_bn: bool = typer.Option(False, "--sync-bn", rich_help_panel=options.RUNTIME, help="Under torchrun: batch "
                                 "norm over the global batch, not each process's share."),
    quiet: bool = options.Quiet,
    json_out: bool = options.Json,
) -> None:
    """Train a flow by maximum likelihood (uniform dequantization; the paper's optimiser settings by default).

    Writes the model file and a checkpoint (MODEL.ckpt.pt) every epoch and on Ctrl-C; progress goes to stderr.
    --resume continues exactly: --epochs and --max-steps (not below the point reached), --lr, --weight-decay,
    --clip and (between epochs) --batch-size may change; the architecture, --seed, --optimizer,
    --val-fraction, --calibration-fraction, --perturb and --noise may not.

    --features BACKBONE trains a detector: one model file that score runs on raw images (the backbone's
    weights are found and hash-checked, not copied); --data is images or a features file of the same
    backbone; defaults: Appendix K.1, early stopping.

    Data parallel: torchrun --nproc_per_node N -m ood_flow train ... (--batch-size is then the global
    batch; only rank 0 writes and logs; docs/distributed.md).
    """
    from ood_flow.train import FeatureSpec, TrainConfig, train_flow

    config = TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, optimizer=optimizer, clip=clip, seed=seed,
                         val_fraction=val_fraction, cal_fraction=cal_fraction, patience=patience, min_delta=min_delta,
                         negative_threshold=negative_threshold, perturb=perturb, noise=noise, precision=precision,
                         compile=compile_)
    spec = (FeatureSpec(features, str(weights) if weights else None, image_size, precision)
            if features is not None else None)
    architecture = {"mask": mask, "bottleneck": bottleneck, "scales": scales, "blocks": blocks, "channels": channels,
                    "couplings": couplings, "hidden": hidden, "net": net, "whiten": whiten}
    data_options = options.source_options(data_dir, limit, skip_invalid, columns, label_column, class_value)
    report = common.Reporter("train", quiet)
    common.run(lambda: train_flow(data, config, out=out, model=model, model_options=architecture,
                                  negative=negative_data, resume=resume, overwrite=overwrite, device=device,
                                  options=data_options, events=_events(report), sync_bn=sync_bn, features=spec,
                                  preset=preset),
               lambda result: _finish(result, quiet, json_out, ctx), report)


def _events(report: common.Reporter) -> TrainEvents:
    """Training progress on stderr: a bar with the loss, one line per epoch (plain lines when not a terminal)."""
    from ood_flow.train import TrainEvents

    log_line, total = common.plain_logger(report.quiet), [0]

    def on_start(steps: int, done: int) -> None:
        total[0] = steps
        report.progress(done, steps, "", what="train")

    def on_step(step: int, m: dict) -> None:
        negative = f"  ll {m['ll']:.0f} / negative {m['neg_ll']:.0f}" if "neg_ll" in m else ""
        text = f"{m['bpd']:.3f} bits/dim{negative}"
        report.progress(step, total[0], text, what="train")
        log_line(f"step {step}/{total[0]}: {text}")

    def on_epoch(s: dict) -> None:
        val = f", val {s['val_bpd']:.3f}" if s["val_bpd"] is not None else ""
        train_text = f"{s['train_bpd']:.3f}" if s["train_bpd"] is not None else "n/a"
        neg = (f"; mean ll train {s['train_ll']:.0f} / negative {s['negative_ll']:.0f} nats" if "negative_ll" in s
               else "")
        report.message(f"epoch {s['epoch']}: train {train_text} bits/dim{val}{neg} (step {s['step']})")

    def on_embed(done: int, n: int) -> None:
        report.progress(done, n, "images", what="embed")
        log_line(f"embedded {done}/{n} images")

    def on_fit(f: dict) -> None:
        val = f", val {f['val_bpd']:.3f} ({f['n_val']:,} held out)" if f["val_bpd"] is not None else ""
        report.message(f"{f['model']} fitted in closed form on {f['n_train']:,} vectors in "
                       f"{common.duration(f['seconds'])}: train {f['train_bpd']:.3f} bits/dim{val}")

    def on_estimate(e: dict) -> None:
        report.message(probed_estimate(e) if e.get("probed") else measured_estimate(e))

    return TrainEvents(on_start, on_step, on_epoch, report.message, on_embed, on_estimate, on_fit)


def measured_estimate(e: dict) -> str:
    """The estimate refined on the run's first steps, in one line."""
    return (f"estimated {common.duration(e['seconds_left'])} for the {e['steps_left']:,} steps left of "
            f"{e['total_steps']:,} at {e['seconds_per_step']:.3g} s/step (measured on "
            f"steps {e['from_step']}-{e['from_step'] + e['measured_steps'] - 1}; validation not included"
            f"{'; an upper bound with early stopping' if e.get('early_stopping') else ''})")


def probed_estimate(e: dict) -> str:
    """The estimate before the first step, in one line; beyond a day on this device, with the faster ways."""
    where = {"cpu": "this CPU", "cuda": "this GPU"}.get(e["device"], e["device"])
    bound = "; an upper bound with early stopping" if e["early_stopping"] else ""
    probed = (f"{e['steps_left']:,} steps at {e['seconds_per_step']:.3g} s/step, probed on one batch of "
              f"{e['batch_size']}: {e['flops_per_sample'] / 1e9:.3g} GFLOP per sample forward and backward")
    left_out = "validation and compilation" if e.get("compiled") else "validation"
    if not e["over_a_day"]:
        return f"estimated {common.duration(e['seconds_left'])} ({probed}; {left_out} not included{bound})"
    faster = []
    alt = e.get("alternative")
    if alt:
        early = "; an upper bound: it stops early" if alt["early_stopping"] else ""
        faster.append(f"--preset {e['alternative_preset']} ({alt['parameters']:,} parameters) about "
                      f"{common.duration(alt['seconds'])} (at most {alt['total_steps']:,} steps{early})")
    if e["device"] == "cpu":
        faster.append("--device cuda on a GPU")
    return (f"on {where} about {common.duration(e['seconds_left'])} ({probed}{bound})"
            + (f"; faster: {'; or '.join(faster)}" if faster else ""))


def _finish(r: TrainResult, quiet: bool, json_out: bool, ctx: typer.Context) -> None:
    last = r.last
    summary = {"model": str(r.model), "checkpoint": str(r.checkpoint), "family": r.flow.name, "steps": r.steps,
               "train_bpd": last.get("train_bpd"), "val_bpd": last.get("val_bpd"), "seconds": round(r.seconds, 1),
               "n_train": r.n_train, "n_val": r.n_val, "n_calibration": r.n_calibration, "data": r.data,
               "interrupted": r.interrupted,
               "stopped_early": r.stopped_early, "epochs": len(r.history), "best_epoch": r.best_epoch,
               "best_val_bpd": r.best_val_bpd,
               "parameters": sum(p.numel() for p in r.flow.parameters())}
    if json_out:
        common.print_json(summary)
    if r.interrupted:
        common.fail(f"interrupted ({r.signal}) at step {r.steps}; checkpoint saved to {r.checkpoint}; continue "
                    f"with: {common.same_command(ctx, '--resume')}", 143 if r.signal == "SIGTERM" else 130)
    fmt = lambda v: f"{v:.3f}" if v is not None else "n/a"  # noqa: E731
    steps = "fitted in closed form" if r.flow.closed_form else f"{r.steps} steps"
    common.message(f"done: {r.flow.name} on {r.name} ({r.n_train} train / {r.n_val} val / {r.n_calibration} "
                   "calibration), "
                   f"{fmt(summary['train_bpd'])} bits/dim train, {fmt(summary['val_bpd'])} val, {steps} "
                   f"in {common.duration(r.seconds)}; model: {r.model}"
                   + (f" (epoch {r.best_epoch}'s weights, {r.best_val_bpd:.3f} val)" if r.best_epoch else ""), quiet)


def register(app: typer.Typer) -> None:
    common.command(app, train)
