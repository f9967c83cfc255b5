"""The paper's models as the authors build them: parameter counts, st-network formula, mask orientation.

The totals 14,707,336 and 87,859,080 (RealNVP) and 69,378,048 and 208,932,480 (Glow) are what the
authors' code (PolinaKirichenko/flows_ood) builds with the paper's settings (Appendix C). Parameter
counts do not depend on the image size (no layer but the bottleneck sees it), so small inputs
stand in for 28x28 and 32x32 where a forward pass is run.
"""

from __future__ import annotations

import pytest
import torch

from ood_flow.flows import create_flow
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.flows.layers import FactorOut
from ood_flow.flows.resnet import ResNetST, parameter_count


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _couplings(flow) -> list[AffineCoupling]:
    return [m for m in flow.modules() if isinstance(m, AffineCoupling)]


def test_st_network_formula_against_a_hand_count():
    # c = 1 conditioning channel, m = 4 hidden channels, B = 1 block, with the skip path:
    #   input batch norm 2; input conv 4*2*9 weights + 4 g + 4 bias = 80
    #   block: 2 batch norms 8 + 8; 3x3 conv without bias 144 + 4; 3x3 conv 144 + 4 + 4       = 316
    #   skip path: 2 x (1x1 conv 16 + 4 + 4) = 48; output batch norm 8; output conv 8 + 2 + 2 = 12
    hand = 2 + 80 + 316 + 48 + 8 + 12
    assert hand == 466 == parameter_count(1, 4, 1) == _count(ResNetST(1, 2, (8, 8), channels=4, blocks=1))
    # without the skip path, with a bottleneck l = 3 on a 4x4 map (64 numbers): 64*3 + 3 + 3*64 + 64 = 451
    no_skip = ResNetST(1, 2, (4, 4), channels=4, blocks=1, skip=False, bottleneck=3)
    assert hand - 48 + 451 == parameter_count(1, 4, 1, skip=False, bottleneck=3, spatial=(4, 4)) == _count(no_skip)


@pytest.mark.parametrize("c,m,blocks,skip,batchnorm", [(2, 8, 0, True, True), (3, 16, 3, False, True),
                                                      (6, 8, 2, True, False)])
def test_st_network_formula_matches_the_modules(c, m, blocks, skip, batchnorm):
    net = ResNetST(c, 2 * c, (4, 4), channels=m, blocks=blocks, skip=skip, batchnorm=batchnorm)
    assert _count(net) == parameter_count(c, m, blocks, skip=skip, batchnorm=batchnorm)


def test_grayscale_realnvp_has_the_authors_parameter_count():
    flow = create_flow("realnvp", (1, 28, 28))
    cfg = flow.config
    assert (cfg.scales, cfg.channels, cfg.blocks, cfg.net) == (2, 64, 6, "resnet")
    assert _count(flow) == 14_707_336
    small = create_flow("realnvp", (1, 8, 8), scales=2, channels=64, blocks=6)
    assert _count(small) == 14_707_336
    assert torch.isfinite(small.eval().log_prob(torch.rand(2, 1, 8, 8))).all()


def test_colour_realnvp_has_the_authors_parameter_count():
    flow = create_flow("realnvp", (3, 32, 32))
    assert (flow.config.scales, flow.config.blocks) == (3, 8)
    assert _count(flow) == 87_859_080


def test_realnvp_total_is_the_formula_summed_over_its_couplings():
    """Per scale 3 checkerboard couplings at width m and 3 channel-wise at 2m; the width stays doubled."""
    flow = create_flow("realnvp", (1, 8, 8), scales=2, channels=8, blocks=2)
    widths = [c.net.in_conv.weight_v.shape[0] for c in _couplings(flow)]
    assert widths == [8] * 3 + [16] * 3 + [16] * 4
    conditioning = [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    expected = sum(parameter_count(c, m, 2) + 2 * c for c, m in zip(conditioning, widths))
    assert _count(flow) == expected


@pytest.mark.parametrize("shape,total", [((1, 28, 28), 69_378_048), ((3, 32, 32), 208_932_480)])
def test_glow_has_the_authors_parameter_count(shape, total):
    with torch.device("meta"):  # hundreds of millions of parameters: count them without memory
        flow = create_flow("glow", shape)
    assert _count(flow) == total


def test_section7_mask_models_have_the_same_size():
    """8 couplings, no squeeze, the same st-network for every mask (Section 7)."""
    counts = {}
    for mask in ("checkerboard", "horizontal", "cycle"):
        scales = {"scales": 1} if mask == "checkerboard" else {}
        flow = create_flow("realnvp", (1, 28, 28), mask=mask, channels=8, blocks=1, **scales)
        assert len(_couplings(flow)) == 8 and flow.config.net == "resnet"
        counts[mask] = _count(flow)
    assert len(set(counts.values())) == 1
    assert counts["cycle"] == 8 * (parameter_count(1, 8, 1) + 2)


@pytest.mark.parametrize("dim", [10, 50, 100])
def test_section7_bottleneck_models(dim):
    flow = create_flow("realnvp", (1, 28, 28), mask="checkerboard", scales=1, channels=4, blocks=2, bottleneck=dim)
    assert flow.config.net == "resnet-noskip"
    per = parameter_count(1, 4, 2, skip=False, bottleneck=dim, spatial=(28, 28)) + 2
    assert _count(flow) == 8 * per
    assert torch.isfinite(flow.eval().log_prob(torch.rand(2, 1, 28, 28))).all()


def test_masks_and_factor_out_follow_the_authors_orientation():
    """Their first checkerboard coupling conditions on pixels with i + j odd (top-left changes), their
    first channel-wise coupling changes the first half of the channels, and their factor-out keeps the
    first half for the next scale; oodflow's default RealNVP does the same."""
    flow = create_flow("realnvp", (1, 4, 4), scales=2, channels=4, blocks=1)
    first = flow.body.layers[0].mask
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    assert torch.equal(first.cond[0, 0].bool(), (i + j) % 2 == 1)
    channel = flow.body.layers[4].mask
    assert channel.change_range == (0, 2) and channel.cond_range == (2, 4)
    factor_out = flow.body.layers[7]
    assert isinstance(factor_out, FactorOut) and factor_out.inner_first
    x = torch.arange(8.0).view(1, 8, 1, 1)
    out, rest = factor_out.split(x)
    assert rest.flatten().tolist() == [0, 1, 2, 3] and out.flatten().tolist() == [4, 5, 6, 7]
