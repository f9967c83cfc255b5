"""The threshold that keeps a share of in-distribution scores, used by the gate and by ``evaluate``.

Every score is oriented higher = more in-distribution; a sample is accepted as in-distribution
when its score is at or above the threshold. ``NaN`` has no place in an order and is refused.
"""

from __future__ import annotations

import math

import numpy as np

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
    return float(np.sort(scores)[::-1][rank_at_tpr(len(scores), tpr) - 1])


def rank_at_tpr(n: int, tpr: float) -> int:
    """``k``, the smallest count of ``n`` samples with ``k / n >= tpr`` in floating point (at least 1);
    the threshold is the ``k``-th largest score (the bootstrap finds it by this count too).

    Example:
        >>> rank_at_tpr(20, 0.95)
        19
    """
    k = min(max(math.ceil(tpr * n), 1), n)
    while k > 1 and (k - 1) / n >= tpr:  # undo a ceil pushed up by rounding (0.95 * 20 > 19)
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    return k


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
