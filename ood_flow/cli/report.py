"""``oodflow report``: one self-contained HTML page with the metrics, figures, thumbnails and provenance."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ood_flow.cli import common, options
from ood_flow.names import SCORES


GROUPS, METRICS, PAGE = "Groups and scores", "Metrics", "Page"


def report(
    scores: Path = typer.Argument(..., help="Score file written by `oodflow score`."),
    in_group: str = options.in_group_option(GROUPS),
    ood: List[str] = options.ood_groups_option(GROUPS),
    score_names: List[str] = typer.Option(["log_likelihood"], "--score", metavar="NAME", rich_help_panel=GROUPS,
                                          help="Per-sample score, higher = more in-distribution (repeatable): "
                                          f"{', '.join(SCORES)}."),
    all_scores: bool = typer.Option(False, "--all-scores", rich_help_panel=GROUPS,
                                    help="Every method score present in all the groups."),
    tpr: float = typer.Option(0.95, "--tpr", metavar="X", rich_help_panel=METRICS,
                              help="TPR at which the threshold and FPR are reported."),
    ci: float = typer.Option(0.95, "--ci", metavar="LEVEL", rich_help_panel=METRICS,
                             help="Level of the percentile bootstrap intervals (0 for none)."),
    n_boot: int = typer.Option(1000, "--bootstrap", min=1, metavar="N", rich_help_panel=METRICS,
                               help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=METRICS,
                             help="Seed of the bootstrap resamples (the same as evaluate --seed)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", rich_help_panel=PAGE, help="The page to write "
                                       "(.html). Default: SCORES-report.html beside the score file."),
    title: Optional[str] = typer.Option(None, "--title", metavar="TEXT", rich_help_panel=PAGE,
                                        help="Page title (default: what is compared)."),
    thumbnails: int = typer.Option(8, "--thumbnails", min=0, metavar="N", rich_help_panel=PAGE,
                                   help="Samples per thumbnail strip (0: none)."),
    data_dir: Optional[str] = options.in_panel(options.DataDir, PAGE),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=PAGE, help="Replace an existing page."),
    json_out: bool = options.Json,
    quiet: bool = options.Quiet,
) -> None:
    """Write one self-contained HTML page for IN against each OOD group (no network, fonts or scripts needed).

    The page holds the metrics of `oodflow evaluate` with bootstrap intervals, per score the histograms (with
    the threshold), ROC and PR curves, thumbnails of the in-distribution samples ranked most OOD and the OOD
    samples ranked most in-distribution, the gate, and provenance; images are inline. The numbers equal
    `oodflow evaluate --json --ci LEVEL --bootstrap N --seed S` on the same file.
    """
    from ood_flow.evaluate.run import Bootstrap
    from ood_flow.report import write_report

    out = out or scores.with_name(f"{scores.stem}-report.html")
    if not 0.0 <= ci < 1.0:
        common.fail(f"--ci {ci}: give a level between 0 and 1 (e.g. 0.95), or 0 for none", 2)
    boot = Bootstrap(ci, n_boot, seed) if ci > 0 else None
    command = _command_line()
    result = write_report(scores, in_group, ood, out, scores=score_names, all_scores=all_scores, tpr=tpr,
                          bootstrap=boot, thumbnails=thumbnails, data_dir=data_dir, command=command, title=title,
                          overwrite=overwrite)
    for warning in result.warnings:
        common.message(f"warning: {warning}", quiet)
    for line in result.missing_images:
        common.message(f"note: {line}", quiet)
    if json_out:
        common.print_json(result.to_dict())
    else:
        common.message(f"report written to {result.out} ({result.bytes / 1e3:.0f} kB, {result.thumbnails} "
                       "thumbnails)", quiet)


def _command_line() -> Optional[str]:
    """The command as typed, when this process is the ``oodflow`` program (not, say, a test runner)."""
    program = Path(sys.argv[0]).name
    if program not in ("oodflow", "__main__.py"):
        return None
    return shlex.join(["oodflow" if program == "oodflow" else "python -m ood_flow", *sys.argv[1:]])


def register(app: typer.Typer) -> None:
    common.command(app, report)
