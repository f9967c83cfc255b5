"""``write_report``: one self-contained HTML page for an evaluation of a score file.

The page holds the metrics of :func:`evaluate_groups` (the same numbers ``oodflow evaluate --json``
prints, bootstrap intervals included), per score the overlaid histograms with the threshold and the
ROC and PR curves, thumbnails of the samples the first score ranks worst (in-distribution) and best
(OOD), the gates recorded in the file, and provenance. Nothing on it is fetched: styles are inline,
figures are inline SVG, thumbnails are PNG data URIs, and there is no script.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ood_flow import fileio, store
from ood_flow.errors import UsageError
from ood_flow.evaluate.run import Bootstrap, evaluate_groups
from ood_flow.fileio import sha256_file
from ood_flow.report import figures
from ood_flow.report.html import render
from ood_flow.report.provenance import ModelInfo, gate_of, mixed_models_warning, models_of, versions
from ood_flow.report.thumbnails import Strip, make_strip

HTML_SUFFIXES = (".html", ".htm")
DEFAULT_BOOTSTRAP = Bootstrap()  # 95 %, 1000 resamples, seed 0: what `evaluate --ci 0.95` uses


@dataclass
class ReportData:
    """Everything the page shows (see :func:`~ood_flow.report.html.render`)."""

    title: str
    file: Path
    file_sha256: str
    created: str
    command: str | None
    versions: dict[str, str]
    evaluation: dict
    attrs: dict[str, dict]
    sizes: dict[str, int]
    models: list[ModelInfo]
    warnings: list[str]
    figures: dict[str, dict[str, str]]
    strips: list[Strip] = field(default_factory=list)
    gates: list[dict] = field(default_factory=list)


@dataclass
class ReportResult:
    """What :func:`write_report` wrote: the page, its evaluation (as ``evaluate --json``) and its warnings."""

    out: Path
    evaluation: dict
    warnings: list[str]
    thumbnails: int
    missing_images: list[str]
    gates: list[dict]
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "bytes": self.bytes, "warnings": self.warnings, "thumbnails": self.thumbnails,
                "missing_images": self.missing_images, "gates": self.gates, "evaluation": self.evaluation}


def write_report(path: str | os.PathLike, in_group: str, ood_groups: Sequence[str], out: str | os.PathLike, *,
                 scores: Sequence[str] = ("log_likelihood",), all_scores: bool = False, tpr: float = 0.95,
                 bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP, thumbnails: int = 8, data_dir=None,
                 command: str | None = None, title: str | None = None, overwrite: bool = False) -> ReportResult:
    """Write the HTML report of ``in_group`` against ``ood_groups`` of the score file ``path`` to ``out``.

    Args:
        path: the score file.
        in_group, ood_groups, scores, all_scores, tpr, bootstrap: as :func:`evaluate_groups`.
        out: the page to write (``.html``); an existing file is replaced only with ``overwrite``.
        thumbnails: how many samples each thumbnail strip shows (0: none).
        data_dir: the data root where named datasets are looked up for thumbnails.
        command: the command line that made the report, shown in its header.
        title: the page title (default: what is compared).

    Raises:
        UsageError: ``out`` is not an ``.html`` file name.
        ScoreFileError: a missing group or score.
        OutputError: ``out`` exists (without ``overwrite``, or is not an HTML page), is a folder, or cannot
            be written.
    """
    out = check_output(out, overwrite)
    evaluation = evaluate_groups(path, in_group, ood_groups, scores=scores, all_scores=all_scores, tpr=tpr,
                                 bootstrap=bootstrap)
    data = collect(Path(path), evaluation.to_dict(), thumbnails, data_dir, command, title)
    page = render(data)
    with fileio.atomic_write(out, overwrite=overwrite, kind=HTML) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return ReportResult(out=out, evaluation=data.evaluation, warnings=data.warnings,
                        thumbnails=sum(len(s.thumbs) for s in data.strips),
                        missing_images=[s.missing for s in data.strips if s.missing], gates=data.gates,
                        bytes=len(page.encode("utf-8")))


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` as a Path after the checks made before any work: an HTML name that may be written (see
    :func:`ood_flow.fileio.check_output`; an existing file is replaced only with ``overwrite`` and only
    when it is an HTML page)."""
    out = Path(out)
    if out.suffix.lower() not in HTML_SUFFIXES:
        raise UsageError(f"{out}: the report is an HTML page; give an output name ending in .html")
    return fileio.check_output(out, overwrite=overwrite, kind=HTML)


def _is_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


HTML = fileio.Kind("an HTML page", _is_html)


def collect(path: Path, evaluation: dict, thumbnails: int, data_dir, command: str | None,
            title: str | None) -> ReportData:
    """Read the groups again and build the figures, thumbnails, gates and provenance of the page."""
    in_group, ood = evaluation["in"], list(evaluation["ood"])
    groups = {g: store.read_group(path, g) for g in [in_group, *ood]}
    attrs = {g: a for g, (_, a) in groups.items()}
    models = models_of(attrs)
    warning = mixed_models_warning(models)
    data = ReportData(
        title=title or f"{in_group} against {', '.join(ood)}", file=path, file_sha256=sha256_file(path),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), command=command,
        versions=versions(), evaluation=evaluation, attrs=attrs,
        sizes={g: len(next(iter(a.values()))) for g, (a, _) in groups.items()}, models=models,
        warnings=[warning] if warning else [], figures={})
    for score, results in evaluation["by_score"].items():
        data.figures[score] = _figures(groups, in_group, score, results, evaluation["tpr"])
    if thumbnails > 0:
        data.strips = _strips(groups, in_group, evaluation["score"], thumbnails, data_dir)
    data.gates = _gates(path, groups)
    return data


def _gates(path: Path, groups: dict) -> list[dict]:
    """The gate of every group of the file that has one (``is_ood``), the report's groups first."""
    others = [g for g in store.list_groups(path) if g not in groups]
    found = [gate_of(g, *groups[g]) for g in groups] + [gate_of(g, *store.read_group(path, g)) for g in others]
    return [g for g in found if g is not None]


def _figures(groups: dict, in_group: str, score: str, results: dict, tpr: float) -> dict[str, str]:
    values = {g: np.asarray(groups[g][0][score], dtype=np.float64) for g in [in_group, *results]}
    s_in, ood = values.pop(in_group), values
    threshold = next(iter(results.values()))["threshold"]
    return {
        "histogram": figures.histogram_svg(in_group, s_in, ood, score, threshold, tpr),
        "roc": figures.roc_svg(s_in, ood, {g: m["auroc"] for g, m in results.items()}),
        "pr": figures.pr_svg(s_in, ood, {g: m["aupr_in"] for g, m in results.items()}),
    }


def _strips(groups: dict, in_group: str, score: str, k: int, data_dir) -> list[Strip]:
    arrays, attrs = groups[in_group]
    strips = [make_strip(in_group, f"lowest {score} in {in_group}: the in-distribution samples that look most OOD",
                         arrays, attrs, score, k, lowest=True, data_dir=data_dir)]
    for g, (arrays, attrs) in groups.items():
        if g != in_group:
            strips.append(make_strip(g, f"highest {score} in {g}: the OOD samples that look most in-distribution",
                                     arrays, attrs, score, k, lowest=False, data_dir=data_dir))
    return strips
