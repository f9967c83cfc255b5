"""The gate: a threshold on a calibration set, per-sample flags and p-values, and the batch decision.

The threshold is :func:`~ood_flow.score.threshold.threshold_at_tpr` of the calibration scores
(:mod:`ood_flow.score.calibration`: the model file's, or a ``--reference`` group's): the largest score that
keeps ``tpr`` of them. A sample is flagged when its score is below the threshold, or is NaN (a score that
cannot be ordered never passes)::

    flagged = not (score >= threshold)

Each sample also gets a conformal p-value against the calibration scores, and ``--fdr Q`` flags by
Benjamini-Hochberg on those instead. The batch decision (``--max-ood-fraction F``) is always the test of
:mod:`ood_flow.score.evidence` on the threshold's flags: it fails only on significant evidence, at level
``alpha``, that more than ``F`` of the batch is OOD.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ood_flow import store
from ood_flow.errors import ScoreFileError, UsageError
from ood_flow.fileio import sha256_file
from ood_flow.score import evidence
from ood_flow.score.calibration import Calibration, Settings, check_method, check_settings, from_model, make, method_of
from ood_flow.score.threshold import rank_at_tpr, threshold_at_tpr
from ood_flow.validation import check_number, parse_reference  # noqa: F401 (part of this module's API)

RULE = "batch test"
"""The ``gate_rule`` a score group records: its decision is :mod:`ood_flow.score.evidence`'s test (groups of
older versions were gated by the OOD fraction alone and record none)."""


@dataclass(frozen=True)
class GateSpec:
    """A gate to apply while scoring (``oodflow score --max-ood-fraction``, ``--flags``, ``--reference``).

    Attributes:
        reference: ``FILE:GROUP`` of in-distribution scores of the same model to calibrate with; None: the
            calibration the model file carries (written by ``train`` or ``calibrate``).
        tpr: share of the calibration scores the per-sample threshold keeps (good data is then flagged at
            about ``1 - tpr``).
        score: the score the gate applies to (default: the first method's score).
        max_ood_fraction: the batch decision: :class:`~ood_flow.errors.GateFailed` (after saving) when there
            is significant evidence that more than this share of the batch is OOD; None only flags samples.
        alpha: the test's level: a batch with at most ``max_ood_fraction`` OOD fails with probability at most
            alpha (under ``confidence``'s guarantee).
        confidence: ``1 - delta`` of the calibration-conditional guarantee: for all but a delta share of
            calibration sets the level holds for every batch; None: the marginal guarantee (over calibration
            set and batch together).
        fdr: flag samples by Benjamini-Hochberg on their conformal p-values at this false-discovery rate
            instead of by the threshold (the batch decision is unchanged).
    """

    reference: str | None = None
    tpr: float = 0.95
    score: str | None = None
    max_ood_fraction: float | None = None
    alpha: float = 0.01
    confidence: float | None = 0.95
    fdr: float | None = None

    def __post_init__(self) -> None:
        # a NaN bound would switch the gate off: every comparison with it is false
        check_number("--tpr", self.tpr, low=0, high=1, low_open=True)
        check_number("--max-ood-fraction", self.max_ood_fraction, low=0, high=1)
        check_number("--alpha", self.alpha, low=0, high=1, low_open=True, high_open=True)
        check_number("--confidence", self.confidence, low=0, high=1, low_open=True, high_open=True)
        check_number("--fdr", self.fdr, low=0, high=1, low_open=True, high_open=True)


@dataclass(frozen=True, eq=False)
class Gate:
    """A threshold on one score, the calibration it comes from, and where that came from.

    Attributes:
        score: the per-sample score it applies to (a dataset name, e.g. ``log_likelihood``).
        threshold: samples with ``score >= threshold`` are in-distribution.
        tpr: the requested share of the calibration scores kept.
        reference: where the calibration scores came from, in words.
        n_reference: calibration sample count.
        tpr_achieved: the share of the calibration scores actually kept (``>= tpr``; more with ties).
        origin: ``"reference"`` (scores given with ``--reference``) or ``"model"`` (the model file's).
        calibration: the calibration scores, sorted.
        source: the data they are scores of, in words (where known).
    """

    score: str
    threshold: float
    tpr: float
    reference: str
    n_reference: int
    tpr_achieved: float
    origin: str
    calibration: np.ndarray
    source: str = ""

    @property
    def rank(self) -> int:
        """``j``: the threshold is the ``j``-th smallest calibration score."""
        return evidence.order_rank(self.n_reference, rank_at_tpr(self.n_reference, self.tpr))

    def flags(self, scores) -> np.ndarray:
        """Flagged per sample: True where the score is below the threshold or NaN."""
        return ~(np.asarray(scores, dtype=np.float64) >= self.threshold)

    def p_values(self, scores) -> np.ndarray:
        """The conformal p-value of each score against the calibration (:func:`~.evidence.conformal_p_values`)."""
        return evidence.conformal_p_values(self.calibration, scores)

    def decide(self, flags: np.ndarray, n_skipped: int, spec: GateSpec) -> evidence.Decision:
        """The batch decision on the threshold's ``flags``; unreadable inputs count as flagged OOD."""
        m, x = int(flags.size) + n_skipped, int(np.sum(flags)) + n_skipped
        return evidence.decide(x, m, n_skipped, j=self.rank, n_calibration=self.n_reference,
                               max_ood_fraction=spec.max_ood_fraction, alpha=spec.alpha, confidence=spec.confidence)

    def attrs(self, is_ood: np.ndarray, decision: evidence.Decision | None = None, fdr: float | None = None) -> dict:
        """Score-group attributes that record the threshold, the flags and the decision."""
        out = {"threshold": self.threshold, "threshold_tpr": self.tpr, "threshold_tpr_achieved": self.tpr_achieved,
               "threshold_reference": self.reference, "threshold_score": self.score, "threshold_from": self.origin,
               "calibration_n": self.n_reference, "calibration_source": self.source,
               "ood_fraction": ood_fraction(is_ood), "n_ood": int(np.sum(is_ood)),
               "flags_by": f"Benjamini-Hochberg at FDR {fdr:g}" if fdr else "threshold"}
        if decision is not None:
            out.update(gate_rule=RULE, gate_decision=decision.to_dict(), max_ood_fraction=decision.max_ood_fraction)
        return out


def fit_gate(reference_scores, tpr: float, *, score: str, reference: str, origin: str = "reference",
             source: str = "") -> Gate:
    """The gate that keeps ``tpr`` of ``reference_scores`` (in-distribution, higher = more in-distribution).

    Example:
        >>> g = fit_gate([1.0, 2.0, 3.0, 4.0], 0.75, score="log_likelihood", reference="ref.h5:val")
        >>> g.threshold, g.flags([1.5, 2.0, float("nan")]).tolist(), g.rank
        (2.0, [True, False, True], 2)
    """
    ref = np.sort(np.asarray(reference_scores, dtype=np.float64))
    threshold = threshold_at_tpr(ref, tpr, name=reference)
    return Gate(score=score, threshold=threshold, tpr=float(tpr), reference=reference, n_reference=len(ref),
                tpr_achieved=float(np.mean(ref >= threshold)), origin=origin, calibration=ref, source=source)


def calibrated_gate(cal: Calibration, tpr: float, where: str, origin: str) -> Gate:
    """The gate of ``tpr`` on a calibration set (``where``: the model file, or ``FILE:GROUP``)."""
    name = f"{where}'s calibration" if origin == "model" else where
    return fit_gate(cal.values, tpr, score=cal.score, reference=f"{name} ({cal.n} scores)", origin=origin,
                    source=cal.source)


def ood_fraction(is_ood) -> float:
    """Share of flagged samples (0.0 for none)."""
    flags = np.asarray(is_ood, dtype=bool)
    return float(flags.mean()) if flags.size else 0.0


def reference_calibration(spec: GateSpec, score: str, models: list[Path], digests: list[str]) -> Calibration:
    """The calibration of ``spec.reference``, a score group that must have been scored with the same model
    (with the same ensemble for a ``waic`` score): by its recorded model digest, else the file's sha256."""
    path, group = parse_reference(spec.reference)
    values = store.read_scores(path, group, score)
    attrs = store.read_group(path, group)[1]
    _check_same_model(attrs, score, models, digests, path, group)
    settings = Settings.from_dict(attrs["settings"]) if isinstance(attrs.get("settings"), dict) else None
    try:
        return make(values, score, f"{path}:{group}", "reference", settings, None)
    except ValueError as exc:
        raise ScoreFileError(str(exc)) from None


def _check_same_model(attrs: dict, score: str, models: list[Path], digests: list[str], path, group) -> None:
    recorded, now = attrs.get("model_digest"), digests
    if recorded is None:  # a group of an older oodflow: the model file's sha256 is all there is
        recorded, now = attrs.get("model_sha256"), [sha256_file(m) for m in models]
    if recorded is None:
        return
    theirs = recorded if isinstance(recorded, list) else [recorded]
    if theirs[0] != now[0] or (score.startswith("waic") and theirs != now):
        raise ScoreFileError(f"{path}: group '{group}' was scored with other model(s) than --model; a "
                             "threshold only applies to scores of the same model")


def gate_score(choices: list[str], gate: GateSpec | None) -> str | None:
    """The score the gate applies to: the one asked for, which a chosen method must compute (``choices``: the
    scores of the chosen methods, in order)."""
    if gate is None:
        return None
    if gate.score is not None and gate.score not in choices:
        raise UsageError(f"--gate-score {gate.score!r} is not computed by the chosen --method; choose from: "
                         f"{', '.join(choices)}")
    return gate.score or choices[0]


def gate_for_run(gate: GateSpec | None, score: str | None, paths: list[Path], extra: dict, digests: list[str],
                 settings: Settings) -> Gate | None:
    """The gate: calibrated on ``--reference`` scores or on the calibration the model file carries, refused when
    this run's settings would not give scores exchangeable with the calibration's."""
    if gate is None:
        return None
    check_method(method_of(score))  # before any file is read
    if gate.reference is not None:
        cal = reference_calibration(gate, score, paths, digests)
        where, origin = gate.reference, "reference"
    else:
        cal = from_model(extra, str(paths[0]), digests[0])
        where, origin = str(paths[0]), "model"
    check_settings(cal, score, settings, where)
    return calibrated_gate(cal, gate.tpr, where, origin)


def apply_gate(fitted: Gate, gate: GateSpec, score: str, arrays: dict, attrs: dict,
               n_skipped: int) -> evidence.Decision | None:
    """Flags and conformal p-values per sample (into ``arrays``), the batch decision, and their record (into
    ``attrs``)."""
    below = fitted.flags(arrays[score])
    arrays["p_value"] = fitted.p_values(arrays[score])
    arrays["is_ood"] = evidence.benjamini_hochberg(arrays["p_value"], gate.fdr) if gate.fdr else below
    decision = fitted.decide(below, n_skipped, gate) if gate.max_ood_fraction is not None else None
    attrs.update(fitted.attrs(arrays["is_ood"], decision, gate.fdr))
    return decision
