"""``oodflow evaluate``: detection metrics of an in-distribution group against OOD groups.

The work is :func:`ood_flow.evaluate_groups`; this module parses the options and prints the tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.measure import Measurement
from rich.table import Table

from ood_flow.cli import common, options
from ood_flow.names import METRICS as KEYS
from ood_flow.names import SCORES

if TYPE_CHECKING:
    from ood_flow.evaluate import Evaluation


GROUPS, METRICS, TYPICALITY, OUTPUT = "Groups", "Metrics", "Typicality test", "Output"


def evaluate(
    scores: Path = typer.Argument(..., help="Score file written by `oodflow score`."),
    in_group: str = options.in_group_option(GROUPS),
    ood: List[str] = options.ood_groups_option(GROUPS),
    score_names: List[str] = typer.Option(["log_likelihood"], "--score", metavar="NAME", rich_help_panel=METRICS,
                                          help="Per-sample score to evaluate, higher = more in-distribution "
                                          f"(repeatable): {', '.join(SCORES)}."),
    all_scores: bool = typer.Option(False, "--all-scores", rich_help_panel=METRICS, help="Evaluate every method score "
                                    "present in all the groups, in one table."),
    tpr: float = typer.Option(0.95, "--tpr", metavar="X", rich_help_panel=METRICS,
                              help="TPR at which the threshold and FPR are reported."),
    min_auroc: Optional[float] = typer.Option(None, "--min-auroc", metavar="X", rich_help_panel=METRICS,
                                              help="Exit 3 if any AUROC is below X (a number in [0, 1])."),
    ci: Optional[float] = typer.Option(None, "--ci", metavar="LEVEL", rich_help_panel=METRICS, help="Add percentile "
                                       "bootstrap intervals at this level (e.g. 0.95) to the table and the JSON; in- "
                                       "and OOD samples are resampled separately."),
    n_boot: int = typer.Option(1000, "--bootstrap", metavar="N", rich_help_panel=METRICS,
                               help="Bootstrap resamples of --ci."),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=METRICS,
                             help="Seed of the bootstrap resamples (--ci) and typicality batches."),
    typicality: bool = typer.Option(False, "--typicality", rich_help_panel=TYPICALITY, help="Also run the typicality "
                                    "test (Nalisnick et al. 2019) on batches of --batch-size samples of "
                                    "log_likelihood."),
    batch_size: int = typer.Option(10, "--batch-size", min=1, metavar="M", rich_help_panel=TYPICALITY,
                                   help="Samples per batch of the typicality test."),
    n_batches: int = typer.Option(1000, "--n-batches", min=1, metavar="N", rich_help_panel=TYPICALITY,
                                  help="Random batches per group."),
    reference_group: Optional[str] = typer.Option(None, "--reference-group", metavar="GROUP",
                                                  rich_help_panel=TYPICALITY, help="In-distribution group, distinct "
                                                  "from --in (e.g. a train split), for the entropy estimate (default: "
                                                  "--in itself, which flatters the result)."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE", rich_help_panel=OUTPUT,
                                        help="Write the log-likelihood histogram (paper Fig. 1a) as PNG."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT,
                                   help="--plot may replace an existing PNG (never any other file)."),
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
    from ood_flow.evaluate import Bootstrap, Typicality, evaluate_groups

    test = Typicality(batch_size, n_batches, reference_group, seed) if typicality else None
    boot = Bootstrap(ci, n_boot, seed) if ci is not None else None
    common.run(lambda: evaluate_groups(scores, in_group, ood, scores=score_names, all_scores=all_scores, tpr=tpr,
                                       typicality=test, plot=plot, min_auroc=min_auroc, bootstrap=boot,
                                       overwrite=overwrite),
               lambda result: _show(result, json_out, quiet))


def _show(result: Evaluation, json_out: bool, quiet: bool) -> None:
    if result.plot is not None:
        common.message(f"histogram written to {result.plot}", quiet)
    if result.typicality is not None and result.typicality["note"]:
        common.message(f"note: {result.typicality['note']}", quiet)
    if json_out:
        common.print_json(result.to_dict())
        return
    console = common.stdout()
    tables = _tables(result.in_group, result.by_score, result.tpr)
    tables += [_typicality_table(result.typicality, result.tpr)] if result.typicality is not None else []
    for table in tables:
        console.print(_fit(table, console), soft_wrap=False)  # titles and captions wrap to the width too


def _fit(table: Table, console) -> Table:
    """``table`` without its outer border where, with it, even its narrowest layout (every cell wrapped at its
    longest word) is wider than the console: the border's 4 characters go before any word, such as a group's
    name, has to fold. A table that fits keeps it."""
    if Measurement.get(console, console.options.update_width(10**6), table).minimum > console.width:
        table.show_edge = table.pad_edge = False
    return table


def _tables(in_group: str, by_score: dict, tpr: float) -> list[Table]:
    """One table per score, its threshold in the title (it depends on the in-distribution group only); cells
    wrap, never cut, to fit the console's width (:func:`_fit`)."""
    tables = []
    ci = next(iter(next(iter(by_score.values())).values())).get("ci")
    for score, results in by_score.items():
        threshold = next(iter(results.values()))["threshold"]
        heads = ("AUROC", "AUPR-in", "AUPR-out", f"FPR@{tpr:.0%}TPR")
        table = Table(title=f"{score}: in = {in_group} (positive class; higher = more in-distribution); threshold "
                      f"{threshold:.1f} keeps {tpr:.0%} of it", title_justify="left")
        table.add_column("ood group", overflow="fold")
        table.add_column("n", justify="right", overflow="fold")
        for col in heads:  # room for an interval: 0.051-0.063
            table.add_column(col, justify="right", overflow="fold", min_width=11 if ci else None)
        for group, m in results.items():
            table.add_row(group, str(m["n_ood"]), *(_cell(m, k) for k in KEYS))
        tables.append(table)
    if ci:
        tables[-1].caption = (f"lo-hi: {ci['level']:.0%} percentile bootstrap interval, {ci['n_bootstrap']} "
                              f"resamples (in and OOD resampled separately), seed {ci['seed']}")
        tables[-1].caption_justify = "left"
    return tables


def _cell(m: dict, key: str) -> str:
    """``0.057``, or with its interval below it, ``0.057`` / ``0.051-0.063``."""
    text = f"{m[key]:.3f}"
    if "ci" in m:
        lo, hi = m["ci"][key]
        text += f"\n{lo:.3f}-{hi:.3f}"
    return text


def _typicality_table(report: dict, tpr: float) -> Table:
    caveat = " (from --in itself: flatters the result)" if report["note"] else ""
    table = Table(title=f"typicality test (Nalisnick et al. 2019): batches of {report['batch_size']}, "
                  f"H = {report['entropy']:.1f} nats from {report['reference']}{caveat}", title_justify="left")
    for col in ("ood group", "batches", "AUROC", "AUPR-in", "AUPR-out", f"FPR@{tpr:.0%}TPR", "|NLL - H| threshold"):
        table.add_column(col, justify="left" if col == "ood group" else "right", overflow="fold")
    for group, m in report["ood"].items():
        table.add_row(group, str(m["n_ood"]), *(f"{m[k]:.3f}" for k in KEYS), f"{m['statistic_threshold']:.1f}")
    return table


def register(app: typer.Typer) -> None:
    common.command(app, evaluate)
