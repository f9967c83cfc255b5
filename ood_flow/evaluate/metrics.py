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
is an :class:`InputError` naming the group and the count (see
:func:`~ood_flow.score.threshold.checked_scores`).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ood_flow import names
from ood_flow.score.threshold import checked_scores, threshold_at_tpr

KEYS = names.METRICS  # the metrics, in the order tables show them


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
    r_in, r_ood = dense_ranks(s_in, s_ood)
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


def dense_ranks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 0, 1, 2, ... of the pooled scores, equal scores sharing a rank (±inf included)."""
    _, inverse = np.unique(np.r_[a, b], return_inverse=True)
    ranks = inverse.reshape(-1).astype(np.float64)
    return ranks[: len(a)], ranks[len(a):]
