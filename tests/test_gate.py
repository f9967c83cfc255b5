"""The gate's threshold against its definition, its flags, and the FILE:GROUP syntax."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ood_flow.errors import InputError
from ood_flow.score.gate import fit_gate, ood_fraction, parse_reference

scores = st.lists(st.integers(-20, 20).map(float), min_size=1, max_size=60)  # small integers: many ties
tprs = st.floats(0.01, 1.0)


@settings(max_examples=120, deadline=None)
@given(scores, tprs)
def test_threshold_keeps_tpr_of_the_reference_and_is_the_largest_that_does(ref, tpr):
    gate = fit_gate(ref, tpr, score="log_likelihood", reference="r.h5:val")
    ref = np.asarray(ref)
    assert gate.threshold in ref
    assert np.mean(ref >= gate.threshold) >= tpr
    assert gate.tpr_achieved == np.mean(ref >= gate.threshold)
    higher = ref[ref > gate.threshold]
    if len(higher):  # the next score up keeps less than tpr: no larger threshold qualifies
        assert np.mean(ref >= higher.min()) < tpr
    flagged = gate.flags(ref)
    assert ood_fraction(flagged) <= 1 - tpr + 1e-12


@settings(max_examples=60, deadline=None)
@given(scores, tprs, st.lists(st.floats(-30, 30), min_size=1, max_size=30))
def test_is_ood_is_exactly_score_below_threshold(ref, tpr, incoming):
    gate = fit_gate(ref, tpr, score="s", reference="r.h5:val")
    flags = gate.flags(incoming)
    assert flags.dtype == bool
    assert flags.tolist() == [s < gate.threshold for s in incoming]


def test_threshold_by_hand_and_nan_never_passes():
    gate = fit_gate([1.0, 2.0, 3.0, 4.0], 0.75, score="log_likelihood", reference="ref.h5:val")
    assert gate.threshold == 2.0 and gate.n_reference == 4 and gate.tpr_achieved == 0.75
    flags = gate.flags([1.999, 2.0, 5.0, math.nan, -math.inf, math.inf]).tolist()
    assert flags == [True, False, False, True, True, False]
    assert fit_gate([1.0, 2.0, 3.0, 4.0], 1.0, score="s", reference="r").threshold == 1.0
    # 0.95 * 20 = 19.000000000000004 in floating point: 19 of 20 must still be enough
    assert fit_gate(np.arange(20.0), 0.95, score="s", reference="r").threshold == 1.0


def test_gate_attributes_record_threshold_and_outcome():
    gate = fit_gate([1.0, 2.0, 3.0, 4.0], 0.5, score="waic", reference="ref.h5:val")
    attrs = gate.attrs(gate.flags([0.0, 1.0, 3.0, 4.0]))
    assert attrs == {"threshold": 3.0, "threshold_tpr": 0.5, "threshold_tpr_achieved": 0.5,
                     "threshold_reference": "ref.h5:val", "threshold_score": "waic", "threshold_from": "reference",
                     "calibration_n": 4, "calibration_source": "", "ood_fraction": 0.5, "n_ood": 2,
                     "flags_by": "threshold"}
    assert fit_gate([1.0], 0.5, score="s", reference="m.pt's validation split", origin="model").attrs(
        np.zeros(1, bool))["threshold_from"] == "model"
    assert ood_fraction(np.zeros(0, bool)) == 0.0


def test_bad_reference_scores_and_tpr():
    with pytest.raises(InputError, match="r.h5:val: 1 of 2 scores are NaN"):
        fit_gate([1.0, math.nan], 0.9, score="s", reference="r.h5:val")
    with pytest.raises(ValueError, match="tpr must be in"):
        fit_gate([1.0], 0.0, score="s", reference="r")


def test_reference_splits_at_the_last_colon():
    assert parse_reference("ref.h5:val") == ("ref.h5", "val")
    assert parse_reference("runs/2024-01-01T10:00/ref.h5:fashionmnist-val") == ("runs/2024-01-01T10:00/ref.h5",
                                                                               "fashionmnist-val")
    for bad in ("ref.h5", "ref.h5:", ":val", ""):
        with pytest.raises(ValueError, match="FILE:GROUP"):
            parse_reference(bad)
