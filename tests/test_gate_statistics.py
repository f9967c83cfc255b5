"""The gate's statistics against brute force: the batch p-value by simulation and exact sums, conformal p-values
super-uniform on exchangeable data, Benjamini-Hochberg by hand, the smallest batch that can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ood_flow.score import evidence
from ood_flow.score.evidence import (batch_p_value, benjamini_hochberg, beta_binomial_tail, binomial_tail,
                                     conformal_p_values, decide, flag_rate_quantile, ood_allowance,
                                     smallest_failing_batch)
from ood_flow.score.threshold import rank_at_tpr


def _exact_binomial_tail(x, size, rate):
    return sum(math.comb(size, k) * rate**k * (1 - rate) ** (size - k) for k in range(max(x, 0), size + 1))


def _exact_beta_binomial_tail(x, size, a, b):
    beta = lambda p, q: math.exp(math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q))  # noqa: E731
    return sum(math.comb(size, k) * beta(k + a, size - k + b) / beta(a, b) for k in range(max(x, 0), size + 1))


@pytest.mark.parametrize("x, size, rate", [(0, 5, 0.3), (1, 5, 0.3), (3, 7, 0.05), (7, 7, 0.5), (8, 7, 0.5),
                                           (2, 40, 0.01)])
def test_binomial_tail_equals_the_exact_sum(x, size, rate):
    assert binomial_tail(x, size, rate) == pytest.approx(_exact_binomial_tail(x, size, rate), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("x, size, a, b", [(0, 4, 2, 3), (1, 4, 2, 3), (4, 4, 2, 3), (3, 30, 8, 143),
                                           (12, 200, 8, 143)])
def test_beta_binomial_tail_equals_the_exact_sum(x, size, a, b):
    assert beta_binomial_tail(x, size, a, b) == pytest.approx(_exact_beta_binomial_tail(x, size, a, b), rel=1e-9)


@pytest.mark.parametrize("n, tpr, m, fraction", [(20, 0.9, 10, 0.1), (40, 0.8, 6, 0.0), (15, 0.95, 25, 0.2)])
def test_the_flagged_count_of_a_worst_case_null_batch_has_the_beta_binomial_law(n, tpr, m, fraction):
    """Simulate calibration sets and batches of continuous exchangeable scores (uniforms), the allowed OOD
    share always flagged: the tail of the flagged count is the marginal p-value's."""
    rng = np.random.default_rng(0)
    trials = 200_000
    j = evidence.order_rank(n, rank_at_tpr(n, tpr))
    threshold = np.sort(rng.random((trials, n)), axis=1)[:, j - 1]
    k0 = ood_allowance(fraction, m)
    flagged = k0 + (rng.random((trials, m - k0)) < threshold[:, None]).sum(axis=1)
    for x in range(k0, m + 1):
        simulated = float(np.mean(flagged >= x))
        exact = batch_p_value(x, m, fraction, j, n, None)
        assert abs(simulated - exact) <= 4 * math.sqrt(max(exact * (1 - exact), 1e-6) / trials), (x, simulated, exact)


def test_the_marginal_and_conditional_tests_keep_their_level_in_simulation():
    """Marginal: P(p <= alpha) <= alpha over calibration sets and batches. Conditional: for all but about delta
    of calibration sets, the flag rate is below the bound the test assumes, so its level holds for them."""
    rng = np.random.default_rng(1)
    n, tpr, m, alpha, confidence = 30, 0.9, 50, 0.05, 0.9
    j = evidence.order_rank(n, rank_at_tpr(n, tpr))
    trials = 40_000
    rate = np.sort(rng.random((trials, n)), axis=1)[:, j - 1]  # the flag rate of good data, per calibration set
    flagged = rng.binomial(m, rate)
    p_marginal = np.array([batch_p_value(int(x), m, 0.0, j, n, None) for x in range(m + 1)])[flagged]
    assert np.mean(p_marginal <= alpha) <= alpha + 4 * math.sqrt(alpha / trials)
    bound = flag_rate_quantile(j, n, confidence)
    assert abs(np.mean(rate > bound) - (1 - confidence)) <= 4 * math.sqrt(0.1 * 0.9 / trials)
    p_conditional = np.array([batch_p_value(int(x), m, 0.0, j, n, confidence) for x in range(m + 1)])[flagged]
    good_sets = rate <= bound
    assert np.mean(p_conditional[good_sets] <= alpha) <= alpha  # for the good calibration sets, at every rate


def test_floor_of_the_allowed_share_is_exact_in_decimal():
    assert [ood_allowance(f, m) for f, m in [(0.29, 100), (0.05, 200), (0.05, 199), (0.0, 10), (1.0, 7)]] == \
        [29, 10, 9, 0, 7]
    assert batch_p_value(29, 100, 0.29, 8, 150, 0.95) == 1.0  # 29 flagged of an allowed 29: no evidence


def test_smallest_failing_batch_is_the_first_where_all_flagged_is_evidence():
    j, n = 8, 150
    for fraction, confidence in [(0.0, 0.95), (0.05, 0.95), (0.2, None), (0.5, 0.9)]:
        m = smallest_failing_batch(fraction, 0.01, j, n, confidence)
        assert batch_p_value(m, m, fraction, j, n, confidence) <= 0.01
        assert all(batch_p_value(k, k, fraction, j, n, confidence) > 0.01 for k in range(1, m))
    assert smallest_failing_batch(1.0, 0.01, j, n, 0.95) is None  # F = 1: nothing is evidence


def test_a_decision_states_its_evidence():
    d = decide(40, 200, 3, j=8, n_calibration=150, max_ood_fraction=0.05, alpha=0.01, confidence=0.95)
    assert not d.passed and d.p_value == batch_p_value(40, 200, 0.05, 8, 150, 0.95)
    assert d.flag_rate == 8 / 151 and d.flag_rate_interval[0] < d.flag_rate < d.flag_rate_interval[1]
    assert d.flag_rate_bound == flag_rate_quantile(8, 150, 0.95) and d.can_fail and d.too_small() is None
    assert d.sentence().startswith("40 of 200 flagged (20.0 %, 3 unreadable counted as OOD); good data is flagged")
    one = decide(1, 1, 0, j=8, n_calibration=150, max_ood_fraction=0.05, alpha=0.01, confidence=0.95)
    assert one.passed and not one.can_fail and "the smallest batch that can fail is 2" in one.too_small()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_conformal_p_values_are_super_uniform_on_exchangeable_data(n, m, seed):
    """For scores exchangeable with the calibration set, P(p <= u) <= u at every u (checked over many draws of
    calibration set and test scores, with ties from rounding)."""
    rng = np.random.default_rng(seed)
    draws = np.round(rng.normal(size=(400, n + m)), 1)  # rounding makes ties: p stays super-uniform
    p = np.stack([conformal_p_values(row[:n], row[n:]) for row in draws])
    grid = np.arange(1, n + 2) / (n + 1)
    observed = np.array([np.mean(p <= u) for u in grid])
    # the m p-values of a draw share its calibration set: their mean varies at most as much as one p-value
    assert np.all(observed <= grid + 4 * np.sqrt(grid * (1 - grid) / draws.shape[0]) + 1e-12)
    assert np.all((p > 0) & (p <= 1))


def test_conformal_p_values_are_exactly_uniform_for_continuous_scores():
    """With n = 3 calibration scores and no ties, p takes 1/4, ..., 4/4 with probability 1/4 each."""
    rng = np.random.default_rng(2)
    draws = rng.random((20_000, 4))
    p = np.array([conformal_p_values(row[:3], row[3:])[0] for row in draws])
    for k in range(1, 5):
        assert abs(np.mean(p == k / 4) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(p))


def test_benjamini_hochberg_by_hand():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    # q = 0.05, m = 10: bounds 0.005, 0.010, 0.015, 0.020, ...; the largest k with p_(k) <= k q / m is 2
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    # q = 0.3: bounds 0.03, 0.06, 0.09, 0.12, 0.15, 0.18, 0.21, 0.24, 0.27, 0.30: all ten pass at k = 10
    assert benjamini_hochberg(p, 0.3).tolist() == [True] * 10
    shuffled = [0.042, 0.001, 0.216, 0.008]  # sorted 0.001, 0.008, 0.042, 0.216; bounds 0.0125, 0.025, 0.0375, 0.05
    assert benjamini_hochberg(shuffled, 0.05).tolist() == [False, True, False, True]  # 0.042 > 0.0375: k = 2
    assert benjamini_hochberg([], 0.1).tolist() == []
