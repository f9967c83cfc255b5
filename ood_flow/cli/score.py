"""``oodflow score``: per-sample scores of any SOURCE under a trained flow, into an HDF5 group."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from ood_flow import __version__
from ood_flow.cli import common, options
from ood_flow.data import conform, load_source
from ood_flow.errors import ScoreFileError
from ood_flow.fileio import sha256_file
from ood_flow.flows import load_model
from ood_flow.score.likelihood import sample_keys
from ood_flow.score.methods import METHODS, ScoreContext, get_method
from ood_flow import store

METHOD_HELP = "; ".join(f"{m.name}: {m.help}" for m in METHODS.values())


def score(
    source: str = typer.Argument(..., help="SOURCE to score: dataset[:split] (default split: test), folder, image, "
                                 ".npy/.npz, .h5, .csv."),
    model: List[Path] = typer.Option(..., "--model", help="Model file (.pt/.h5); give it several times for an ensemble."),
    out: Path = typer.Option(..., "--out", help="Score file (HDF5), created or appended to."),
    name: Optional[str] = typer.Option(None, "--name", help="Group name [default: from the source, e.g. mnist-test]."),
    method: List[str] = typer.Option(["likelihood"], "--method", help=f"Scores to compute (repeatable). {METHOD_HELP}"),
    dequant_samples: int = typer.Option(1, "--dequant-samples", min=1, help="Average over K dequantization draws."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Dequantization seed (noise is a fixed function of seed and sample id)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing group of the same name."),
    skip_invalid: bool = options.SkipInvalid,
    limit: Optional[int] = options.Limit,
    data_dir: Optional[str] = options.DataDir,
    resize: bool = options.Resize,
    grayscale: bool = options.Grayscale,
    rgb: bool = options.Rgb,
    columns: Optional[str] = options.Columns,
    label_column: Optional[str] = options.LabelColumn,
    class_value: Optional[str] = options.ClassValue,
    device: str = typer.Option("auto", "--device", callback=common.choice("auto", "cpu", "cuda"), help="auto, cpu or cuda."),
    json_out: bool = options.Json,
    quiet: bool = options.Quiet,
) -> None:
    """Score every sample of SOURCE and store the scores in group NAME of an HDF5 file.

    Scores are oriented so that higher = more in-distribution: log_likelihood is log P(x) in nats of the
    data as stored (8-bit images: the -D log 256 correction included); bits_per_dim = -log P(x) / (D ln 2).
    """
    methods = [get_method(m) for m in dict.fromkeys(method)]
    flows = [load_model(m, device=common.resolve_device(device)) for m in model]
    ds = load_source(source, split="test", data_dir=data_dir, limit=limit, skip_invalid=skip_invalid,
                     columns=options.split_columns(columns), label_column=label_column, class_value=class_value)
    ds = conform(ds, flows[0].input_shape, resize=resize, grayscale=grayscale, rgb=rgb)
    group = name or ds.name
    _check_group_free(out, group, overwrite)
    for path, reason in ds.skipped:
        common.message(f"skipped {path}: {reason}", quiet)
    arrays = _compute(methods, flows, ds, batch_size, dequant_samples, seed, quiet)
    attrs = _provenance(ds, model, methods, seed, dequant_samples)
    store.write_group(out, group, {**arrays, **_ids_labels(ds)}, attrs, overwrite=overwrite)
    _summary(out, group, ds, arrays, json_out, quiet)


def _check_group_free(out: Path, group: str, overwrite: bool) -> None:
    """Fail before any work if the group exists (the write checks again, atomically)."""
    if out.exists() and not overwrite and group in store.list_groups(out):
        raise ScoreFileError(f"{out}: group {group!r} already exists; pass --overwrite to replace it")


def _compute(methods, flows, ds, batch_size, dequant_samples, seed, quiet) -> dict[str, np.ndarray]:
    bar = common.progress(quiet)
    with bar:
        task = bar.add_task("score", total=len(ds) * sum(m.passes for m in methods), info=ds.name)
        ctx = ScoreContext(flows, ds.x, sample_keys(ds.ids), batch_size, dequant_samples, seed,
                           progress=lambda n: bar.advance(task, n))
        arrays: dict[str, np.ndarray] = {}
        for m in methods:
            arrays.update(m.compute(ctx))
    return arrays


def _ids_labels(ds) -> dict[str, np.ndarray]:
    out = {"id": np.asarray(ds.ids, dtype=str)}
    if ds.labels is not None:
        out["label"] = np.asarray(ds.labels, dtype=np.int64)
    return out


def _provenance(ds, models: list[Path], methods, seed: int, dequant_samples: int) -> dict:
    return {
        "source": ds.source,
        "model": [str(Path(m).resolve()) for m in models] if len(models) > 1 else str(Path(models[0]).resolve()),
        "model_sha256": [sha256_file(m) for m in models] if len(models) > 1 else sha256_file(models[0]),
        "method": [m.name for m in methods],
        "seed": seed,
        "dequantization": f"uniform, {dequant_samples} draw(s), noise = f(seed, sample id)" if ds.kind == "image" else "none",
        "batchnorm": "eval (stored statistics)",
        "oodflow_version": __version__,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_samples": len(ds),
        "skipped": json.dumps([{"path": p, "reason": r} for p, r in ds.skipped]),
        "label_names": list(ds.label_names) if ds.label_names else [],
    }


def _summary(out: Path, group: str, ds, arrays: dict, json_out: bool, quiet: bool) -> None:
    bpd = arrays.get("bits_per_dim")
    ll = arrays.get("log_likelihood")
    summary = {"file": str(out), "group": group, "n": len(ds), "skipped": len(ds.skipped),
               "mean_bits_per_dim": float(np.mean(bpd)) if bpd is not None else None,
               "mean_log_likelihood": float(np.mean(ll)) if ll is not None else None,
               "scores": sorted(arrays)}
    if json_out:
        common.print_json(summary)
        return
    mean = f", mean {summary['mean_bits_per_dim']:.3f} bits/dim" if bpd is not None else ""
    common.stdout().print(f"{group}: {len(ds)} samples{mean} -> {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("score")(common.handle_errors(score))
