"""Every architecture option takes effect where it is accepted, and is refused (exit 2) where it is not."""

from __future__ import annotations

import pytest

import ood_flow
from cli_helpers import image_npz, one_line_error, run
from ood_flow.errors import UsageError
from ood_flow.flows.coupling import AffineCoupling


def _couplings(flow) -> int:
    return sum(isinstance(m, AffineCoupling) for m in flow.modules())


@pytest.mark.parametrize("mask,extra", [("checkerboard", {"scales": 1}), ("horizontal", {}), ("vertical", {}),
                                        ("cycle", {})])
@pytest.mark.parametrize("count", [8, 3])
def test_couplings_sets_the_count_of_every_single_scale_model(mask, extra, count):
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), mask=mask, couplings=count, channels=4, blocks=1, **extra)
    assert _couplings(flow) == count == flow.config.couplings


def test_single_scale_default_is_the_papers_eight_couplings():
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), mask="cycle", channels=4, blocks=1)
    assert _couplings(flow) == 8


@pytest.mark.parametrize("name,options,named", [
    ("realnvp", {"couplings": 8}, "--couplings"),  # multi-scale: the paper's fixed layout
    ("realnvp", {"hidden": 64}, "--hidden"),
    ("realnvp", {"mask": "cycle", "scales": 2}, "--scales"),
    ("realnvp", {"net": "resnet", "bottleneck": 10}, "--bottleneck"),
    ("glow", {"net": "glow", "blocks": 2}, "--blocks"),
    ("glow", {"mask": "cycle"}, "--mask"),
    ("tabular", {"channels": 8}, "--channels"),
])
def test_options_that_do_not_apply_are_usage_errors_that_name_them(name, options, named):
    shape = (6,) if name == "tabular" else (1, 8, 8)
    with pytest.raises(UsageError, match=named):
        ood_flow.create_flow(name, shape, **options)


def test_options_each_change_the_model():
    base = dict(channels=4, blocks=1)
    n = lambda **kw: sum(p.numel() for p in ood_flow.create_flow("realnvp", (1, 8, 8), **{**base, **kw}).parameters())  # noqa: E731
    assert n(blocks=2) > n() and n(channels=8) > n() and n(scales=3) > n()
    assert n(net="resnet-noskip") < n() and n(net="resnet-noskip", bottleneck=3) > n(net="resnet-noskip")
    g = lambda **kw: ood_flow.create_flow("glow", (1, 8, 8), channels=4, couplings=1, **kw)  # noqa: E731
    assert sum(p.numel() for p in g(blocks=2).parameters()) > sum(p.numel() for p in g(blocks=1).parameters())


def test_bottleneck_alone_picks_the_papers_no_skip_network():
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), bottleneck=5, channels=4, blocks=2)
    assert flow.config.net == "resnet-noskip" and flow.config.bottleneck == 5


@pytest.mark.parametrize("args,named", [
    (["--couplings", "8"], "--couplings"),
    (["--hidden", "32"], "--hidden"),
    (["--model", "glow", "--net", "glow", "--blocks", "2"], "--blocks"),
    (["--bottleneck", "4", "--net", "resnet"], "--bottleneck"),
    (["--mask", "horizontal", "--scales", "2"], "--scales"),
])
def test_cli_exits_2_with_one_line_naming_the_option(tmp_path, args, named):
    data = image_npz(tmp_path / "d.npz")
    result = run("train", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "1", "--quiet", *args, code=2)
    one_line_error(result, named)
    assert not (tmp_path / "m.pt").exists()
