"""OOD detection metrics: AUROC, AUPR-in, AUPR-out, FPR at a TPR.

Convention (the same everywhere in oodflow): in-distribution is the POSITIVE
class and the decision score is the log-likelihood, or any score with the same
orientation (higher = more in-distribution), used raw, never through a sigmoid.
A flow that prefers the OOD data, as in the paper's FashionMNIST -> MNIST
failure, gets an AUROC far below 0.5.

Non-finite scores: ``-inf`` is a valid log-likelihood (the model gives the
sample zero density: maximally OOD) and ``+inf`` a valid, maximally
in-distribution one. They keep their place in the ordering: AUROC and AUPR
depend on the scores only through their order, so they are computed on dense
ranks, which are finite and preserve ties. ``NaN`` has no place in an order and
is an :class:`InputError` naming the group and the count.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ood_flow.errors import InputError


def threshold_at_tpr(in_scores, tpr: float = 0.95, *, name: str = "in-distribution") -> float:
    """The largest threshold ``t`` with ``mean(in_scores >= t) >= tpr``.

    Samples with ``score >= t`` are accepted as in-distribution. Let ``k`` be the
    smallest count with ``k / n >= tpr`` (compared in floating point, exactly as
    ``np.mean(in_scores >= t) >= tpr`` compares); then ``t`` is the ``k``-th largest
    in-distribution score. With ties at ``t`` more than ``k`` samples are accepted;
    any ``t' > t`` accepts at most ``k - 1``, a fraction below ``tpr``. The threshold
    is always one of the scores (it may be ``-inf`` if enough scores are ``-inf``).

    Args:
        in_scores: 1-D in-distribution scores (higher = more in-distribution).
        tpr: the true-positive rate to reach, in (0, 1].
        name: what to call the scores in error messages (e.g. the group name).

    Example:
        >>> threshold_at_tpr([1.0, 2.0, 3.0, 4.0], tpr=0.75)
        2.0
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    scores = checked_scores(in_scores, name)
    n = len(scores)
    k = min(max(math.ceil(tpr * n), 1), n)
    while k > 1 and (k - 1) / n >= tpr:  # undo a ceil pushed up by rounding (0.95 * 20 > 19)
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    return float(np.sort(scores)[::-1][k - 1])


def ood_metrics(in_scores, ood_scores, *, tpr: float = 0.95,
                in_name: str = "in-distribution", ood_name: str = "out-of-distribution") -> dict:
    """Detection metrics with in-distribution as the positive class.

    Returns a dict with:
        auroc: area under the ROC curve (ties count 1/2).
        aupr_in: average precision with in-distribution positive, score as is.
        aupr_out: average precision with OOD positive, score negated.
        fpr95, fpr_at_tpr: the fraction of OOD samples accepted, ``mean(ood >= threshold)``,
            at ``threshold = threshold_at_tpr(in_scores, tpr)``. ``fpr95`` is named so
            whatever ``tpr`` is.
        tpr: the requested TPR; tpr_achieved: ``mean(in >= threshold)`` (>= tpr with ties).
        threshold: that threshold, in the scores' units (may be ``-inf``).
        n_in, n_ood: the sample counts.

    Args:
        in_scores, ood_scores: 1-D scores, higher = more in-distribution.
        tpr: TPR for the FPR and threshold.
        in_name, ood_name: names for error messages (e.g. the groups).

    Example:
        >>> ood_metrics([3.0, 4.0], [1.0, 2.0])["auroc"]
        1.0
    """
    s_in, s_ood = checked_scores(in_scores, in_name), checked_scores(ood_scores, ood_name)
    threshold = threshold_at_tpr(s_in, tpr, name=in_name)
    r_in, r_ood = _dense_ranks(s_in, s_ood)
    y = np.r_[np.ones(len(r_in)), np.zeros(len(r_ood))]
    r = np.r_[r_in, r_ood]
    fpr = float(np.mean(s_ood >= threshold))
    return {
        "auroc": float(roc_auc_score(y, r)),
        "aupr_in": float(average_precision_score(y, r)),
        "aupr_out": float(average_precision_score(1 - y, -r)),
        "fpr95": fpr,
        "fpr_at_tpr": fpr,
        "tpr": float(tpr),
        "tpr_achieved": float(np.mean(s_in >= threshold)),
        "threshold": threshold,
        "n_in": len(s_in),
        "n_ood": len(s_ood),
    }


def checked_scores(scores, name: str) -> np.ndarray:
    """1-D float64 scores; empty input or NaN is an InputError naming ``name``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name}: scores must be 1-D, got shape {s.shape}")
    if len(s) == 0:
        raise InputError(f"{name}: no scores")
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise InputError(f"{name}: {n_nan} of {len(s)} scores are NaN")
    return s


def _dense_ranks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 0, 1, 2, ... of the pooled scores, equal scores sharing a rank (±inf included)."""
    _, inverse = np.unique(np.r_[a, b], return_inverse=True)
    ranks = inverse.reshape(-1).astype(np.float64)
    return ranks[: len(a)], ranks[len(a):]
