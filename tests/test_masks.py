"""Each mask changes exactly the positions it should, for any even size and 1 or 3 channels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import randomize
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.flows.masks import MASKS, create_mask, quadrants
from ood_flow.flows.nets import create_net

SPATIAL = ("checkerboard", "horizontal", "vertical", "cycle")


def _coupling(mask, shape, index):
    def make(cin, cout, spatial, checkerboard=False):
        return create_net("resnet", cin, cout, spatial, channels=4, blocks=1, double_input=checkerboard)

    return randomize(AffineCoupling(create_mask(mask, shape, index), shape, make).double()).eval()


@settings(max_examples=25, deadline=None)
@given(mask=st.sampled_from(SPATIAL + ("channel",)), c=st.sampled_from([1, 3]),
       h=st.integers(1, 6).map(lambda n: 2 * n), w=st.integers(1, 6).map(lambda n: 2 * n), index=st.integers(0, 7))
def test_coupling_changes_exactly_the_change_part(mask, c, h, w, index):
    shape = (c * 4, h, w) if mask == "channel" else (c, h, w)
    layer = _coupling(mask, shape, index)
    cond, change = layer.mask.parts(shape)
    assert not (cond & change).any() and change.any() and cond.any()
    x = torch.rand(2, *shape, dtype=torch.float64)
    y, _ = layer(x)
    assert torch.equal(y[:, ~change], x[:, ~change]), "positions outside the changed part must pass through exactly"
    assert (y[:, change] != x[:, change]).all()
    # the st-network sees only the conditioning part: perturbing anything else leaves s and t alone
    x2 = torch.where(cond, x, torch.rand_like(x))
    records_a, records_b = [], []
    layer.trace(x, records_a)
    layer.trace(x2, records_b)
    torch.testing.assert_close(records_a[0]["s"], records_b[0]["s"])
    torch.testing.assert_close(records_a[0]["t"], records_b[0]["t"])


def test_checkerboard_alternates_and_covers_everything():
    a, b = create_mask("checkerboard", (1, 4, 4), 0), create_mask("checkerboard", (1, 4, 4), 1)
    ca, xa = a.parts((1, 4, 4))
    cb, xb = b.parts((1, 4, 4))
    assert torch.equal(ca, xb) and torch.equal(xa, cb) and torch.equal(ca | xa, torch.ones(1, 4, 4, dtype=torch.bool))
    assert ca[0, 0, 0] and not ca[0, 0, 1] and not ca[0, 1, 0]


def test_horizontal_and_vertical_halves():
    cond, change = create_mask("horizontal", (1, 6, 4), 0).parts((1, 6, 4))
    assert cond[0, :3].all() and change[0, 3:].all()
    cond, change = create_mask("horizontal", (1, 6, 4), 1).parts((1, 6, 4))
    assert change[0, :3].all() and cond[0, 3:].all()
    cond, change = create_mask("vertical", (3, 4, 6), 0).parts((3, 4, 6))
    assert cond[:, :, :3].all() and change[:, :, 3:].all()


def test_cycle_mask_goes_round_the_quadrants():
    q = quadrants(4, 4)
    assert q[0][0, 0] and q[1][0, 3] and q[2][3, 3] and q[3][3, 0]
    for i in range(8):
        cond, change = create_mask("cycle", (1, 4, 4), i).parts((1, 4, 4))
        assert torch.equal(cond[0], q[i % 4]) and torch.equal(change[0], q[(i + 1) % 4])
    # four layers are needed before information returns to the quadrant it came from
    changed_from = [create_mask("cycle", (1, 4, 4), i).parts((1, 4, 4))[1][0] for i in range(4)]
    assert torch.equal(changed_from[3], q[0])


def test_channel_mask_halves_and_alternates():
    cond, change = create_mask("channel", (4, 2, 2), 0).parts((4, 2, 2))
    assert cond[:2].all() and change[2:].all() and not cond[2:].any()
    cond, change = create_mask("channel", (5,), 1).parts((5,))
    assert change.tolist() == [True, True, False, False, False]


@pytest.mark.parametrize("mask,shape", [("horizontal", (1, 5, 4)), ("vertical", (1, 4, 5)), ("cycle", (1, 5, 4))])
def test_odd_sizes_are_rejected_clearly(mask, shape):
    with pytest.raises(ValueError, match="even"):
        create_mask(mask, shape, 0)


def test_unknown_mask_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid masks: " + ", ".join(MASKS)):
        create_mask("diagonal", (1, 4, 4), 0)


def test_masks_are_buffers_built_once():
    layer = _coupling("checkerboard", (1, 4, 4), 0)
    buffers = dict(layer.mask.named_buffers())
    assert set(buffers) == {"cond", "change"}
    ptr = buffers["cond"].data_ptr()
    layer(torch.rand(2, 1, 4, 4, dtype=torch.float64))
    assert layer.mask.cond.data_ptr() == ptr
