"""Evaluating a score file: :func:`evaluate_groups`, the work behind ``oodflow evaluate``.

It reads the in-distribution group and each OOD group of a score file, computes the detection
metrics for each chosen score (with percentile bootstrap intervals and the batch typicality test if
asked), writes the histogram if asked, and checks the ``min_auroc`` gate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ood_flow import store
from ood_flow.errors import GateFailed, InputError, ScoreFileError, UsageError
from ood_flow.evaluate.bootstrap import bootstrap_intervals
from ood_flow.evaluate.metrics import ood_metrics
from ood_flow.evaluate.typicality import typicality_auroc
from ood_flow.score.methods import SCORES
from ood_flow.validation import check_number, check_seed

SELF_REFERENCE = ("the entropy is estimated on the in-distribution group itself, which flatters the result; "
                  "pass --reference-group (e.g. scores of a train split)")


@dataclass(frozen=True)
class Typicality:
    """Settings of the typicality test (Nalisnick et al. 2019) on ``log_likelihood``.

    Attributes:
        batch_size: M, samples per batch.
        n_batches: random batches per group.
        reference_group: in-distribution group for the entropy estimate (default: the ``in`` group
            itself, which flatters the result).
        seed: seed of the batches.
    """

    batch_size: int = 10
    n_batches: int = 1000
    reference_group: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class Bootstrap:
    """Settings of the percentile bootstrap intervals (in- and OOD samples resampled separately).

    Attributes:
        level: the intervals' coverage, in (0, 1), e.g. 0.95.
        n_boot: resamples.
        seed: the same seed gives the same intervals.
    """

    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.level < 1.0:
            raise UsageError(f"--ci {self.level}: the confidence level must lie between 0 and 1, e.g. 0.95")
        if self.n_boot < 1:
            raise UsageError(f"--bootstrap {self.n_boot}: at least 1 resample")


@dataclass
class Evaluation:
    """Metrics of one in-distribution group against OOD groups.

    Attributes:
        by_score: ``{score: {ood group: metrics}}``, metrics as :func:`~ood_flow.evaluate.ood_metrics` returns,
            with ``ci`` (:func:`~ood_flow.evaluate.bootstrap_intervals`) when asked for.
        typicality: the typicality test's report (``entropy``, ``reference``, ``note``, ``ood``), if run.
        plot: the histogram written, if any.
    """

    file: Path
    in_group: str
    tpr: float
    by_score: dict[str, dict[str, dict]]
    typicality: dict | None = None
    plot: Path | None = None
    scores: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The machine-readable report (``oodflow evaluate --json``)."""
        score = self.scores[0]
        report = {"file": str(self.file), "in": self.in_group, "score": score, "tpr": self.tpr,
                  "ood": self.by_score[score], "by_score": self.by_score}
        if self.typicality is not None:
            report["typicality"] = self.typicality
        return report


def evaluate_groups(path: str | os.PathLike, in_group: str, ood_groups: Sequence[str], *,
                    scores: Sequence[str] = ("log_likelihood",), all_scores: bool = False, tpr: float = 0.95,
                    typicality: Typicality | None = None, plot: str | os.PathLike | None = None,
                    min_auroc: float | None = None, bootstrap: Bootstrap | None = None,
                    overwrite: bool = False) -> Evaluation:
    """AUROC, AUPR-in, AUPR-out and FPR at ``tpr`` of ``in_group`` against each OOD group of a score file.

    Args:
        path: the score file.
        in_group: the in-distribution group (the positive class).
        ood_groups: the OOD groups.
        scores: per-sample scores to evaluate (higher = more in-distribution).
        all_scores: add every method score that all the groups hold.
        typicality: also run the batch typicality test.
        plot: write the first score's histogram (PNG) here.
        min_auroc: raise :class:`~ood_flow.errors.GateFailed` (``.result`` holds the evaluation) if any
            AUROC is below it; a number in [0, 1] (NaN would switch the gate off, so it is refused).
        bootstrap: add percentile bootstrap intervals (``ci``) to every metrics dict.
        overwrite: ``plot`` may replace an existing PNG (never any other file).

    Raises:
        UsageError: ``tpr``, ``min_auroc`` or a typicality setting out of range or not finite, ``in_group``
            among the OOD groups, or ``plot`` not a .png; before any work.
        ScoreFileError: the file or a group is missing, not ours, or holds NaN scores.

    Example (docs/api.md runs it)::

        evaluate_groups("scores.h5", "fashionmnist-test", ["mnist-test"]).by_score
        # {'log_likelihood': {'mnist-test': {'auroc': 0.057, ...}}}
    """
    path = Path(path)
    _check_settings(tpr, min_auroc, typicality)
    if in_group in ood_groups:
        raise UsageError(f"--ood {in_group} is the --in group: a group against itself scores AUROC 0.5 by "
                         "construction; name another group")
    if plot is not None:
        from ood_flow.visualize.panels import check_figure_output  # matplotlib only when a plot is asked for

        check_figure_output(plot, overwrite)
    names = _chosen_scores(path, [in_group, *ood_groups], scores, all_scores)
    by_score = {name: _metrics(path, in_group, ood_groups, name, tpr, bootstrap) for name in names}
    result = Evaluation(path, in_group, tpr, by_score, scores=names)
    if plot is not None:
        from ood_flow.visualize.histogram import write_histogram

        write_histogram(path, [in_group, *by_score[names[0]]], names[0], plot, in_groups=[in_group],
                        overwrite=overwrite)
        result.plot = Path(plot)
    if typicality is not None:
        result.typicality = _typicality(path, in_group, ood_groups, typicality, tpr)
    _gate(result, min_auroc)
    return result


def _check_settings(tpr: float, min_auroc: float | None, typicality: Typicality | None) -> None:
    check_number("--tpr", tpr, low=0, high=1, low_open=True)
    check_number("--min-auroc", min_auroc, low=0, high=1)
    if typicality is not None:
        check_number("--batch-size", typicality.batch_size, low=1, integer=True)
        check_number("--n-batches", typicality.n_batches, low=1, integer=True)
        check_seed("--seed", typicality.seed)


def _chosen_scores(path: Path, groups: list[str], given: Sequence[str], all_scores: bool) -> list[str]:
    """The scores to evaluate: those given, then (``all_scores``) every method score that all groups hold."""
    names = list(dict.fromkeys(given))
    if all_scores:
        held = [set(store.read_group(path, g)[0]) for g in dict.fromkeys(groups)]
        names += [s for s in SCORES if all(s in h for h in held) and s not in names]
    return names


def _metrics(path: Path, in_group: str, ood: Sequence[str], score: str, tpr: float,
             bootstrap: Bootstrap | None) -> dict:
    in_scores = store.read_scores(path, in_group, score)
    results = {}
    try:
        for g in dict.fromkeys(ood):
            ood_scores = store.read_scores(path, g, score)
            results[g] = ood_metrics(in_scores, ood_scores, tpr=tpr, in_name=in_group, ood_name=g)
            if bootstrap is not None:
                results[g]["ci"] = bootstrap_intervals(in_scores, ood_scores, level=bootstrap.level,
                                                       n_boot=bootstrap.n_boot, seed=bootstrap.seed, tpr=tpr,
                                                       in_name=in_group, ood_name=g)
    except (ValueError, InputError) as exc:  # NaN or empty scores: name the file they came from
        raise ScoreFileError(f"{path}: {score} of group {exc}") from None
    return results


def _typicality(path: Path, in_group: str, ood: Sequence[str], settings: Typicality, tpr: float) -> dict:
    """Batch-level metrics of the typicality test for each OOD group (log_likelihood of each group)."""
    reference = settings.reference_group or in_group
    if reference in ood:
        raise ScoreFileError(f"{path}: --reference-group '{reference}' is also an --ood group")
    ref_ll, in_ll = (store.read_scores(path, g, "log_likelihood") for g in (reference, in_group))
    results = {g: typicality_auroc(ref_ll, in_ll, store.read_scores(path, g, "log_likelihood"), settings.batch_size,
                                   n_batches=settings.n_batches, seed=settings.seed, tpr=tpr, in_name=in_group,
                                   ood_name=g)
               for g in dict.fromkeys(ood)}
    entropy = next(iter(results.values()))["entropy"]
    return {"score": "log_likelihood", "batch_size": settings.batch_size, "n_batches": settings.n_batches,
            "reference": reference, "entropy": entropy, "note": SELF_REFERENCE if reference == in_group else None,
            "ood": results}


def _gate(result: Evaluation, min_auroc: float | None) -> None:
    if min_auroc is None:
        return
    by_score = result.by_score
    low = {(s, g): m["auroc"] for s, results in by_score.items() for g, m in results.items() if m["auroc"] < min_auroc}
    if low:
        worst = ", ".join(f"{g} {a:.3f}" if len(by_score) == 1 else f"{g} ({s}) {a:.3f}" for (s, g), a in low.items())
        raise GateFailed(f"AUROC below --min-auroc {min_auroc}: {worst}", result=result)
