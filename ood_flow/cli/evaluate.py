"""``oodflow evaluate``: detection metrics of an in-distribution group against OOD groups."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ood_flow import store
from ood_flow.cli import common, options
from ood_flow.errors import GateFailed, ScoreFileError
from ood_flow.evaluate import ood_metrics, typicality_auroc
from ood_flow.score.methods import SCORES

KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")
SELF_REFERENCE = ("the entropy is estimated on the in-distribution group itself, which flatters the result; "
                  "pass --reference-group (e.g. scores of a train split)")


def evaluate(
    scores: Path = typer.Argument(..., help="Score file written by `oodflow score`."),
    in_group: str = typer.Option(..., "--in", help="In-distribution group (the positive class)."),
    ood: List[str] = typer.Option(..., "--ood", help="OOD group (repeatable)."),
    score_names: List[str] = typer.Option(["log_likelihood"], "--score", help="Per-sample score to evaluate, higher = "
                                          f"more in-distribution (repeatable): {', '.join(SCORES)}."),
    all_scores: bool = typer.Option(False, "--all-scores", help="Evaluate every method score present in all the "
                                    "groups, in one table."),
    tpr: float = typer.Option(0.95, "--tpr", min=0.0, max=1.0, help="TPR at which the threshold and FPR are reported."),
    min_auroc: Optional[float] = typer.Option(None, "--min-auroc", help="Exit 3 if any AUROC is below this."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the log-likelihood histogram (paper Fig. 1a) as PNG."),
    typicality: bool = typer.Option(False, "--typicality", help="Also run the typicality test (Nalisnick et al. 2019) "
                                    "on batches of --batch-size samples of log_likelihood."),
    batch_size: int = typer.Option(10, "--batch-size", min=1, help="M, samples per batch of the typicality test."),
    n_batches: int = typer.Option(1000, "--n-batches", min=1, help="Random batches per group (typicality)."),
    reference_group: Optional[str] = typer.Option(None, "--reference-group", help="In-distribution group, distinct "
                                                  "from --in (e.g. a train split), for the entropy estimate "
                                                  "(typicality; default: --in itself, which flatters the result)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the typicality batches."),
    json_out: bool = options.Json,
    quiet: bool = options.Quiet,
) -> None:
    """AUROC, AUPR-in, AUPR-out and FPR at --tpr TPR of IN against each OOD group, for each --score.

    In-distribution is the positive class and the raw score is the decision value (higher = more
    in-distribution), so a flow that prefers the OOD data gets an AUROC below 0.5. The threshold is the
    largest score that keeps --tpr of IN; the FPR is the share of an OOD group at or above it.

    --typicality tests batches instead of points: a batch of M samples is OOD when its mean negative
    log-likelihood is far from the entropy H of the model, estimated on --reference-group.
    """
    names = _chosen_scores(scores, [in_group, *ood], score_names, all_scores)
    by_score = {name: _metrics(scores, in_group, ood, name, tpr) for name in names}
    score, results = names[0], by_score[names[0]]
    if plot is not None:
        _plot(scores, [in_group, *results], score, plot, quiet)
    report = {"file": str(scores), "in": in_group, "score": score, "tpr": tpr, "ood": results, "by_score": by_score}
    if typicality:
        report["typicality"] = _typicality(scores, in_group, ood, reference_group, batch_size, n_batches, seed, tpr)
        if report["typicality"]["note"]:
            common.message(f"note: {report['typicality']['note']}", quiet)
    if json_out:
        common.print_json(report)
    else:
        common.stdout().print(_table(in_group, by_score, tpr))
        if typicality:
            common.stdout().print(_typicality_table(report["typicality"], tpr))
    _gate(by_score, min_auroc)


def _chosen_scores(path: Path, groups: list[str], given: list[str], all_scores: bool) -> list[str]:
    """The scores to evaluate: those given, then (--all-scores) every method score that all groups hold."""
    names = list(dict.fromkeys(given))
    if all_scores:
        held = [set(store.read_group(path, g)[0]) for g in dict.fromkeys(groups)]
        names += [s for s in SCORES if all(s in h for h in held) and s not in names]
    return names


def _metrics(path: Path, in_group: str, ood: list[str], score: str, tpr: float) -> dict:
    in_scores = store.read_scores(path, in_group, score)
    return {g: ood_metrics(in_scores, store.read_scores(path, g, score), tpr=tpr, in_name=in_group, ood_name=g)
            for g in dict.fromkeys(ood)}


def _table(in_group: str, by_score: dict, tpr: float) -> Table:
    table = Table(title=f"in: {in_group} (positive class); every score: higher = more in-distribution",
                  title_justify="left")
    for col in ("score", "ood group", "n", "AUROC", "AUPR-in", "AUPR-out", f"FPR@{tpr:.0%}TPR", "threshold"):
        table.add_column(col, justify="left" if col in ("score", "ood group") else "right")
    for score, results in by_score.items():
        for group, m in results.items():
            table.add_row(score, group, str(m["n_ood"]), *(f"{m[k]:.3f}" for k in KEYS), f"{m['threshold']:.1f}")
    return table


def _typicality(path: Path, in_group: str, ood: list[str], reference_group: Optional[str], batch_size: int,
                n_batches: int, seed: int, tpr: float) -> dict:
    """Batch-level metrics of the typicality test for each OOD group (log_likelihood of each group)."""
    reference = reference_group or in_group
    if reference in ood:
        raise ScoreFileError(f"{path}: --reference-group '{reference}' is also an --ood group")
    ref_ll, in_ll = (store.read_scores(path, g, "log_likelihood") for g in (reference, in_group))
    results = {g: typicality_auroc(ref_ll, in_ll, store.read_scores(path, g, "log_likelihood"), batch_size,
                                   n_batches=n_batches, seed=seed, tpr=tpr, in_name=in_group, ood_name=g)
               for g in dict.fromkeys(ood)}
    entropy = next(iter(results.values()))["entropy"]
    return {"score": "log_likelihood", "batch_size": batch_size, "n_batches": n_batches, "reference": reference,
            "entropy": entropy, "note": SELF_REFERENCE if reference == in_group else None, "ood": results}


def _typicality_table(report: dict, tpr: float) -> Table:
    caveat = " (from --in itself: flatters the result)" if report["note"] else ""
    table = Table(title=f"typicality test (Nalisnick et al. 2019): batches of {report['batch_size']}, "
                  f"H = {report['entropy']:.1f} nats from {report['reference']}{caveat}", title_justify="left")
    for col in ("ood group", "batches", "AUROC", "AUPR-in", "AUPR-out", f"FPR@{tpr:.0%}TPR", "|NLL - H| threshold"):
        table.add_column(col, justify="left" if col == "ood group" else "right")
    for group, m in report["ood"].items():
        table.add_row(group, str(m["n_ood"]), *(f"{m[k]:.3f}" for k in KEYS), f"{m['statistic_threshold']:.1f}")
    return table


def _plot(path: Path, groups: list[str], score: str, out: Path, quiet: bool) -> None:
    from ood_flow.visualize.cli_support import write_histogram

    write_histogram(path, groups, score, out, in_groups=groups[:1])
    common.message(f"histogram written to {out}", quiet)


def _gate(by_score: dict, min_auroc: Optional[float]) -> None:
    if min_auroc is None:
        return
    low = {(s, g): m["auroc"] for s, results in by_score.items() for g, m in results.items() if m["auroc"] < min_auroc}
    if low:
        worst = ", ".join(f"{g} {a:.3f}" if len(by_score) == 1 else f"{g} ({s}) {a:.3f}" for (s, g), a in low.items())
        raise GateFailed(f"AUROC below --min-auroc {min_auroc}: {worst}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(common.handle_errors(evaluate))
