"""``oodflow evaluate``: detection metrics of an in-distribution group against OOD groups."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ood_flow import store
from ood_flow.cli import common, options
from ood_flow.errors import GateFailed
from ood_flow.evaluate import ood_metrics

KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def evaluate(
    scores: Path = typer.Argument(..., help="Score file written by `oodflow score`."),
    in_group: str = typer.Option(..., "--in", help="In-distribution group (the positive class)."),
    ood: List[str] = typer.Option(..., "--ood", help="OOD group (repeatable)."),
    score: str = typer.Option("log_likelihood", "--score", help="Per-sample score to evaluate (higher = more "
                              "in-distribution)."),
    tpr: float = typer.Option(0.95, "--tpr", min=0.0, max=1.0, help="TPR at which the threshold and FPR are reported."),
    min_auroc: Optional[float] = typer.Option(None, "--min-auroc", help="Exit 3 if any AUROC is below this."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the log-likelihood histogram (paper Fig. 1a) as PNG."),
    json_out: bool = options.Json,
    quiet: bool = options.Quiet,
) -> None:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR of IN against each OOD group.

    In-distribution is the positive class and the raw score is the decision value (higher = more
    in-distribution), so a flow that prefers the OOD data gets an AUROC below 0.5. The threshold is the
    largest score that keeps --tpr of IN; fpr95 is the share of an OOD group at or above it.
    """
    in_scores = store.read_scores(scores, in_group, score)
    results = {}
    for group in dict.fromkeys(ood):
        m = ood_metrics(in_scores, store.read_scores(scores, group, score), tpr=tpr, in_name=in_group, ood_name=group)
        results[group] = m
    if plot is not None:
        _plot(scores, [in_group, *results], score, plot, quiet)
    if json_out:
        common.print_json({"file": str(scores), "in": in_group, "score": score, "tpr": tpr, "ood": results})
    else:
        common.stdout().print(_table(in_group, score, results, tpr))
    _gate(results, min_auroc)


def _table(in_group: str, score: str, results: dict, tpr: float) -> Table:
    table = Table(title=f"in: {in_group} (positive class), score: {score}", title_justify="left")
    for col in ("ood group", "n", "AUROC", "AUPR-in", "AUPR-out", f"FPR@{tpr:.0%}TPR", "threshold"):
        table.add_column(col, justify="left" if col == "ood group" else "right")
    for group, m in results.items():
        table.add_row(group, str(m["n_ood"]), *(f"{m[k]:.3f}" for k in KEYS), f"{m['threshold']:.1f}")
    return table


def _plot(path: Path, groups: list[str], score: str, out: Path, quiet: bool) -> None:
    from ood_flow.visualize.cli_support import write_histogram

    write_histogram(path, groups, score, out, in_groups=groups[:1])
    common.message(f"histogram written to {out}", quiet)


def _gate(results: dict, min_auroc: Optional[float]) -> None:
    if min_auroc is None:
        return
    low = {g: m["auroc"] for g, m in results.items() if m["auroc"] < min_auroc}
    if low:
        worst = ", ".join(f"{g} {a:.3f}" for g, a in low.items())
        raise GateFailed(f"AUROC below --min-auroc {min_auroc}: {worst}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(common.handle_errors(evaluate))
