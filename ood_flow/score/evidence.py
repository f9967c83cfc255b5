"""The statistics of the gate: conformal p-values per sample, Benjamini-Hochberg flags, and the batch test.

A calibration set holds ``n`` scores of in-distribution data that played no part in training or in any
choice. The threshold is the ``j``-th smallest of them (``j = n + 1 - k`` with ``k`` from
:func:`~ood_flow.score.threshold.rank_at_tpr`), and a sample is flagged when its score is below it. For a
continuous score exchangeable with the calibration set, the share of good data flagged at that threshold
is a random variable over calibration sets: ``Beta(j, n + 1 - j)`` (the ``j``-th order statistic of ``n``
uniforms), mean ``j / (n + 1)``.

The batch test asks whether more than a share ``F`` of a batch of ``m`` is OOD. Under the null, at most
``K0 = floor(F m)`` samples are OOD; taking them as always flagged (the worst case), the count ``X`` of
flagged samples is at most ``K0 + Binomial(m - K0, r)`` for the flag rate ``r`` of good data. Two
guarantees follow:

- *marginal*: ``r ~ Beta(j, n + 1 - j)``, so the count is ``K0 + BetaBinomial(m - K0, j, n + 1 - j)``
  and ``P(fail) <= alpha`` over the draw of calibration set and batch together;
- *calibration-conditional* (``confidence = 1 - delta``): ``r <= r*``, the ``1 - delta`` quantile of
  that Beta, for all but a ``delta`` share of calibration sets, and the test uses ``Binomial(m - K0, r*)``;
  then for those calibration sets every batch with at most ``F`` OOD fails with probability at most alpha.

References:
    Vovk, "Conditional validity of inductive conformal predictors", ACML 2012 (the Beta law of the flag
    rate and training-conditional guarantees); Bates et al., "Testing for outliers with conformal
    p-values", Annals of Statistics 2023 (conformal p-values, their dependence, BH on them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

INTERVAL = 0.95
"""The coverage of the interval of the flag rate that the gate reports."""


def _special():
    import scipy.special  # imported on first use: only a gate needs it

    return scipy.special


def order_rank(n: int, k: int) -> int:
    """``j``, the rank from the bottom of the ``k``-th largest of ``n`` scores (``j = n + 1 - k``).

    Example:
        >>> order_rank(150, 143)
        8
    """
    if not 1 <= k <= n:
        raise ValueError(f"rank k must be in [1, {n}], got {k}")
    return n + 1 - k


def flag_rate_quantile(j: int, n: int, q: float) -> float:
    """The ``q`` quantile of the flag rate of good data at the ``j``-th smallest of ``n`` calibration scores,
    ``Beta(j, n + 1 - j)``.

    Example:
        >>> round(flag_rate_quantile(8, 150, 0.95), 4)
        0.0859
    """
    return float(_special().betaincinv(j, n + 1 - j, q))


def binomial_tail(x: int, size: int, rate: float) -> float:
    """``P(Binomial(size, rate) >= x)``.

    Example:
        >>> binomial_tail(2, 2, 0.5)
        0.25
    """
    if x <= 0:
        return 1.0
    if x > size:
        return 0.0
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    return float(_special().betainc(x, size - x + 1, rate))  # the regularised incomplete beta: exact


def beta_binomial_tail(x: int, size: int, a: float, b: float) -> float:
    """``P(BetaBinomial(size, a, b) >= x)``, summed in log space over the tail.

    Example:
        >>> round(beta_binomial_tail(1, 1, 1.0, 1.0), 6)   # a uniform rate: one trial succeeds half the time
        0.5
    """
    if x <= 0:
        return 1.0
    if x > size:
        return 0.0
    gammaln = _special().gammaln
    k = np.arange(x, size + 1, dtype=np.float64)
    log_pmf = (gammaln(size + 1) - gammaln(k + 1) - gammaln(size - k + 1) + gammaln(k + a) + gammaln(size - k + b)
               - gammaln(size + a + b) - gammaln(a) - gammaln(b) + gammaln(a + b))
    top = log_pmf.max()
    return float(min(1.0, math.exp(top) * np.exp(log_pmf - top).sum()))


def batch_p_value(n_flagged: int, m: int, max_ood_fraction: float, j: int, n: int,
                  confidence: float | None) -> float:
    """The p-value of "at most ``max_ood_fraction`` of the ``m`` samples are OOD" given ``n_flagged`` flagged
    (see the module docstring); ``confidence`` None gives the marginal test, else the conditional one.

    Example:
        >>> round(batch_p_value(40, 200, 0.05, 8, 150, 0.95), 5)   # 10 OOD allowed, 30 more of 190 flagged
        0.00087
        >>> batch_p_value(5, 200, 0.05, 8, 150, 0.95)   # no more flagged than F m: no evidence at all
        1.0
    """
    k0 = ood_allowance(max_ood_fraction, m)
    if confidence is None:
        return beta_binomial_tail(n_flagged - k0, m - k0, j, n + 1 - j)
    return binomial_tail(n_flagged - k0, m - k0, flag_rate_quantile(j, n, confidence))


def ood_allowance(max_ood_fraction: float, m: int) -> int:
    """``floor(F m)``, computed on ``F`` as written in decimal (0.29 of 100 is 29, where floating point
    gives 28.999999999999996).

    Example:
        >>> ood_allowance(0.29, 100), ood_allowance(0.05, 199)
        (29, 9)
    """
    return min(math.floor(Fraction(repr(float(max_ood_fraction))) * m), m)


def smallest_failing_batch(max_ood_fraction: float, alpha: float, j: int, n: int, confidence: float | None,
                           limit: int = 10**7) -> int | None:
    """The smallest batch size ``m`` at which ``m`` of ``m`` flagged gives ``p <= alpha`` (None: none below
    ``limit``, e.g. when ``max_ood_fraction`` is 1).

    Example:
        >>> smallest_failing_batch(0.0, 0.01, 8, 150, 0.95)   # 0.086 ** 2 <= 0.01
        2
    """
    if max_ood_fraction >= 1.0:
        return None
    m = 1
    while m <= limit:
        if batch_p_value(m, m, max_ood_fraction, j, n, confidence) <= alpha:
            return m
        m = m + 1 if m < 64 else int(m * 1.05) + 1
    return None


def conformal_p_values(calibration, scores) -> np.ndarray:
    """Per sample, ``(1 + #{calibration <= s}) / (n + 1)``: small for a score low among the calibration
    scores (higher = more in-distribution). Super-uniform for a score exchangeable with the calibration
    set; a NaN score gets the smallest value, ``1 / (n + 1)`` (it never passes).

    Example:
        >>> conformal_p_values([1.0, 2.0, 3.0], [0.5, 2.0, 9.0, float("nan")]).tolist()
        [0.25, 0.75, 1.0, 0.25]
    """
    cal = np.sort(np.asarray(calibration, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    below = np.searchsorted(cal, np.where(np.isnan(s), -np.inf, s), side="right")
    below = np.where(np.isnan(s), 0, below)
    return (1.0 + below) / (len(cal) + 1.0)


def benjamini_hochberg(p_values, q: float) -> np.ndarray:
    """Flags by the Benjamini-Hochberg procedure at false-discovery rate ``q``: the ``k`` smallest p-values,
    ``k`` the largest rank with ``p_(k) <= k q / m``.

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.5], 0.1).tolist()
        [True, True, True, False]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    passed = p[order] <= q * np.arange(1, m + 1) / m
    flags = np.zeros(m, dtype=bool)
    if passed.any():
        flags[order[: int(np.nonzero(passed)[0].max()) + 1]] = True
    return flags


@dataclass(frozen=True)
class Decision:
    """The gate's decision on one batch, and its evidence.

    Attributes:
        passed: False when there is significant evidence (``p_value <= alpha``) that more than
            ``max_ood_fraction`` of the batch is OOD.
        p_value: of the batch test (see the module docstring).
        alpha, confidence, max_ood_fraction: the test's settings (``confidence`` None: marginal).
        n: the batch size ``m``, skipped inputs included.
        n_flagged: ``X``, samples below the threshold plus skipped inputs (they count as OOD).
        n_skipped: inputs that could not be read.
        flag_rate: the expected share of good data flagged at the threshold, ``j / (n_calibration + 1)``.
        flag_rate_interval: its central :data:`INTERVAL` interval over calibration sets.
        flag_rate_bound: the rate the conditional test assumes (its ``confidence`` quantile), or None.
        n_calibration: the calibration set's size.
        can_fail: whether this batch could fail at all: ``m`` of ``m`` flagged gives ``p <= alpha``.
        smallest_failing_batch: when it could not, the smallest batch that can (None: none); else None.
    """

    passed: bool
    p_value: float
    alpha: float
    confidence: float | None
    max_ood_fraction: float
    n: int
    n_flagged: int
    n_skipped: int
    flag_rate: float
    flag_rate_interval: tuple[float, float]
    flag_rate_bound: float | None
    n_calibration: int
    can_fail: bool = True
    smallest_failing_batch: int | None = None

    def too_small(self) -> str | None:
        """A warning when this batch could not have failed whatever it held (else None), naming the smallest
        batch that can."""
        if self.can_fail:
            return None
        need = (f"the smallest batch that can fail is {self.smallest_failing_batch}"
                if self.smallest_failing_batch else "no batch size can fail at these settings")
        return (f"warning: a batch of {self.n} cannot fail this gate: even {self.n} of {self.n} flagged is no "
                f"evidence at alpha {self.alpha:g} with {self.n_calibration} calibration scores; {need}")

    def sentence(self) -> str:
        """The decision in words, e.g. ``12 of 200 flagged (6.0 %); good data is flagged at 5.3 % [2.3, 9.4] ...``."""
        lo, hi = self.flag_rate_interval
        share = self.n_flagged / self.n if self.n else 0.0
        skipped = f", {self.n_skipped} unreadable counted as OOD" if self.n_skipped else ""
        verdict = (f"no evidence that more than {_pct(self.max_ood_fraction)} are OOD (p = {self.p_value:.2g}): pass"
                   if self.passed else f"evidence that more than {_pct(self.max_ood_fraction)} are OOD (p = "
                   f"{self.p_value:.2g} <= alpha {self.alpha:g}): fail")
        return (f"{self.n_flagged} of {self.n} flagged ({_pct(share)}{skipped}); good data is flagged at "
                f"{_pct(self.flag_rate)} [{_pct(lo, False)}, {_pct(hi, False)}] at this threshold "
                f"({self.n_calibration} calibration scores); {verdict}")

    def to_dict(self) -> dict:
        return {"passed": self.passed, "p_value": self.p_value, "alpha": self.alpha, "confidence": self.confidence,
                "guarantee": "marginal" if self.confidence is None else "calibration-conditional",
                "max_ood_fraction": self.max_ood_fraction, "n": self.n, "n_flagged": self.n_flagged,
                "n_skipped": self.n_skipped, "flag_rate": self.flag_rate,
                "flag_rate_interval": list(self.flag_rate_interval), "flag_rate_bound": self.flag_rate_bound,
                "n_calibration": self.n_calibration, "can_fail": self.can_fail,
                "smallest_failing_batch": self.smallest_failing_batch}


def _pct(x: float, sign: bool = True) -> str:
    text = f"{100 * x:.1f}"
    return f"{text} %" if sign else text


def flag_rate(j: int, n: int) -> tuple[float, tuple[float, float]]:
    """The expected share of good data flagged at the ``j``-th smallest of ``n`` calibration scores, and its
    central :data:`INTERVAL` interval over calibration sets.

    Example:
        >>> rate, (low, high) = flag_rate(8, 150)
        >>> f"{rate:.3f} [{low:.3f}, {high:.3f}]"
        '0.053 [0.023, 0.094]'
    """
    tail = (1.0 - INTERVAL) / 2
    return j / (n + 1), (flag_rate_quantile(j, n, tail), flag_rate_quantile(j, n, 1.0 - tail))


def decide(n_flagged: int, m: int, n_skipped: int, *, j: int, n_calibration: int, max_ood_fraction: float,
           alpha: float, confidence: float | None) -> Decision:
    """The batch test on ``n_flagged`` of ``m`` (see :class:`Decision`).

    Example:
        >>> d = decide(12, 200, 0, j=8, n_calibration=150, max_ood_fraction=0.05, alpha=0.01, confidence=0.95)
        >>> d.passed, d.sentence()
        (True, '12 of 200 flagged (6.0 %); good data is flagged at 5.3 % [2.3, 9.4] at this threshold (150 \
calibration scores); no evidence that more than 5.0 % are OOD (p = 1): pass')
    """
    p = batch_p_value(n_flagged, m, max_ood_fraction, j, n_calibration, confidence)
    rate, interval = flag_rate(j, n_calibration)
    bound = flag_rate_quantile(j, n_calibration, confidence) if confidence is not None else None
    can_fail = m > 0 and batch_p_value(m, m, max_ood_fraction, j, n_calibration, confidence) <= alpha
    smallest = None if can_fail else smallest_failing_batch(max_ood_fraction, alpha, j, n_calibration, confidence)
    return Decision(passed=not p <= alpha, p_value=p, alpha=alpha, confidence=confidence,
                    max_ood_fraction=max_ood_fraction, n=m, n_flagged=n_flagged, n_skipped=n_skipped,
                    flag_rate=rate, flag_rate_interval=interval, flag_rate_bound=bound,
                    n_calibration=n_calibration, can_fail=can_fail, smallest_failing_batch=smallest)
