"""The image layout behind the latent and coupling figures is exact (paper, Appendix E).

Latents are un-squeezed back to image shape: ``unsqueeze`` must be the exact inverse of the
model's ``squeeze``, ``z`` must equal a by-hand run that squeezes, factors out and un-squeezes,
coupling maps carried back to the image must chain into ``z``, and a box pushed through the same
squeezes must land on the same pixels.
"""

from __future__ import annotations

import pytest
import torch

import ood_flow
from helpers import randomize
from ood_flow.flows.layers import squeeze, unsqueeze
from ood_flow.visualize import box_mask, coupling_views

F64 = torch.float64


def _flow(name: str, shape=(1, 8, 8), **opts):
    return randomize(ood_flow.create_flow(name, shape, **opts).double()).eval()


MODELS = {
    "realnvp-2": ("realnvp", dict(channels=4, blocks=1, scales=2)),
    "realnvp-3": ("realnvp", dict(channels=4, blocks=1, scales=3)),
    "glow-2": ("glow", dict(channels=4, couplings=2, scales=2)),
    "cycle": ("realnvp", dict(mask="cycle", channels=4, blocks=1, couplings=4)),
    "horizontal": ("realnvp", dict(mask="horizontal", channels=4, blocks=1, couplings=2)),
}


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (3, 3, 8, 6), (1, 8, 2, 2)])
def test_unsqueeze_is_the_exact_inverse_of_squeeze(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=F64)
    assert torch.equal(unsqueeze(squeeze(x)), x)
    y = torch.randn(shape[0], 4 * shape[1], shape[2], shape[3], generator=g, dtype=F64)
    assert torch.equal(squeeze(unsqueeze(y)), y)
    ids = torch.arange(16.0).view(1, 1, 4, 4)  # squeeze: the 2x2 block at (0, 0) becomes 4 channels
    assert squeeze(ids)[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]


def test_realnvp_latent_is_the_unsqueezed_output_of_its_scales():
    flow = _flow("realnvp", channels=4, blocks=1, scales=2)
    x = torch.rand(3, 1, 8, 8, dtype=F64)
    body = flow.body.layers  # 3 checkerboard, Squeeze, 3 channel, FactorOut(4 checkerboard), Unsqueeze
    v, _ = flow.preprocess(x)
    for layer in body[:3]:
        v = layer(v)[0]
    v = squeeze(v)
    for layer in body[4:7]:
        v = layer(v)[0]
    rest, out = v.chunk(2, dim=1)  # as the authors: the first half goes on, the second is factored out
    for layer in body[7].inner.layers:
        rest = layer(rest)[0]
    manual = unsqueeze(torch.cat([rest, out], dim=1))
    torch.testing.assert_close(flow(x)[0], manual, rtol=0, atol=1e-12)


def test_glow_latent_is_the_unsqueezed_output_of_its_scales():
    flow = _flow("glow", channels=4, couplings=2, scales=2)
    x = torch.rand(3, 1, 8, 8, dtype=F64)
    body = flow.body.layers  # Squeeze, 2 x (ActNorm, 1x1, coupling), FactorOut(Squeeze, ..., Unsqueeze), Unsqueeze
    v = squeeze(flow.preprocess(x)[0])
    for layer in body[1:7]:
        v = layer(v)[0]
    out, rest = v.chunk(2, dim=1)
    rest = squeeze(rest)
    for layer in body[7].inner.layers[1:-1]:
        rest = layer(rest)[0]
    manual = unsqueeze(torch.cat([out, unsqueeze(rest)], dim=1))
    torch.testing.assert_close(flow(x)[0], manual, rtol=0, atol=1e-12)


@pytest.mark.parametrize("key", list(MODELS))
def test_coupling_maps_in_image_layout_chain_into_z(key):
    name, opts = MODELS[key]
    flow = _flow(name, **opts)
    x = torch.rand(2, 1, 8, 8, dtype=F64)
    views, z = coupling_views(flow, x)
    records, z_trace = flow.trace(x)
    assert len(views) == len(records) and torch.equal(z, z_trace)
    torch.testing.assert_close(views[-1].output, z, rtol=0, atol=0)  # the last coupling's output, joined, is z
    for view, rec in zip(views, records):
        assert view.input.shape == x.shape and view.cond.shape == x.shape[1:]
        assert int(view.change.sum()) == int(rec["change"].sum()) and int(view.cond.sum()) == int(rec["cond"].sum())
        s_img = view.s[:, view.change].sort(dim=1).values
        s_rec = rec["s"][:, rec["change"]].sort(dim=1).values
        torch.testing.assert_close(s_img, s_rec, rtol=0, atol=0)  # same values, only moved
        assert not (view.s[:, ~view.change] != 0).any()
    if name == "realnvp":  # nothing but squeezes and factor-outs between couplings: each input is the last output
        for before, after in zip(views, views[1:]):
            torch.testing.assert_close(after.input, before.output, rtol=0, atol=0)


def test_coupling_views_record_scales_and_masks():
    views, _ = coupling_views(_flow("realnvp", channels=4, blocks=1, scales=2), torch.rand(1, 1, 8, 8, dtype=F64))
    assert [v.scale for v in views] == [0, 0, 0] + [1] * 7
    assert [v.mask for v in views] == ["checkerboard"] * 3 + ["channel"] * 3 + ["checkerboard"] * 4
    assert views[3].shape == (4, 4, 4) and views[6].shape == (2, 4, 4)
    # the 2x4x4 rest after a factor-out covers half of the pixels: its couplings never touch the other half
    assert int((views[6].cond | views[6].change).sum()) == 32


@pytest.mark.parametrize("key", ["realnvp-2", "realnvp-3", "cycle", "horizontal"])
def test_latent_mask_of_a_box_is_the_box_for_realnvp(key):
    name, opts = MODELS[key]
    flow = _flow(name, **opts)
    for box in (1, 3, 4, 8):
        mask = box_mask((1, 8, 8), box)
        assert torch.equal(flow.latent_mask(mask), mask)


def test_latent_mask_of_a_box_grows_to_whole_squeezed_blocks_for_glow():
    flow = _flow("glow", channels=4, couplings=2, scales=2)
    mask = box_mask((1, 8, 8), 3)  # rows/cols 2..4: not aligned to 2x2 blocks
    latent = flow.latent_mask(mask)
    assert (latent | ~mask).all() and latent.sum() > mask.sum()
    aligned = torch.zeros(1, 8, 8, dtype=torch.bool)
    aligned[:, :4, :4] = True  # one 4x4 block: what two squeezes put at one position
    assert torch.equal(flow.latent_mask(aligned), aligned)


def test_box_mask_is_centred():
    mask = box_mask((1, 28, 28), 10)
    rows, cols = mask[0].nonzero(as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 18, 9, 18) and int(mask.sum()) == 100
