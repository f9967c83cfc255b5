"""``oodflow score``: per-sample scores of any SOURCE under a trained flow, into an HDF5 group.

With ``--reference FILE:GROUP`` it also gates: a threshold chosen on in-distribution reference scores,
``is_ood`` per sample, the OOD fraction on stdout, and exit 3 above ``--max-ood-fraction``.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import typer

from ood_flow import __version__
from ood_flow.cli import common, options
from ood_flow.data import open_source
from ood_flow.data.conform import conform_source
from ood_flow.errors import GateFailed, InputError, ScoreFileError
from ood_flow.fileio import sha256_file
from ood_flow.flows import load_model
from ood_flow.score.complexity import COMPRESSORS
from ood_flow.score.gate import Gate, fit_gate, ood_fraction, parse_reference
from ood_flow.score.batched import Scored, check_methods, score_batches
from ood_flow.score.methods import METHODS, ScoreContext, get_method, total_passes
from ood_flow import store

METHOD_HELP = " ".join(f"{m.name}: {m.help}" for m in METHODS.values())


def _known_methods(values: List[str]) -> List[str]:
    unknown = [v for v in values if v not in METHODS]
    if unknown:
        raise typer.BadParameter(f"unknown method {unknown[0]!r}; valid methods: {', '.join(METHODS)}")
    return values


def _reference_syntax(value: Optional[str]) -> Optional[str]:
    if value is not None:
        try:
            parse_reference(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def score(
    source: str = typer.Argument(..., help="SOURCE to score: dataset[:split] (default split: test), folder, image, "
                                 ".npy/.npz, .h5, .csv."),
    model: List[Path] = typer.Option(..., "--model", help="Model file (.pt/.h5); give it several times for an ensemble "
                                     "(waic); the other methods use the first."),
    out: Optional[Path] = typer.Option(None, "--out", help="Score file (HDF5), created or appended to. Without it "
                                       "every sample's scores go to stdout (id and one column per score)."),
    name: Optional[str] = typer.Option(None, "--name", help="Group name (default: from the source, e.g. mnist-test)."),
    method: List[str] = typer.Option(["likelihood"], "--method", callback=_known_methods,
                                     help=f"Scores to compute (repeatable); each is oriented higher = more "
                                     f"in-distribution. {METHOD_HELP}"),
    compressor: str = typer.Option("png", "--compressor", callback=common.choice(*COMPRESSORS),
                                   help=f"Lossless compressor of --method complexity: {', '.join(COMPRESSORS)}."),
    background_model: Optional[Path] = typer.Option(None, "--background-model", help="Background flow of --method "
                                                    "likelihood-ratio (trained with --perturb)."),
    reference: Optional[str] = typer.Option(None, "--reference", callback=_reference_syntax,
                                            help="FILE:GROUP of in-distribution scores of the same model (e.g. a "
                                            "validation split) that set the threshold; stores is_ood per sample."),
    tpr: float = typer.Option(0.95, "--tpr", min=0.0, max=1.0, help="Share of the reference kept by the threshold."),
    gate_score: Optional[str] = typer.Option(None, "--gate-score", help="Score the threshold applies to (default: "
                                             "the first --method's score, e.g. log_likelihood)."),
    max_ood_fraction: Optional[float] = typer.Option(None, "--max-ood-fraction", min=0.0, max=1.0, help="Exit 3 "
                                                     "(after saving) if more than this share of SOURCE is OOD."),
    flags: bool = typer.Option(False, "--flags", help="Also print id, is_ood and score of every sample."),
    dequant_samples: int = typer.Option(1, "--dequant-samples", min=1, help="Average over K dequantization draws."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per forward pass (bn-train's batch)."),
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
    """Score every sample of SOURCE: into group NAME of an HDF5 file (--out), or as a table on stdout.

    Without --out (and without a gate) each sample's id and scores go to stdout, tab-separated with a
    header (JSON with --json), e.g. `oodflow score imgs/ --model m.pt | sort -t$'\\t' -k2 -g | head`.

    Scores are oriented so that higher = more in-distribution: log_likelihood is log P(x) in nats of the
    data as stored (8-bit images: the -D log 256 correction included); bits_per_dim = -log P(x) / (D ln 2).

    Gate (CI): --reference ref.h5:val --tpr 0.95 takes the threshold that keeps 95% of group val; a sample
    is OOD when its score is below it (or NaN). The OOD fraction goes to stdout; with --max-ood-fraction F
    the command exits 3 when it exceeds F, e.g. `oodflow score incoming/ --model m.pt --reference
    ref.h5:val --max-ood-fraction 0.05 || exit`.
    """
    methods = [get_method(m) for m in dict.fromkeys(method)]
    gate_score = _check_usage(methods, out, reference, gate_score, max_ood_fraction, flags)
    dev = common.resolve_device(device)
    flows = [load_model(m, device=dev) for m in model]
    background = _load_background(background_model, methods, flows[0], dev, quiet)
    _check_members(model, flows, quiet, methods)
    gate = _reference_gate(reference, tpr, gate_score, model) if reference else None
    src = open_source(source, split="test", data_dir=data_dir, limit=limit, skip_invalid=skip_invalid,
                      columns=options.split_columns(columns), label_column=label_column, class_value=class_value)
    src, transform = conform_source(src, flows[0].input_shape, resize=resize, grayscale=grayscale, rgb=rgb)
    group = name or src.name
    if out is not None:
        _check_group_free(out, group, overwrite)
    ctx = ScoreContext(flows, torch.zeros(0), torch.zeros(0, dtype=torch.int64), batch_size, dequant_samples, seed,
                       options={"compressor": compressor}, background=background)
    ds = _compute(methods, ctx, src, transform, group, quiet)
    for path, reason in src.skipped:
        common.message(f"skipped {path}: {reason}", quiet)
    arrays = ds.arrays
    attrs = {**_provenance(src, ds, model, methods, seed, dequant_samples, background_model), **ctx.attrs}
    if gate is not None:
        arrays["is_ood"] = gate.flags(arrays[gate_score])
        attrs.update(gate.attrs(arrays["is_ood"]))
    if out is not None:
        store.write_group(out, group, {**arrays, **_ids_labels(ds)}, attrs, overwrite=overwrite)
    if out is None and gate is None:
        _print_scores(group, ds, arrays, json_out, quiet)
        return
    _summary(out, group, ds, arrays, json_out, gate, flags)
    _apply_gate(gate, arrays, max_ood_fraction)


def _check_usage(methods, out, reference, gate_score, max_ood_fraction, flags) -> Optional[str]:
    """Option combinations that make no sense are usage errors (exit 2); returns the gate score."""
    if reference is None:
        given = [o for o, v in (("--gate-score", gate_score), ("--max-ood-fraction", max_ood_fraction),
                                ("--flags", flags or None)) if v is not None]
        if given:
            common.fail(f"{given[0]} needs --reference FILE:GROUP (in-distribution scores that set the threshold)", 2)
        return None
    choices = [m.score for m in methods]
    if gate_score is not None and gate_score not in choices:
        common.fail(f"--gate-score {gate_score!r} is not computed by the chosen --method; choose from: "
                    f"{', '.join(choices)}", 2)
    return gate_score or choices[0]


def _load_background(path: Optional[Path], methods, flow, dev: str, quiet: bool):
    if path is None:
        return None
    if "likelihood-ratio" not in [m.name for m in methods]:
        common.message("warning: --background-model is used only by --method likelihood-ratio; ignored", quiet)
        return None
    background = load_model(path, device=dev)
    if background.input_shape != flow.input_shape:
        raise InputError(f"{path}: background model expects inputs of shape {background.input_shape}, "
                         f"the model {flow.input_shape}")
    return background


def _check_members(paths: list[Path], flows, quiet: bool, methods) -> None:
    """Every --model takes the same inputs; extra models are only used by waic (say so)."""
    for path, flow in zip(paths[1:], flows[1:]):
        if flow.input_shape != flows[0].input_shape:
            raise InputError(f"{path}: expects inputs of shape {flow.input_shape}, but {paths[0]} "
                             f"{flows[0].input_shape}; ensemble members must take the same inputs")
    if len(flows) > 1 and "waic" not in [m.name for m in methods]:
        common.message(f"warning: {len(flows)} models given; only --method waic uses more than the first", quiet)


def _reference_gate(reference: str, tpr: float, score: str, models: list[Path]) -> Gate:
    """The threshold on the reference group's ``score``, which must come from the same model (ensemble for waic)."""
    path, group = parse_reference(reference)
    ref_scores = store.read_scores(path, group, score)
    recorded = store.read_group(path, group)[1].get("model_sha256")
    if recorded is not None:
        ref_sha, sha = recorded if isinstance(recorded, list) else [recorded], [sha256_file(m) for m in models]
        if ref_sha[0] != sha[0] or (score.startswith("waic") and ref_sha != sha):
            raise ScoreFileError(f"{path}: group '{group}' was scored with other model(s) than --model; a "
                                 "threshold only applies to scores of the same model")
    return fit_gate(ref_scores, tpr, score=score, reference=reference)


def _check_group_free(out: Path, group: str, overwrite: bool) -> None:
    """Fail before any work if the group exists (the write checks again, atomically)."""
    if out.exists() and not overwrite and group in store.list_groups(out):
        raise ScoreFileError(f"{out}: group {group!r} already exists; pass --overwrite to replace it")


def _compute(methods, ctx: ScoreContext, src, transform, label: str, quiet: bool) -> Scored:
    # before the progress bar: an error is then the only line on stderr
    check_methods(methods, ctx, ctx.flow.input_shape, src.kind == "image")
    bar = common.progress(quiet)
    with bar:
        n = len(src) * total_passes(methods, len(ctx.flows))
        task = bar.add_task("score", total=n, info=label)
        scored = score_batches(methods, src.batches(ctx.batch_size, transform), ctx,
                               progress=lambda k: bar.advance(task, k))
        bar.update(task, total=len(scored) * total_passes(methods, len(ctx.flows)))
    scored.skipped = list(src.skipped)
    for note in ctx.notes:
        common.message(f"warning: {note}", quiet)
    return scored


def _ids_labels(ds: Scored) -> dict[str, np.ndarray]:
    out = {"id": np.asarray(ds.ids, dtype=str)}
    if ds.labels is not None:
        out["label"] = np.asarray(ds.labels, dtype=np.int64)
    return out


def _provenance(src, ds: Scored, models: list[Path], methods, seed: int, dequant_samples: int,
                background: Optional[Path]) -> dict:
    attrs = {
        "source": src.source,
        "model": [str(Path(m).resolve()) for m in models] if len(models) > 1 else str(Path(models[0]).resolve()),
        "model_sha256": [sha256_file(m) for m in models] if len(models) > 1 else sha256_file(models[0]),
        "method": [m.name for m in methods],
        "seed": seed,
        "dequantization": f"uniform, {dequant_samples} draw(s), noise = f(seed, sample id)" if src.kind == "image" else "none",
        "batchnorm": "eval (stored statistics)",
        "oodflow_version": __version__,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_samples": len(ds),
        "skipped": json.dumps([{"path": p, "reason": r} for p, r in src.skipped]),
        "label_names": list(src.label_names) if src.label_names else [],
    }
    if background is not None and "likelihood-ratio" in attrs["method"]:
        attrs.update(background_model=str(Path(background).resolve()), background_model_sha256=sha256_file(background))
    return attrs


def _summary(out: Optional[Path], group: str, ds, arrays: dict, json_out: bool, gate: Optional[Gate],
             flags: bool) -> None:
    bpd, ll = arrays.get("bits_per_dim"), arrays.get("log_likelihood")
    summary = {"file": str(out) if out is not None else None, "group": group, "n": len(ds), "skipped": len(ds.skipped),
               "mean_bits_per_dim": float(np.mean(bpd)) if bpd is not None else None,
               "mean_log_likelihood": float(np.mean(ll)) if ll is not None else None,
               "scores": sorted(k for k in arrays if k != "is_ood")}
    if gate is not None:
        summary["gate"] = _gate_summary(gate, arrays["is_ood"])
    if flags:
        summary["samples"] = [{"id": i, "is_ood": bool(f), "score": float(s)}
                              for i, f, s in zip(np.asarray(ds.ids, dtype=str), arrays["is_ood"], arrays[gate.score])]
    if json_out:
        common.print_json(summary)
        return
    console = common.stdout()
    console.print(f"{group}: {len(ds)} samples{_mean_bpd(arrays)} -> {out if out is not None else '(not saved)'}",
                  highlight=False)
    if gate is not None:
        g = summary["gate"]
        console.print(f"{group}: {g['n_ood']} of {len(ds)} OOD ({g['ood_fraction']:.1%}): {gate.score} < "
                      f"{gate.threshold:.6g}, the threshold that keeps {gate.tpr:.0%} of {gate.reference}",
                      highlight=False)
    for sample in summary.get("samples", []):  # tab-separated, for cut/grep/awk
        sys.stdout.write(f"{sample['id']}\t{'OOD' if sample['is_ood'] else 'in'}\t{sample['score']:.6g}\n")


def _print_scores(group: str, ds, arrays: dict, json_out: bool, quiet: bool) -> None:
    """No --out and no gate: every sample's scores on stdout (tab-separated with a header, or JSON)."""
    names = list(arrays)
    ids = np.asarray(ds.ids, dtype=str)
    columns = np.stack([np.asarray(arrays[k], dtype=np.float64) for k in names], axis=1)
    if json_out:
        common.print_json({"file": None, "group": group, "n": len(ds), "skipped": len(ds.skipped), "scores": names,
                           "samples": [{"id": i, **dict(zip(names, map(float, row)))} for i, row in zip(ids, columns)]})
        return
    lines = ["\t".join(["id", *names])]
    lines += ["\t".join([i, *(f"{v:.10g}" for v in row)]) for i, row in zip(ids, columns.tolist())]
    sys.stdout.write("\n".join(lines) + "\n")
    common.message(f"{group}: {len(ds)} samples{_mean_bpd(arrays)} (not saved: pass --out FILE.h5 to keep them)", quiet)


def _mean_bpd(arrays: dict) -> str:
    """``", mean 3.871 bits/dim"`` for the one-line summary, or nothing when bits/dim was not computed."""
    bpd = arrays.get("bits_per_dim")
    return f", mean {float(np.mean(bpd)):.3f} bits/dim" if bpd is not None else ""


def _gate_summary(gate: Gate, is_ood: np.ndarray) -> dict:
    return {"score": gate.score, "threshold": gate.threshold, "tpr": gate.tpr, "tpr_achieved": gate.tpr_achieved,
            "reference": gate.reference, "n_reference": gate.n_reference,
            "n_ood": int(np.sum(is_ood)), "ood_fraction": ood_fraction(is_ood)}


def _apply_gate(gate: Optional[Gate], arrays: dict, max_ood_fraction: Optional[float]) -> None:
    """Exit 3 (GateFailed) when the OOD fraction exceeds --max-ood-fraction."""
    if gate is None or max_ood_fraction is None:
        return
    fraction = ood_fraction(arrays["is_ood"])
    if fraction > max_ood_fraction:
        raise GateFailed(f"OOD fraction {fraction:.4f} exceeds --max-ood-fraction {max_ood_fraction} "
                         f"({int(np.sum(arrays['is_ood']))} of {len(arrays['is_ood'])} samples below the threshold "
                         f"{gate.threshold:.6g} on {gate.score})")


def register(app: typer.Typer) -> None:
    app.command("score")(common.handle_errors(score))
