"""Percentile bootstrap confidence intervals of the detection metrics.

In-distribution and OOD samples are resampled separately (each with replacement, keeping its
size), as two independent samples should be. Every metric of :func:`ood_metrics` depends on the
scores only through their order, so the pooled scores are replaced once by dense ranks ``0..U-1``
and a resample is summarised by how often it draws each rank: two ``(B, U)`` count matrices. All
four metrics of a whole batch of resamples then follow from cumulative sums of those matrices,
with no Python loop per resample; batches are sized to bound memory.

The formulas are the ones :func:`ood_metrics` uses (ties count 1/2 in AUROC; average precision as
scikit-learn defines it; the threshold of :func:`threshold_at_tpr`), and the tests check them
against it resample by resample.
"""

from __future__ import annotations

import numpy as np

from ood_flow.evaluate.metrics import KEYS, dense_ranks
from ood_flow.score.threshold import checked_scores, rank_at_tpr

MAX_CELLS = 4_000_000  # count-matrix cells per batch of resamples (a few tens of MB)


def bootstrap_intervals(in_scores, ood_scores, *, level: float = 0.95, n_boot: int = 1000, seed: int = 0,
                        tpr: float = 0.95, in_name: str = "in-distribution",
                        ood_name: str = "out-of-distribution") -> dict:
    """Percentile bootstrap intervals of AUROC, AUPR-in, AUPR-out and the FPR at ``tpr``.

    Args:
        in_scores, ood_scores: 1-D scores, higher = more in-distribution.
        level: the interval's coverage, in (0, 1), e.g. 0.95.
        n_boot: the number of resamples.
        seed: the same seed gives the same intervals; in-distribution and OOD draws come from
            separate streams of it.
        tpr: the TPR of the FPR metric.
        in_name, ood_name: names for error messages.

    Returns:
        ``{"level", "n_bootstrap", "seed", "method": "percentile", "auroc": [lo, hi], "aupr_in": ...,
        "aupr_out": ..., "fpr95": ...}``.

    Example:
        >>> ci = bootstrap_intervals([3.0, 4.0, 5.0], [1.0, 2.0], n_boot=200)
        >>> ci["auroc"]
        [1.0, 1.0]
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"the number of bootstrap resamples must be at least 1, got {n_boot}")
    s_in, s_ood = checked_scores(in_scores, in_name), checked_scores(ood_scores, ood_name)
    stats = bootstrap_metrics(s_in, s_ood, n_boot=n_boot, seed=seed, tpr=tpr)
    alpha = 1.0 - level
    out = {"level": float(level), "n_bootstrap": int(n_boot), "seed": int(seed), "method": "percentile"}
    for key in KEYS:
        lo, hi = np.quantile(stats[key], [alpha / 2, 1 - alpha / 2])
        out[key] = [float(lo), float(hi)]
    return out


def bootstrap_metrics(s_in: np.ndarray, s_ood: np.ndarray, *, n_boot: int, seed: int, tpr: float) -> dict:
    """The metrics of ``n_boot`` resamples, as ``{key: (n_boot,) array}`` (see the module docstring)."""
    r_in, r_ood = dense_ranks(s_in, s_ood)
    r_in, r_ood = r_in.astype(np.int64), r_ood.astype(np.int64)
    n_unique = int(max(r_in.max(), r_ood.max())) + 1
    rng_in, rng_ood = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    per_batch = max(1, MAX_CELLS // max(n_unique, len(r_in), len(r_ood)))
    parts = []
    for start in range(0, n_boot, per_batch):  # batches of resamples, each fully vectorized
        b = min(per_batch, n_boot - start)
        idx_in = rng_in.integers(0, len(r_in), size=(b, len(r_in)))
        idx_ood = rng_ood.integers(0, len(r_ood), size=(b, len(r_ood)))
        parts.append(resampled_metrics(r_in[idx_in], r_ood[idx_ood], n_unique, tpr))
    return {key: np.concatenate([p[key] for p in parts]) for key in KEYS}


def resampled_metrics(ranks_in: np.ndarray, ranks_ood: np.ndarray, n_unique: int, tpr: float) -> dict:
    """Metrics of each row of ``(B, n_in)`` and ``(B, n_ood)`` integer ranks in ``[0, n_unique)``."""
    c_in, c_ood = _counts(ranks_in, n_unique), _counts(ranks_ood, n_unique)
    n_in, n_ood = ranks_in.shape[1], ranks_ood.shape[1]
    down_in, down_ood = c_in[:, ::-1], c_ood[:, ::-1]  # highest score first
    tp, fp = np.cumsum(down_in, axis=1), np.cumsum(down_ood, axis=1)
    below = n_ood - fp  # OOD samples strictly below each score
    auroc = (down_in * (below + 0.5 * down_ood)).sum(axis=1) / (n_in * n_ood)
    at = np.argmax(tp >= rank_at_tpr(n_in, tpr), axis=1)[:, None]  # the threshold's column
    return {
        "auroc": auroc,
        "aupr_in": _average_precision(down_in, tp, fp, n_in),
        "aupr_out": _average_precision(c_ood, np.cumsum(c_ood, axis=1), np.cumsum(c_in, axis=1), n_ood),
        "fpr95": np.take_along_axis(fp, at, axis=1)[:, 0] / n_ood,
    }


def _counts(ranks: np.ndarray, n_unique: int) -> np.ndarray:
    """``(B, n_unique)``: how often each row draws each rank (one bincount for all rows)."""
    b = ranks.shape[0]
    flat = (ranks + n_unique * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_unique).reshape(b, n_unique).astype(np.float64)


def _average_precision(pos: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_pos: int) -> np.ndarray:
    """sum over thresholds (best first) of recall gained x precision, as scikit-learn's average precision."""
    drawn = tp + fp
    precision = np.divide(tp, drawn, out=np.zeros_like(tp), where=drawn > 0)
    return (pos * precision).sum(axis=1) / n_pos
