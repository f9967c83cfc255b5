"""Thresholds chosen on in-distribution data, per-sample OOD flags and the OOD-fraction gate.

The threshold is :func:`~ood_flow.score.threshold.threshold_at_tpr` of a *reference* group (in-
distribution data the model did not train on, e.g. a validation split): the largest score that keeps
``tpr`` of the reference. A sample is OOD when its score is below the threshold, or is NaN (a score
that cannot be ordered never passes a gate)::

    is_ood = not (score >= threshold)

so on the reference itself the share of flagged samples is at most ``1 - tpr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ood_flow import store
from ood_flow.errors import ScoreFileError, UsageError
from ood_flow.fileio import sha256_file
from ood_flow.score.threshold import rank_at_tpr, threshold_at_tpr
from ood_flow.validation import check_number

#: Fewest reference samples below a threshold for its TPR to be trusted without a warning (Gate.caveat).
MIN_BELOW = 5


@dataclass(frozen=True)
class GateSpec:
    """A gate to apply while scoring (``oodflow score --reference``).

    Attributes:
        reference: ``FILE:GROUP`` of in-distribution scores of the same model (e.g. a validation split);
            None: the validation scores the model file carries (written by ``train``).
        tpr: share of the reference that the threshold keeps.
        score: the score the threshold applies to (default: the first method's score).
        max_ood_fraction: raise :class:`~ood_flow.errors.GateFailed` (after saving) when more than
            this share of the source is OOD; None only flags the samples.
    """

    reference: str | None = None
    tpr: float = 0.95
    score: str | None = None
    max_ood_fraction: float | None = None

    def __post_init__(self) -> None:
        # a NaN bound would switch the gate off: every comparison with it is false
        check_number("--tpr", self.tpr, low=0, high=1, low_open=True)
        check_number("--max-ood-fraction", self.max_ood_fraction, low=0, high=1)


@dataclass(frozen=True)
class Gate:
    """A threshold on one score, and where it came from.

    Attributes:
        score: the per-sample score it applies to (a dataset name, e.g. ``log_likelihood``).
        threshold: samples with ``score >= threshold`` are in-distribution.
        tpr: the requested share of the reference kept.
        reference: ``FILE:GROUP`` of the reference scores.
        n_reference: reference sample count.
        tpr_achieved: the share of the reference actually kept (``>= tpr``; more with ties).
        origin: ``"reference"`` (scores given with ``--reference``) or ``"model"`` (the validation
            scores the model file carries).
    """

    score: str
    threshold: float
    tpr: float
    reference: str
    n_reference: int
    tpr_achieved: float
    origin: str = "reference"

    def caveat(self) -> str | None:
        """A warning when the threshold rests on too few reference samples to trust its TPR (fewer than
        :data:`MIN_BELOW` of them below it: the threshold is then one of the reference's few lowest scores,
        and the share of new in-distribution data it keeps can be far from ``tpr``); else None. A TPR of 1
        (keep every reference sample) is the user's explicit choice of the minimum and gets no warning.

        Example:
            >>> fit_gate([1.0, 2.0, 3.0, 4.0], 0.75, score="log_likelihood", reference="r.h5:val").caveat()[:54]
            'warning: the threshold comes from r.h5:val (4 samples)'
        """
        below = self.n_reference - rank_at_tpr(self.n_reference, self.tpr)
        if self.tpr >= 1.0 or below >= MIN_BELOW:
            return None
        need = math.ceil(MIN_BELOW / (1.0 - self.tpr) - 1e-9)
        where = self.reference if self.origin == "model" else f"{self.reference} ({self.n_reference} samples)"
        return (f"warning: the threshold comes from {where}, only {below} of them below it: the share of new "
                f"in-distribution data it keeps may be far from {self.tpr:.0%}; give --reference with at least "
                f"{need} in-distribution scores of this model")

    def flags(self, scores) -> np.ndarray:
        """``is_ood`` per sample: True where the score is below the threshold or NaN."""
        return ~(np.asarray(scores, dtype=np.float64) >= self.threshold)

    def attrs(self, is_ood: np.ndarray) -> dict:
        """Score-group attributes that record the threshold and its outcome."""
        return {"threshold": self.threshold, "threshold_tpr": self.tpr, "threshold_tpr_achieved": self.tpr_achieved,
                "threshold_reference": self.reference, "threshold_score": self.score, "threshold_from": self.origin,
                "ood_fraction": ood_fraction(is_ood), "n_ood": int(np.sum(is_ood))}


def fit_gate(reference_scores, tpr: float, *, score: str, reference: str, origin: str = "reference") -> Gate:
    """The gate that keeps ``tpr`` of ``reference_scores`` (in-distribution, higher = more in-distribution).

    Example:
        >>> g = fit_gate([1.0, 2.0, 3.0, 4.0], 0.75, score="log_likelihood", reference="ref.h5:val")
        >>> g.threshold, g.flags([1.5, 2.0, float("nan")]).tolist()
        (2.0, [True, False, True])
    """
    ref = np.asarray(reference_scores, dtype=np.float64)
    threshold = threshold_at_tpr(ref, tpr, name=reference)
    return Gate(score=score, threshold=threshold, tpr=float(tpr), reference=reference, n_reference=len(ref),
                tpr_achieved=float(np.mean(ref >= threshold)), origin=origin)


def ood_fraction(is_ood) -> float:
    """Share of flagged samples (0.0 for none)."""
    flags = np.asarray(is_ood, dtype=bool)
    return float(flags.mean()) if flags.size else 0.0


def parse_reference(text: str) -> tuple[str, str]:
    """``FILE:GROUP`` split at the last ``:``: a file name may contain ``:``, a group name may not."""
    path, sep, group = str(text).rpartition(":")
    if not sep or not path or not group:
        raise ValueError(f"reference {text!r} must be FILE:GROUP, e.g. ref.h5:fashionmnist-val")
    return path, group


def reference_gate(spec: GateSpec, score: str, models: list[Path]) -> Gate:
    """The gate of ``spec`` on ``score``, fitted on the reference group, which must have been scored
    with the same model (with the same ensemble for a ``waic`` score)."""
    path, group = parse_reference(spec.reference)
    ref_scores = store.read_scores(path, group, score)
    recorded = store.read_group(path, group)[1].get("model_sha256")
    if recorded is not None:
        ref_sha, sha = recorded if isinstance(recorded, list) else [recorded], [sha256_file(m) for m in models]
        if ref_sha[0] != sha[0] or (score.startswith("waic") and ref_sha != sha):
            raise ScoreFileError(f"{path}: group '{group}' was scored with other model(s) than --model; a "
                                 "threshold only applies to scores of the same model")
    return fit_gate(ref_scores, spec.tpr, score=score, reference=spec.reference)


def model_gate(extra: dict, tpr: float, *, score: str, model: str) -> Gate:
    """The gate from the validation scores a model file carries (``extra["reference"]``, written by train).

    Raises:
        UsageError: the model carries no such scores, or they are not of ``score``; ``--reference``
            then names in-distribution scores to use instead.
    """
    ref = extra.get("reference") if isinstance(extra, dict) else None
    if not ref or not ref.get("values"):
        raise UsageError(f"{model} carries no threshold (trained without a validation split, or by an older oodflow); "
                         "pass --reference FILE:GROUP with in-distribution scores of this model")
    if ref.get("score") != score:
        raise UsageError(f"{model} carries a threshold on {ref.get('score')}, not on {score}; pass --reference "
                         "FILE:GROUP to gate on another score")
    where = f"{model}'s {ref.get('split', 'validation')} split ({ref['n']} samples)"
    return fit_gate(ref["values"], tpr, score=score, reference=where, origin="model")
