"""``oodflow score``: per-sample scores of any SOURCE under a trained flow, into an HDF5 group.

With ``--max-ood-fraction`` (or ``--reference FILE:GROUP``, ``--flags``, ``--fdr``) it also gates: a threshold on
calibration scores (those the model file carries, or the reference group's), ``is_ood`` and a conformal
``p_value`` per sample, and the batch test's decision (exit 3 on significant evidence that more than
``--max-ood-fraction`` is OOD). The work is :func:`ood_flow.score_source`; this module parses and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import typer

from ood_flow.cli import common, options
from ood_flow.names import COMPRESSORS, METHODS
from ood_flow.validation import check_number, parse_reference

if TYPE_CHECKING:
    from ood_flow.score import ScoreResult

METHOD_HELP = "Methods (--method), each oriented higher = more in-distribution:\n" + "\n".join(
    f"[bold]{name}[/]: {m.help}" for name, m in METHODS.items())


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


SCORES, GATE, OUTPUT = "Scores", "Gate", "Output"


def score(
    source: Optional[List[str]] = typer.Argument(None, metavar="SOURCE...", help="What to score: dataset[:split] "
                                                 "(default split: test), folder, image, .npy/.npz, .h5, .csv; or "
                                                 "several image files and folders, '-' for paths on stdin, scored "
                                                 "as one group (--name) in the order given."),
    files_from: Optional[str] = options.FilesFrom,
    null: bool = options.Null,
    data_dir: Optional[str] = options.DataDir,
    limit: Optional[int] = options.Limit,
    skip_invalid: bool = options.SkipInvalid,
    resize: bool = options.Resize,
    grayscale: bool = options.Grayscale,
    rgb: bool = options.Rgb,
    columns: Optional[str] = options.Columns,
    label_column: Optional[str] = options.LabelColumn,
    class_value: Optional[str] = options.ClassValue,
    model: List[Path] = typer.Option(..., "--model", metavar="FILE", rich_help_panel=SCORES, help="Model file "
                                     "(.pt/.h5); repeat it for an ensemble (waic); the other methods use the first."),
    weights: Optional[Path] = options.in_panel(options.Weights, SCORES),
    method: List[str] = typer.Option(["likelihood"], "--method", callback=_known_methods, metavar="NAME",
                                     rich_help_panel=SCORES,
                                     help=f"Scores to compute (repeatable): {', '.join(METHODS)} (see Methods below)."),
    compressor: str = typer.Option("png", "--compressor", callback=options.choice(*COMPRESSORS),
                                   metavar="NAME", rich_help_panel=SCORES,
                                   help=f"Lossless compressor of --method complexity: {', '.join(COMPRESSORS)}."),
    background_model: Optional[Path] = typer.Option(None, "--background-model", metavar="FILE", rich_help_panel=SCORES,
                                                    help="Background flow of --method likelihood-ratio (trained with "
                                                    "--perturb)."),
    dequant_samples: int = typer.Option(1, "--dequant-samples", min=1, metavar="K", rich_help_panel=SCORES,
                                        help="Average over K dequantization draws."),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=SCORES, help="Dequantization seed (noise is a "
                             "fixed function of seed and sample id)."),
    reference: Optional[str] = typer.Option(None, "--reference", callback=_reference_syntax, metavar="FILE:GROUP",
                                            rich_help_panel=GATE, help="Held-out in-distribution scores of the same "
                                            "model to calibrate the gate with (default: the calibration the model "
                                            "file carries, from train or oodflow calibrate)."),
    tpr: float = typer.Option(0.95, "--tpr", metavar="X", rich_help_panel=GATE,
                              help="Share of the calibration scores the per-sample threshold keeps: good data is "
                              "flagged at about 1 - X."),
    gate_score: Optional[str] = typer.Option(None, "--gate-score", metavar="NAME", rich_help_panel=GATE,
                                             help="Score the gate applies to (default: the first --method's, e.g. "
                                             "log_likelihood)."),
    max_ood_fraction: Optional[float] = typer.Option(None, "--max-ood-fraction", metavar="F",
                                                     rich_help_panel=GATE, help="Exit 3 (after saving) on significant "
                                                     "evidence (--alpha) that more than F of SOURCE is OOD."),
    alpha: float = typer.Option(0.01, "--alpha", metavar="X", rich_help_panel=GATE, help="Level of the batch test: a "
                                "batch with at most F OOD fails with probability at most X."),
    confidence: float = typer.Option(0.95, "--confidence", metavar="X", rich_help_panel=GATE, help="1 - delta: the "
                                     "level holds for all but a delta share of calibration sets, so for this model "
                                     "file."),
    marginal: bool = typer.Option(False, "--marginal", rich_help_panel=GATE, help="The marginal guarantee instead "
                                  "(over calibration set and batch together): more power, but one unlucky model file "
                                  "fails more often."),
    fdr: Optional[float] = typer.Option(None, "--fdr", metavar="Q", rich_help_panel=GATE, help="Flag samples by "
                                        "Benjamini-Hochberg on their p-values at false-discovery rate Q instead of by "
                                        "the threshold (the batch decision is unchanged)."),
    flags: bool = typer.Option(False, "--flags", rich_help_panel=GATE, help="Print a TSV row per sample on stdout (id, "
                               "is_ood, score, p_value) and the summary on stderr."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", rich_help_panel=OUTPUT, help="Score file (HDF5), "
                                       "created or appended to. Without it every sample's scores go to stdout (id and "
                                       "one column per score)."),
    name: Optional[str] = typer.Option(None, "--name", metavar="NAME", rich_help_panel=OUTPUT,
                                       help="Group name (default: from the source, e.g. mnist-test)."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                                   help="Replace an existing group of the same name."),
    device: str = options.device_option(),
    precision: str = options.precision_option("fp32"),
    batch_size: int = typer.Option(256, "--batch-size", min=1, metavar="N", rich_help_panel=options.RUNTIME,
                                   help="Samples per forward pass (bn-train's batch)."),
    json_out: bool = options.Json,
    quiet: bool = options.Quiet,
) -> None:
    """Score every sample of SOURCE: into group NAME of an HDF5 file (--out), or as a table on stdout.

    Several SOURCEs (image files and folders), '-' (paths on stdin, one per line, or NUL-separated with -0)
    and --files-from FILE are scored as one group named by --name, in the order given, e.g. `find incoming
    -name '*.png' -print0 | oodflow score - -0 --name incoming --model m.pt --max-ood-fraction 0.05`. A
    sample's id is its path, so an image gets the same id and score from a folder, a list or alone.

    Without --out (and without a gate) each sample's id and scores go to stdout, tab-separated with a
    header (JSON with --json), e.g. `oodflow score imgs/ --model m.pt | sort -t$'\\t' -k2 -g | head`; a tab,
    newline or backslash in an id is written as \\t, \\n or \\\\, so each sample is one line.

    Scores are oriented so that higher = more in-distribution: log_likelihood is log P(x) in nats of the
    data as stored (8-bit images: the -D log 256 correction included); bits_per_dim = -log P(x) / (D ln 2).

    Gate (CI): `oodflow score incoming/ --model m.pt --max-ood-fraction 0.05 || exit`. A sample is flagged when
    its score is below the threshold keeping --tpr (0.95) of the model file's calibration scores (held-out
    in-distribution data, see oodflow calibrate); the batch fails (exit 3) only on significant evidence, at
    level --alpha (0.01), that more than F of it is OOD, the calibration's finite size accounted for. For
    all but 5 % of calibration sets (--confidence 0.95) a batch of good data then fails at most 1 % of the time,
    at any size. Unreadable files (--skip-invalid) count as OOD. docs/gate.md states the guarantee and its
    measured rates.

    A feature detector (train --features B) scores images, embedding them on the fly, or features files
    that embed wrote with the same backbone and transform.
    """
    from ood_flow.score import GateSpec, score_source

    check_number("--tpr", tpr, low=0, high=1, low_open=True)  # also without --reference: a NaN is never a value
    gated = any(v is not None for v in (reference, gate_score, max_ood_fraction, fdr)) or flags
    gate = GateSpec(reference, tpr, gate_score, max_ood_fraction, alpha, None if marginal else confidence, fdr)
    if not gated:
        gate = None
    data = options.source_options(data_dir, limit, skip_invalid, columns, label_column, class_value, resize,
                                  grayscale, rgb)
    entries = options.sources(source, files_from, null, skip_invalid)
    report = common.Reporter("score", quiet, info=name or (entries[0] if len(entries) == 1 else "files"))
    common.run(lambda: score_source(
        entries, model, methods=method, out=out, name=name, overwrite=overwrite, gate=gate, background=background_model,
        compressor=compressor, dequant_samples=dequant_samples, batch_size=batch_size, seed=seed, device=device,
        precision=precision, options=data, progress=report.progress, on_message=report.message, weights=weights),
        lambda result: _show(result, json_out, flags, quiet), report)


def _show(r: ScoreResult, json_out: bool, flags: bool, quiet: bool) -> None:
    """stdout carries either the data rows (--flags: TSV with a header) or the summary, never both."""
    if r.out is None and r.gate is None:
        _print_scores(r, json_out, quiet)
        return
    summary = _summary(r, flags)
    if json_out:
        common.print_json(summary)
        return
    lines = [f"{r.group}: {_samples(r.n)}{_mean_bpd(r.arrays)} -> {r.out if r.out is not None else '(not saved)'}"]
    if r.gate is not None:
        lines += _gate_lines(r, summary["gate"])
    if not flags:
        console = common.stdout()
        for line in lines:
            console.print(line, highlight=False)
        return
    for line in lines:
        common.message(line, quiet)
    rows = ["\t".join(["id", "is_ood", r.gate.score, "p_value"])]
    rows += [f"{common.tsv_field(s['id'])}\t{'OOD' if s['is_ood'] else 'in'}\t{_num(s['score'])}\t{_num(s['p_value'])}"
             for s in summary["samples"]]
    common.print_tsv(rows)


def _num(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _gate_lines(r: ScoreResult, g: dict) -> list[str]:
    """The gate in words: how samples are flagged, then the batch decision (or the flagged count)."""
    if g["flags_by"] == "threshold":
        lines = [f"{r.group}: flagged where {r.gate.score} < {r.gate.threshold:.6g}, the threshold keeping "
                 f"{r.gate.tpr:.0%} of {r.gate.reference}"]
    else:
        lines = [f"{r.group}: {g['n_ood']} of {r.n} flagged by {g['flags_by']} (p-values against "
                 f"{r.gate.reference})"]
    if r.decision is not None:
        lines.append(f"{r.group}: {r.decision.sentence()}")
    elif g["flags_by"] == "threshold":
        lines.append(f"{r.group}: {g['n_ood']} of {r.n} flagged ({g['ood_fraction']:.1%}); no batch decision "
                     "without --max-ood-fraction")
    return lines


def _summary(r: ScoreResult, flags: bool) -> dict:
    bpd, ll = r.arrays.get("bits_per_dim"), r.arrays.get("log_likelihood")
    summary = {"file": str(r.out) if r.out is not None else None, "group": r.group, "n": r.n, "skipped": len(r.skipped),
               "mean_bits_per_dim": float(np.mean(bpd)) if bpd is not None else None,
               "mean_log_likelihood": float(np.mean(ll)) if ll is not None else None, "scores": r.score_names}
    if r.gate is not None:
        g, is_ood = r.gate, r.arrays["is_ood"]
        summary["gate"] = {"score": g.score, "threshold": g.threshold, "tpr": g.tpr, "tpr_achieved": g.tpr_achieved,
                           "threshold_from": g.origin, "reference": g.reference, "n_reference": g.n_reference,
                           "calibration_n": g.n_reference, "calibration_source": g.source,
                           "flags_by": r.attrs.get("flags_by", "threshold"),
                           "warning": r.decision.too_small() if r.decision is not None else None,
                           "n_ood": int(np.sum(is_ood)), "ood_fraction": float(is_ood.mean()) if is_ood.size else 0.0,
                           "skipped_files": [{"path": p, "reason": why} for p, why in r.skipped]}
        if r.decision is not None:
            summary["gate"].update(r.decision.to_dict(), decision=r.decision.sentence())
    if flags:
        score, p = r.arrays[r.gate.score], r.arrays["p_value"]
        summary["samples"] = [{"id": i, "is_ood": bool(f), "score": float(s), "p_value": float(v)}
                              for i, f, s, v in zip(r.ids, r.arrays["is_ood"], score, p)]
        summary["samples"] += [{"id": path, "is_ood": True, "score": None, "p_value": None, "skipped": why}
                               for path, why in r.skipped]
    return summary


def _print_scores(r: ScoreResult, json_out: bool, quiet: bool) -> None:
    """No --out and no gate: every sample's scores on stdout (tab-separated with a header, or JSON)."""
    names = list(r.arrays)
    columns = np.stack([np.asarray(r.arrays[k], dtype=np.float64) for k in names], axis=1)
    if json_out:
        common.print_json({"file": None, "group": r.group, "n": r.n, "skipped": len(r.skipped), "scores": names,
                           "samples": [{"id": i, **dict(zip(names, map(float, row)))}
                                       for i, row in zip(r.ids, columns)]})
        return
    lines = ["\t".join(["id", *names])]
    lines += ["\t".join([common.tsv_field(i), *(f"{v:.10g}" for v in row)]) for i, row in zip(r.ids, columns.tolist())]
    common.print_tsv(lines)
    common.message(f"{r.group}: {_samples(r.n)}{_mean_bpd(r.arrays)} (not saved: pass --out FILE.h5 to keep them)",
                   quiet)


def _samples(n: int) -> str:
    """``"1 sample"``, ``"3 samples"``: scoring one image is a common call."""
    return f"{n} sample" if n == 1 else f"{n} samples"


def _mean_bpd(arrays: dict) -> str:
    """``", mean 3.871 bits/dim"`` for the one-line summary, or nothing when bits/dim was not computed."""
    bpd = arrays.get("bits_per_dim")
    return f", mean {float(np.mean(bpd)):.3f} bits/dim" if bpd is not None else ""


def register(app: typer.Typer) -> None:
    common.command(app, score, epilog=METHOD_HELP)
