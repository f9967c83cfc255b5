"""The fused scoring path against the plain modules, on every image model and st-network, in float32.

The fused path's log-likelihoods must be no further from a float64 reference than float rounding
allows (twice the plain float32 path's own error, plus 1e-6 relative), equal between ``no_grad``
and ``inference_mode``, and finite. Weights and batch-norm statistics are random, so no layer is the
identity.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ood_flow.device import bf16_supported
from ood_flow.flows import create_flow, fused
from ood_flow.flows.layers import ActNorm
from ood_flow.runtime import Runtime

SMALL = {"channels": 16, "blocks": 2}
CASES = [
    ("realnvp", (1, 28, 28), {}),
    ("realnvp", (1, 28, 28), {"batchnorm": False, **SMALL}),
    ("realnvp", (3, 32, 32), {"mask": "cycle", "bottleneck": 8, **SMALL}),
    ("realnvp", (1, 28, 28), {"mask": "horizontal", "couplings": 3, **SMALL}),
    ("glow", (1, 28, 28), {"net": "glow", "batchnorm": False, "channels": 64, "couplings": 2}),
    ("glow", (1, 28, 28), {"net": "glow", "batchnorm": True, "channels": 32, "couplings": 2}),
    ("glow", (3, 32, 32), {"net": "glow", "channels": 32, "couplings": 2, "bottleneck": 6}),
    ("glow", (1, 28, 28), {"channels": 32, "couplings": 2}),  # highway: runs its own modules
    ("realnvp", (3, 8, 8), {"channels": 8, "blocks": 1, "net": "resnet-noskip", "bottleneck": 4, "mask": "cycle",
                            "couplings": 2}),
    ("realnvp", (1, 8, 8), {"channels": 8, "blocks": 1, "batchnorm": False, "scales": 1, "couplings": 2}),
    ("realnvp", (1, 8, 8), {"channels": 8, "blocks": 1, "net": "resnet-v1"}),
]


@torch.no_grad()
def randomize(flow: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in flow.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.01)
    for m in flow.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    return Runtime().prepare(flow).eval()


def test_the_fused_kernel_exists_in_this_torch_build():
    assert fused.find_kernel() is not None, "without it the fused path is the plain path, compared with itself"


@pytest.mark.parametrize("name, shape, opts", CASES, ids=[f"{n}-{'x'.join(map(str, s))}-{o}" for n, s, o in CASES])
def test_fused_path_matches_the_plain_modules(name, shape, opts):
    torch.manual_seed(0)
    flow = randomize(create_flow(name, shape, **opts))
    x = torch.rand(4, *shape)
    with torch.inference_mode():
        fast = flow.log_prob(x)
        path = fused.path_of(flow)
        with path.disabled() if path is not None else contextlib.nullcontext():
            plain = flow.log_prob(x)
        ref = copy.deepcopy(flow).double().log_prob(x.double())
    with torch.no_grad():
        fast_no_grad = flow.log_prob(x)
    err_fast = ((fast.double() - ref).abs() / ref.abs()).max().item()
    err_plain = ((plain.double() - ref).abs() / ref.abs()).max().item()
    assert torch.isfinite(fast).all()
    assert torch.equal(fast, fast_no_grad)
    assert err_fast <= 2 * err_plain + 1e-6, f"fused {err_fast:.1e} vs plain {err_plain:.1e} relative error"


def test_stats_show_the_fused_kernel_ran_for_scoring_and_why_training_did_not_use_it():
    flow = randomize(create_flow("realnvp", (1, 8, 8), channels=8, blocks=2, scales=2))
    x = torch.rand(4, 1, 8, 8)
    path = fused.path_of(flow)
    with torch.no_grad():
        flow.log_prob(x)
    stats = path.stats()
    assert stats["fused_calls"] == 10 and stats.get("plain_calls", 0) == 0  # one per coupling
    assert stats["fused_kernel_convs"] == 10 * 2  # each block's first conv + batch norm + ReLU, 2 blocks
    assert stats["fused_sum_convs"] == 10 * (2 + 2)  # each block's last conv and the skip path after it
    path.reset_stats()
    flow.train()
    flow.log_prob(x)  # gradients on: the plain modules, counted with the reason
    assert path.stats()["plain:grad"] == 10 and "fused_calls" not in path.stats()


@pytest.mark.parametrize("options", [{"channels": 16, "blocks": 2},
                                     {"channels": 16, "blocks": 2, "net": "resnet-noskip"}])
def test_kernels_with_relu_and_sum_inside_give_the_bits_of_separate_passes(options):
    flow = randomize(create_flow("realnvp", (1, 28, 28), **options)).eval()
    path, x = fused.path_of(flow), torch.rand(8, 1, 28, 28)
    assert path.kernel is not None, "without oneDNN's kernel both runs would take the same separate passes"
    with torch.inference_mode():
        inside = flow.log_prob(x)
        assert path.stats()["fused_sum_convs"] > 0
        path.kernel = None  # the same folded weights, each convolution, ReLU and sum a pass of its own
        separate = flow.log_prob(x)
    assert torch.equal(inside, separate)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_vector_flows_score_through_the_fused_path_with_the_plain_modules_bits(batchnorm):
    torch.manual_seed(0)
    flow = randomize(create_flow("tabular", (24,), couplings=4, hidden=32, layers=2, batchnorm=batchnorm))
    path, x = fused.path_of(flow), torch.randn(64, 24)
    with torch.inference_mode(), Runtime(st="fp32").st_networks():
        fast = flow.log_prob(x)
        with path.disabled():
            plain = flow.log_prob(x)
    assert path.stats()["fused_calls"] == 4 and torch.equal(fast, plain)


@pytest.mark.parametrize("features, opts", [(25, {"couplings": 5, "hidden": 16, "layers": 1}),
                                             (24, {"couplings": 4, "hidden": 32, "layers": 2, "batchnorm": True}),
                                             (7, {"couplings": 3, "hidden": 8, "layers": 1, "whiten": True})])
def test_a_chain_of_vector_couplings_runs_as_one_with_the_plain_modules_bits(features, opts):
    """The whole body in one go (the halves kept apart from the first coupling to the last, odd widths
    included): the same numbers as each coupling run on its own, fused or plain, and it is the path taken."""
    torch.manual_seed(0)
    flow = randomize(create_flow("tabular", (features,), **opts))
    path, x = fused.path_of(flow), torch.randn(64, features)
    given = x.clone()
    assert fused.vector_chain(flow.body) and flow.body.fused is path
    with torch.inference_mode(), Runtime(st="fp32").st_networks():
        chain = flow.log_prob(x)
        assert torch.equal(x, given)  # the chain computes s and exp(s) in place, never in its input
        assert path.stats()["fused_chains"] == 1 and path.stats()["fused_calls"] == opts["couplings"]
        flow.body.fused = None  # each coupling on its own, its st-network through the fused path
        single = flow.log_prob(x)
        with path.disabled():
            plain = flow.log_prob(x)
    assert torch.equal(chain, single) and torch.equal(chain, plain)


def test_only_chains_of_couplings_on_vectors_are_run_as_one():
    flows = [create_flow("realnvp", (1, 8, 8), channels=4, blocks=1, scales=1, couplings=2),
             create_flow("glow", (1, 8, 8), channels=4, scales=1, couplings=2, net="glow"),
             create_flow("gaussian", (5,))]
    chains = [m for f in flows for m in f.modules() if fused.vector_chain(m)]
    assert chains == [] and fused.vector_chain(create_flow("tabular", (5,), couplings=2).body)
    tabular = create_flow("tabular", (5,), couplings=2).body
    assert not fused.step_chain(tabular) and all(fused.step_chain(f.body) for f in flows[:2])


@pytest.mark.parametrize("name, opts", [
    ("glow", {"net": "glow", "channels": 16, "scales": 2, "couplings": 2}),
    ("glow", {"net": "glow", "channels": 16, "scales": 1, "couplings": 3, "batchnorm": False}),
    ("realnvp", {"channels": 8, "blocks": 1, "scales": 2}),
])
@pytest.mark.parametrize("st", ["fp32", "bf16"])
def test_the_steps_of_an_image_flow_run_with_kept_parameters_and_the_plain_modules_bits(name, opts, st):
    """Glow's steps and RealNVP's couplings (every scale's chain, factor-outs inside) take run_steps once
    prepared, and give the same bits as the same layers run one by one, fused st-networks or plain, in float32
    and under bf16; the input is left as it was."""
    if st == "bf16" and not bf16_supported("cpu"):
        pytest.skip("this CPU runs no bfloat16 at all")
    torch.manual_seed(0)
    flow = randomize(create_flow(name, (1, 8, 8), **opts)).eval()
    path, x = fused.path_of(flow), torch.rand(16, 1, 8, 8)
    given = x.clone()
    chains = [m for m in flow.modules() if fused.step_chain(m)]
    assert chains and all(c.fused is path for c in chains)
    with torch.inference_mode(), Runtime(st=st).st_networks():
        steps = flow.log_prob(x)
        assert torch.equal(x, given)
        assert path.stats()["fused_step_chains"] == len(chains)
        for c in chains:
            c.fused = None  # each layer on its own, its st-network through the fused path
        single = flow.log_prob(x)
        if st == "fp32":
            with path.disabled():
                plain = flow.log_prob(x)
            assert torch.equal(steps, plain)
    assert torch.equal(steps, single)


def test_the_steps_are_not_run_with_gradients_or_in_training_and_a_changed_parameter_is_seen():
    torch.manual_seed(0)
    flow = randomize(create_flow("glow", (1, 8, 8), net="glow", channels=8, scales=1, couplings=2))
    path, x = fused.path_of(flow), torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        flow.train().log_prob(x)  # training mode: ActNorm's own forward (which may initialise from the batch)
    assert "fused_step_chains" not in path.stats() and path.stats()["plain:training-mode"] > 0
    flow.eval().log_prob(x).sum().backward()
    assert "fused_step_chains" not in path.stats()
    body = flow.body.layers
    norm, mix = body[1], body[2]
    with torch.no_grad():
        before = flow.log_prob(x)
        norm.log_scale.add_(0.1)  # in place, as an optimiser step
        mix.lu.mul_(1.1)
        after = flow.log_prob(x)
        with path.disabled():
            plain = flow.log_prob(x)
    assert path.stats()["fused_step_chains"] == 2 and not torch.allclose(before, after)
    assert torch.equal(after, plain)


def test_the_chain_is_not_taken_with_gradients_and_a_changed_scale_factor_is_seen():
    torch.manual_seed(0)
    flow = randomize(create_flow("tabular", (10,), couplings=4, hidden=16, layers=1))
    path, x = fused.path_of(flow), torch.randn(32, 10)
    flow.log_prob(x).sum().backward()  # training: every coupling's own modules, counted per st-network
    assert path.stats()["plain:grad"] == 4 and "fused_chains" not in path.stats()
    with torch.no_grad():
        before = flow.log_prob(x)
        flow.body.layers[1].rescale.weight_g.mul_(1.5)  # in place, as an optimiser step
        after = flow.log_prob(x)
        with path.disabled():
            plain = flow.log_prob(x)
    assert path.stats()["fused_chains"] == 2 and not torch.equal(before, after) and torch.equal(after, plain)


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16 at all")
def test_bf16_chain_gives_each_coupling_on_its_own_but_for_tanh_through_the_sigmoid():
    """The chain's one difference under bf16 (the st-networks' outputs are the same bits): ``tanh`` of the scale
    bound as ``2 sigmoid(2 raw) - 1``, within about 1e-7 of it per dimension."""
    torch.manual_seed(0)
    flow = randomize(create_flow("tabular", (24,), couplings=4, hidden=32, layers=2))
    x = torch.randn(64, 24)
    with torch.inference_mode(), Runtime(st="bf16").st_networks():
        chain = flow.log_prob(x)
        flow.body.fused = None
        single = flow.log_prob(x)
    assert fused.path_of(flow).stats()["fused_chains"] == 1
    assert (chain - single).abs().max() <= 24 * 4 * 1e-6 and not torch.equal(chain, single)


def test_tanh_through_the_sigmoid_is_within_1e7_of_tanh_times_the_factor():
    torch.manual_seed(0)
    flow = create_flow("tabular", (8,), couplings=1, hidden=8, layers=1)
    coupling = flow.body.layers[0]
    raw = torch.cat([torch.linspace(-30, 30, 4001), torch.tensor([0.0, 1e-30, -1e-30, 1e30, -1e30])])
    out = torch.cat([raw[:, None].expand(-1, 4), torch.zeros(len(raw), 4)], dim=1)  # raw for each changed, then t
    factor = torch.tensor([[0.5, 1.0, 2.0, 3.0]])
    with torch.no_grad():
        exact, _ = coupling.scale_shift(out.clone(), factor)
        fast, _ = coupling.scale_shift(out.clone(), factor, inplace=True, via_sigmoid=True)
    assert (fast - exact).abs().max() <= 2.5e-7 * factor.max() and torch.isfinite(fast).all()


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16 at all")
@pytest.mark.parametrize("batchnorm", [False, True])
def test_bf16_vector_flows_score_through_onednn_linear_kernels_as_close_to_fp32_as_the_plain_modules(batchnorm):
    """Each linear layer through oneDNN's kernel (weights cast once, the ReLU inside, the bias in float32 where
    the plain module rounds it to bf16), batches of two sizes with the same kept weights."""
    torch.manual_seed(0)
    flow = randomize(create_flow("tabular", (24,), couplings=4, hidden=32, layers=2, batchnorm=batchnorm))
    path, x = fused.path_of(flow), torch.randn(64, 24)
    assert path.kernel is not None, "oneDNN's kernels are what this test is about"
    with torch.inference_mode():
        exact = flow.log_prob(x)
        path.reset_stats()
        with Runtime(st="bf16").st_networks():
            fast = torch.cat([flow.log_prob(x[:50]), flow.log_prob(x[50:])])
            with path.disabled():
                plain = flow.log_prob(x)
    assert path.stats()["fused_kernel_linears"] == 2 * 4 * 3 and path.stats()["fused_calls"] == 2 * 4
    assert (fast - exact).abs().mean() <= 1.25 * (plain - exact).abs().mean()


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16 at all")
def test_bf16_scoring_through_the_fused_path_is_as_close_to_fp32_as_the_plain_modules():
    """A batch norm's shift folded into a convolution's bias, rounded to bf16, moved every output of a channel
    the same way: errors that add up over a log-determinant instead of averaging out (0.015 bits/dim on a
    trained model against 0.0014 for the plain modules). The bias stays float32 in the kernel."""
    torch.manual_seed(0)
    flow = randomize(create_flow("realnvp", (1, 16, 16), channels=16, blocks=2, scales=2))
    for m in flow.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.add_(40.0)  # large shifts: large folded biases, as trained models have
    path, x, rt = fused.path_of(flow), torch.rand(64, 1, 16, 16), Runtime(st="bf16")
    with torch.inference_mode():
        exact = flow.log_prob(x)
        with rt.st_networks():
            fast = flow.log_prob(x)
            with path.disabled():
                plain = flow.log_prob(x)
    assert (fast - exact).abs().mean() <= 2 * (plain - exact).abs().mean()


def _split_case(cin: int, cout: int, kernel: int, batchnorm: bool, seed: int = 0):
    """A narrow st-network convolution (weight-normalised if kernel == 1, as the authors' last one), perhaps with
    a batch norm of large statistics after it, and its float32 kernel and bias as the fused path folds them."""
    from ood_flow.flows.precision import STConv2d
    from ood_flow.flows.weightnorm import WNConv2d

    g = torch.Generator().manual_seed(seed)
    conv = WNConv2d(cin, cout, kernel) if kernel == 1 else STConv2d(cin, cout, kernel, padding=kernel // 2)
    bn = nn.BatchNorm2d(cout).eval() if batchnorm else None
    with torch.no_grad():
        for p in conv.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        if bn is not None:
            bn.running_mean.copy_(torch.randn(cout, generator=g) * 5)
            bn.running_var.copy_(torch.rand(cout, generator=g) + 0.5)
    weight, bias = fused._fold(conv, bn, torch.float32, torch.contiguous_format)
    return conv, bn, weight, bias


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16 at all")
@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("cout, width", [(4, 10), (4, 9), (8, 10)])
def test_split_narrowing_convolution_keeps_the_kernel_exact_where_plain_bf16_loses_it_to_cancellation(kernel,
                                                                                                      batchnorm,
                                                                                                      cout, width):
    """A trained last layer sums many terms that nearly cancel, so rounding its kernel to bf16 moves the result
    by far more than a bf16 step of it; the split kernel keeps float32's accuracy, and what is left is the
    rounding of the convolution's output to bf16 (half a step of it), as every bf16 layer's output has. With 4
    output channels (8 as hi and lo) the kernel computes two output columns per pass (even and odd widths: the
    odd one pads a column more on the left), with 8 one."""
    from ood_flow.flows.precision import st_autocast

    conv, bn, _, _ = _split_case(64, cout, kernel, batchnorm)
    with torch.no_grad():  # input channels in pairs, the kernel's halves nearly opposite: the sums cancel
        v = conv.weight_v if kernel == 1 else conv.weight
        v[:, 32:] = -v[:, :32] * 0.98
    weight, bias = (t.detach() for t in fused._fold(conv, bn, torch.float32, torch.contiguous_format))
    a = torch.randn(8, 32, 10, width)
    x = torch.cat([a, a], 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)  # a bf16 trunk
    conv_exact = F.conv2d(x.double(), weight.double(), None, padding=kernel // 2)
    size = F.conv2d(x.double().abs(), weight.double().abs(), None, padding=kernel // 2)  # of the terms summed
    exact = conv_exact + bias.double().view(1, -1, 1, 1)
    plain = F.conv2d(x, weight.to(torch.bfloat16), bias.to(torch.bfloat16), padding=kernel // 2)
    path = fused.FusedPath()
    with torch.no_grad(), st_autocast(torch.bfloat16, "split"), torch.autocast("cpu", dtype=torch.bfloat16):
        y = path._conv(conv, bn, x, relu=False)
    assert path.stats()["split_narrow_convs"] == 1 and y.dtype == torch.float32 and y.shape == exact.shape
    assert path.stats()["paired_narrow_convs"] == (cout == 4)
    error = (y.double() - exact).abs()
    assert (error <= conv_exact.abs() * 2.0**-8 + size * 2.0**-15).all()
    assert error.max() < (plain.double() - exact).abs().max() / 10


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16 at all")
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_split_widening_convolution_rounds_its_input_and_keeps_its_kernel_exact(relu, batchnorm):
    """The widening convolution takes its input rounded to bf16 (as every bf16 layer does) and its kernel as a
    bf16 part and remainder: its result is the exact convolution of the rounded input, rounded to bf16, but for
    float32's own rounding of the sum; where the kernel's terms nearly cancel (a first layer taking differences of
    neighbouring pixels), a kernel rounded to bf16 would lose that result and the split one does not."""
    from ood_flow.flows.precision import st_autocast

    conv, bn, _, _ = _split_case(2, 32, 3, batchnorm)
    with torch.no_grad():  # the two input channels hold the same image and the kernel's halves nearly cancel
        conv.weight[:, 1] = -conv.weight[:, 0] * 0.98
    weight, bias = (t.detach() for t in fused._fold(conv, bn, torch.float32, torch.contiguous_format))
    a = torch.randn(8, 1, 10, 10) * 3
    x = torch.cat([a, a], 1)
    xr = x.to(torch.bfloat16).double()  # the input as the kernel takes it
    conv_exact = F.conv2d(xr, weight.double(), None, padding=1)
    exact = conv_exact + bias.double().view(1, -1, 1, 1)
    exact = exact.relu() if relu else exact
    size = F.conv2d(xr.abs(), weight.double().abs(), bias.double().abs(), padding=1)  # of the terms summed
    plain = F.conv2d(xr, weight.to(torch.bfloat16).double(), bias.double(), padding=1)
    plain = plain.relu() if relu else plain
    path = fused.FusedPath()
    with torch.no_grad(), st_autocast(torch.bfloat16, "split"), torch.autocast("cpu", dtype=torch.bfloat16):
        y = path._conv(conv, bn, x, relu=relu)
    assert path.stats()["split_narrow_convs"] == 1 and y.dtype == torch.bfloat16
    assert (y == exact.to(torch.bfloat16)).double().mean() > 0.97  # a cancelled sum's last bits decide some
    error = (y.double() - exact).abs()
    # within half a bf16 step of the result, plus float32-like error in the sum where its terms cancel
    assert (error <= exact.abs() * 2.0**-8 + size * 2.0**-15).all()
    if bn is None:  # (a batch norm's large shift makes the output's own rounding hide what the kernel loses)
        assert error.mean() < (plain - exact).abs().mean() / 4  # what a kernel rounded to bf16 would lose


@pytest.mark.parametrize("name, opts", [("glow", {"net": "glow", "batchnorm": False, "channels": 32, "couplings": 2}),
                                        ("realnvp", {"channels": 16, "blocks": 1, "scales": 1, "couplings": 2})])
def test_a_weight_changed_in_place_after_scoring_is_seen_by_the_next_scoring(name, opts):
    """The fused path keeps prepared kernels (folded, and reordered into oneDNN's layout); an optimiser step
    changes parameters in place, and the next scoring must use the new values, as the plain modules do."""
    torch.manual_seed(0)
    flow = randomize(create_flow(name, (1, 8, 8), **opts))
    path, x = fused.path_of(flow), torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        before = flow.log_prob(x)
        for p in flow.parameters():
            p.mul_(1.1)  # in place, as an optimiser step
        after = flow.log_prob(x)
        with path.disabled():
            plain = flow.log_prob(x)
    assert path.stats()["fused_calls"] > 0 and not torch.allclose(before, after)
    torch.testing.assert_close(after, plain, rtol=1e-5, atol=1e-4)


def test_every_kernel_is_reordered_once_into_onednn_layout_split_ones_included():
    """A failed reorder falls back to the plain layout (same numbers, slower) and is counted; none fails here."""
    from ood_flow.flows.precision import st_autocast

    flow = randomize(create_flow("glow", (1, 8, 8), net="glow", channels=32, couplings=2))
    path, x = fused.path_of(flow), torch.rand(4, 1, 8, 8)
    modes = ["fp32"] + (["split"] if bf16_supported("cpu") else [])
    with torch.no_grad():
        flow.log_prob(x)
        for mode in modes[1:]:
            with st_autocast(torch.bfloat16, mode):
                flow.log_prob(x)
    stats = path.stats()
    assert stats["fused_kernel_convs"] > 0 and stats.get("unpacked_kernels", 0) == 0
    assert all(isinstance(kept[2], torch.Tensor) and kept[2].is_mkldnn for kept in path._packs.values())
