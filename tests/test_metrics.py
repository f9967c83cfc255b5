"""Detection metrics and the typicality test against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ood_flow.errors import InputError
from ood_flow.evaluate import ood_metrics, threshold_at_tpr, typicality_auroc, typicality_batches

# ---------------------------------------------------------------- AUROC / AUPR


def test_perfectly_separated_and_swapped():
    high, low = [5.0, 6.0, 7.0], [1.0, 2.0]
    best = ood_metrics(high, low)
    assert best["auroc"] == 1.0 and best["aupr_in"] == 1.0 and best["aupr_out"] == 1.0
    assert best["fpr95"] == 0.0
    worst = ood_metrics(low, high)
    assert worst["auroc"] == 0.0 and worst["fpr95"] == 1.0


def test_auroc_counts_ties_as_half():
    # pairs (in, ood): (3,2) 1, (3,0) 1, (2,2) 1/2, (2,0) 1, (1,2) 0, (1,0) 1  ->  4.5 / 6
    assert ood_metrics([3.0, 2.0, 1.0], [2.0, 0.0])["auroc"] == pytest.approx(0.75)


def test_aupr_in_and_out_by_hand():
    # ranked by score: 4 in, 3 in, 2 ood, 1 in.
    # AUPR-in (in positive): recall steps 1/3 at precision 1, 1, 3/4  ->  1/3 + 1/3 + 1/4 = 11/12.
    # AUPR-out (ood positive, score negated): ranked 1 in, 2 ood  ->  precision 1/2 at recall 1.
    m = ood_metrics([4.0, 3.0, 1.0], [2.0])
    assert m["auroc"] == pytest.approx(2 / 3)
    assert m["aupr_in"] == pytest.approx(11 / 12)
    assert m["aupr_out"] == pytest.approx(0.5)
    assert (m["n_in"], m["n_ood"]) == (3, 1)


def test_flow_that_prefers_ood_gets_auroc_below_half():
    rng = np.random.default_rng(0)
    m = ood_metrics(rng.normal(-2.0, 1.0, 500), rng.normal(0.0, 1.0, 500))
    assert m["auroc"] < 0.2


# ---------------------------------------------------------------- threshold and FPR


def test_threshold_at_tpr_by_hand():
    assert threshold_at_tpr([1.0, 2.0, 3.0, 4.0], tpr=0.75) == 2.0
    assert threshold_at_tpr([1.0, 2.0, 3.0, 4.0], tpr=0.76) == 1.0
    assert threshold_at_tpr([1.0, 2.0, 3.0, 4.0], tpr=1.0) == 1.0
    assert threshold_at_tpr([5.0, 5.0, 5.0, 1.0], tpr=0.5) == 5.0  # ties: 3/4 accepted
    # 0.28 * 25 evaluates to 7.000000000000001, yet 7 of 25 is 0.28: the 7th largest of 1..25 is 19
    assert threshold_at_tpr(np.arange(1.0, 26.0), tpr=0.28) == 19.0


def test_fpr95_by_hand():
    in_scores = np.arange(1.0, 21.0)  # threshold 2 keeps 19 of 20 = 95 %
    ood = [0.0, 1.5, 2.0, 3.0, 10.0]  # 2.0, 3.0 and 10.0 are accepted
    m = ood_metrics(in_scores, ood)
    assert m["threshold"] == 2.0
    assert m["fpr95"] == m["fpr_at_tpr"] == pytest.approx(0.6)
    assert m["tpr_achieved"] == pytest.approx(0.95)
    m90 = ood_metrics(in_scores, ood, tpr=0.9)  # 18 of 20: threshold 3, accepts 3.0 and 10.0
    assert m90["threshold"] == 3.0 and m90["fpr95"] == pytest.approx(0.4)


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.integers(-5, 5).map(float) | st.floats(-1e6, 1e6) | st.just(-np.inf), min_size=1, max_size=60),
    tpr=st.floats(0.01, 1.0),
)
def test_threshold_definition(scores, tpr):
    s = np.array(scores)
    t = threshold_at_tpr(s, tpr)
    assert t in s
    assert np.mean(s >= t) >= tpr
    larger = np.unique(s[s > t])
    if len(larger):
        assert np.mean(s >= larger[0]) < tpr  # the next distinct value already falls short


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.01])
def test_threshold_rejects_bad_tpr(tpr):
    with pytest.raises(ValueError, match="tpr"):
        threshold_at_tpr([1.0, 2.0], tpr)


# ---------------------------------------------------------------- non-finite and empty input


def test_minus_inf_is_the_most_ood_score():
    m = ood_metrics([0.0, -1.0, -2.0], [-np.inf, -np.inf, -5.0])
    assert m["auroc"] == 1.0 and m["aupr_out"] == 1.0 and m["fpr95"] == 0.0
    # -inf in the in-distribution set: ranked below every finite OOD score, tied with -inf OOD
    m = ood_metrics([0.0, -np.inf], [-1.0, -np.inf])
    assert m["auroc"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert m["threshold"] == -np.inf and m["fpr95"] == 1.0


def test_extreme_finite_scores_keep_their_order():
    # clipping -inf to the most negative float would tie it with -fmax (AUROC 0.75)
    fmax = np.finfo(np.float64).max
    m = ood_metrics([-fmax, fmax], [-np.inf, -np.inf])
    assert m["auroc"] == 1.0 and m["aupr_out"] == 1.0


def test_nan_is_an_error_naming_the_group():
    with pytest.raises(InputError, match="mnist-test: 2 of 4 scores are NaN"):
        ood_metrics([1.0, 2.0], [np.nan, 1.0, np.nan, 0.0], ood_name="mnist-test")
    with pytest.raises(InputError, match="in-distribution: 1 of 2 scores are NaN"):
        threshold_at_tpr([np.nan, 1.0])


def test_empty_is_an_error():
    with pytest.raises(InputError, match="fmnist-test: no scores"):
        ood_metrics([], [1.0], in_name="fmnist-test")


# ---------------------------------------------------------------- typicality


def test_typicality_statistic_by_hand():
    # H = -mean(reference) = 10; the only batch possible from [-10] is exactly typical
    assert typicality_batches([-9.0, -11.0], [-10.0], 3, n_batches=4).tolist() == [0.0] * 4
    stats = typicality_batches([-9.0, -11.0], [-4.0], 2, n_batches=3)
    assert stats.tolist() == [6.0] * 3


def test_typicality_batches_are_reproducible():
    rng = np.random.default_rng(1)
    ref, group = rng.normal(-100, 5, 300), rng.normal(-100, 5, 200)
    a = typicality_batches(ref, group, 10, n_batches=50, seed=3)
    assert a.shape == (50,)
    assert np.array_equal(a, typicality_batches(ref, group, 10, n_batches=50, seed=3))
    assert not np.array_equal(a, typicality_batches(ref, group, 10, n_batches=50, seed=4))


def test_typicality_detects_higher_likelihood_ood():
    rng = np.random.default_rng(0)
    reference, in_ll = rng.normal(-100, 5, 2000), rng.normal(-100, 5, 1000)
    ood_ll = rng.normal(-90, 1, 1000)  # more likely than in-distribution, but atypical
    assert ood_metrics(in_ll, ood_ll)["auroc"] < 0.1  # the plain likelihood test fails
    m = typicality_auroc(reference, in_ll, ood_ll, batch_size=25, n_batches=500)
    assert m["auroc"] > 0.99
    assert m["n_in"] == m["n_ood"] == 500 and m["batch_size"] == 25
    assert m["entropy"] == pytest.approx(-reference.mean())
    assert m["statistic_threshold"] == -m["threshold"] > 0


def test_typicality_single_samples_from_one_distribution_are_chance():
    rng = np.random.default_rng(0)
    reference, in_ll, ood_ll = (rng.normal(-100, 5, 2000) for _ in range(3))
    m = typicality_auroc(reference, in_ll, ood_ll, batch_size=1, n_batches=4000)
    assert abs(m["auroc"] - 0.5) < 0.03


def test_typicality_minus_inf_batch_is_maximally_atypical():
    stats = typicality_batches([-1.0, -2.0], [-np.inf], 2, n_batches=2)
    assert np.isinf(stats).all()
    with pytest.raises(InputError, match="reference: 1 of 2 log-likelihoods are infinite"):
        typicality_batches([-np.inf, -1.0], [-1.0], 2)
    with pytest.raises(ValueError, match="batch_size"):
        typicality_batches([-1.0], [-1.0], 0)
