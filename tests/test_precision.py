"""``--precision``: bf16 st-networks with everything else in fp32, within the accuracy bounds of issue 14.

Bounds (FashionMNIST model, FashionMNIST vs MNIST): bf16 scoring moves per-sample bits/dim by at
most 0.01 on average and the AUROC by at most 0.002; bf16 training reaches the fp32 validation
bits/dim within 0.02 at the same step count (slow).
"""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch

from cli_helpers import run
from ood_flow import score_source, train_flow
from ood_flow.data import SourceOptions
from ood_flow.device import bf16_pays, bf16_supported
from ood_flow.errors import UsageError
from ood_flow.evaluate.metrics import ood_metrics
from ood_flow.flows import create_flow, fused
from ood_flow.flows.precision import NARROW, NARROW_MODES, STConv2d, current, is_narrow
from ood_flow.flows.weightnorm import WNConv2d
from ood_flow.runtime import Runtime, resolve_precision
from ood_flow.train import TrainConfig

needs_bf16 = pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16 at all")


def test_auto_is_bf16_only_where_the_hardware_has_native_bf16():
    assert resolve_precision("auto", "cpu", flags=frozenset({"avx2", "avx512f"})) == "fp32"
    zen4 = frozenset({"avx512f", "avx512_bf16"})  # bf16 paid there; on an Intel CPU without AMX it did not
    assert resolve_precision("auto", "cpu", flags=zen4, vendor="AuthenticAMD") == "bf16"
    assert resolve_precision("auto", "cpu", flags=zen4, vendor="GenuineIntel") == "fp32"
    assert resolve_precision("auto", "cpu", flags=frozenset({"amx_bf16", "amx_tile"}), vendor="GenuineIntel") == "bf16"
    assert not bf16_pays("cuda", capability=(7, 5)) and bf16_pays("cuda", capability=(8, 0))
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(UsageError, match="fp16"):
        resolve_precision("fp16", "cpu")


def test_an_unknown_precision_is_a_usage_error_before_any_work(tmp_path):
    result = run("train", "--data", "demo-fashionmnist", "--precision", "fp16", "--out", tmp_path / "m.pt", code=2)
    assert "fp16" in result.stderr and not (tmp_path / "m.pt").exists()


def _channels(m: torch.nn.Module) -> tuple[int, int]:
    """(in, out) channels of a plain or a weight-normalised convolution (the authors' st-networks)."""
    if isinstance(m, WNConv2d):
        return m.weight_v.shape[1], m.weight_v.shape[0]
    return m.in_channels, m.out_channels


@needs_bf16
@pytest.mark.parametrize("narrow", NARROW_MODES)  # each runtime's branch, whatever this machine would choose
@pytest.mark.parametrize("name, options", [("realnvp", {"channels": 16, "blocks": 1, "scales": 2}),
                                           ("glow", {"channels": 16, "couplings": 2, "net": "glow"})])
def test_only_the_st_networks_run_in_bf16_and_the_flow_stays_invertible(name, options, narrow):
    torch.manual_seed(0)
    flow = Runtime().prepare(create_flow(name, (1, 8, 8), **options)).eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    dtypes: dict[str, set] = {"st": set(), "widening": set(), "narrow": set(), "other": set()}
    for module_name, m in flow.named_modules():
        if isinstance(m, (torch.nn.Conv2d, WNConv2d)) or type(m).__name__ == "InvConv1x1":
            where = "st" if ".net." in f".{module_name}." else "other"
            if where == "st" and min(_channels(m)) < NARROW:
                where = "widening" if _channels(m)[1] >= NARROW else "narrow"
            m.register_forward_hook(lambda mod, i, out, where=where: dtypes[where].add(
                (out[0] if isinstance(out, tuple) else out).dtype))
    x = torch.rand(4, 1, 8, 8)
    with Runtime(st="bf16", narrow=narrow).st_networks():  # gradients on: the plain modules, whose hooks fire
        assert current() == "bf16"
        z, logdet = flow(x)
        back, inv_logdet = flow.inverse(z)
        log_prob = flow.log_prob(x).detach()
        with torch.no_grad():  # scoring: the fused path, in bf16 too (split: narrow ones as split bf16 kernels)
            fused.path_of(flow).reset_stats()
            fused_log_prob = flow.log_prob(x)
            assert (fused.path_of(flow).stats().get("split_narrow_convs", 0) > 0) == (narrow == "split")
    with torch.no_grad():
        fp32_log_prob = flow.log_prob(x)
    # the wide convolutions run in bf16; a narrow one in fp32, handing its output on in bf16 where wide layers
    # follow (an st-network's first) and in fp32 where it predicts s and t (the last); see NARROW. In the
    # split mode, where gradients flow, narrow ones run in bf16 as autocast runs them.
    assert dtypes["st"] == {torch.bfloat16} and dtypes["widening"] == {torch.bfloat16}
    assert dtypes["narrow"] == {torch.float32 if narrow == "fp32" else torch.bfloat16}
    assert dtypes["other"] <= {torch.float32}
    assert log_prob.dtype == torch.float32 and z.dtype == torch.float32
    torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-4)  # s and t are the same bf16 values both ways
    torch.testing.assert_close(logdet + inv_logdet, torch.zeros_like(logdet), atol=1e-3, rtol=0)
    for bf16 in (log_prob, fused_log_prob):  # mean |delta bits/dim| within the bound of the trained-model test
        assert 0 < (bf16 - fp32_log_prob).abs().mean() / (x[0].numel() * np.log(2)) <= 0.01
    assert current() == "fp32"


def _conv_layers(flow) -> dict:
    return {name: m for name, m in flow.named_modules() if isinstance(m, (torch.nn.Conv2d, WNConv2d))}


@pytest.mark.parametrize("name, options", [("realnvp", {"channels": 16, "blocks": 1, "scales": 1, "couplings": 2}),
                                           ("realnvp", {"channels": 16, "blocks": 1, "net": "resnet-v1"}),
                                           ("glow", {"channels": 16, "couplings": 2, "net": "glow"}),
                                           ("glow", {"channels": 16, "couplings": 2, "blocks": 1})])
def test_narrow_convolutions_are_decided_when_built_and_bf16_leaves_a_network_as_it_was(name, options):
    torch.manual_seed(0)
    ran = Runtime().prepare(create_flow(name, (1, 8, 8), **options))
    with torch.no_grad():
        for p in ran.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    fresh, x = copy.deepcopy(ran), torch.rand(4, 1, 8, 8)
    for conv in _conv_layers(ran).values():  # the rule, taken once for every convolution of an st-network
        cin, cout = (conv.weight_v.shape[1], conv.weight_v.shape[0]) if isinstance(conv, WNConv2d) else \
            (conv.in_channels, conv.out_channels)
        assert isinstance(conv, (STConv2d, WNConv2d)) and conv.narrow == is_narrow(cin, cout)
        assert conv.widens == (conv.narrow and cout >= NARROW)
    types = {n: type(m) for n, m in ran.named_modules()}
    with Runtime(st="bf16").st_networks():  # in eval mode, so that no statistic learns from the bf16 pass
        ran.eval().log_prob(x).sum().backward()  # gradients on: the plain modules
        with torch.no_grad():
            ran.log_prob(x)  # scoring: the fused path
    ran.zero_grad(set_to_none=True)
    assert {n: type(m) for n, m in ran.named_modules()} == types  # no class changed
    for train in (False, True):
        ran.train(train), fresh.train(train)
        with torch.no_grad():
            assert torch.equal(ran.log_prob(x), fresh.log_prob(x)), f"train={train}"


def _scores(model, precision: str, out) -> dict[str, np.ndarray]:
    limit = SourceOptions(limit=500)
    return {source: score_source(source, model, out=out, name=f"{source}-{precision}", precision=precision,
                                 options=limit).arrays for source in ("demo-fashionmnist", "demo-mnist")}


@needs_bf16
def test_bf16_scoring_moves_bits_per_dim_and_auroc_within_the_bounds(small_fmnist_model, tmp_path):
    out = tmp_path / "scores.h5"
    fp32, bf16 = _scores(small_fmnist_model, "fp32", out), _scores(small_fmnist_model, "bf16", out)
    for source in fp32:
        delta = np.abs(fp32[source]["bits_per_dim"] - bf16[source]["bits_per_dim"])
        assert 0 < delta.mean() <= 0.01, f"{source}: mean |delta bits/dim| {delta.mean():.2e}"  # 0: bf16 never ran
    auroc = {p: ood_metrics(s["demo-fashionmnist"]["log_likelihood"], s["demo-mnist"]["log_likelihood"])["auroc"]
             for p, s in (("fp32", fp32), ("bf16", bf16))}
    assert abs(auroc["fp32"] - auroc["bf16"]) <= 0.002, auroc
    with h5py.File(out, "r") as f:
        assert f["demo-mnist-bf16"].attrs["precision"] == "bf16"
        assert f["demo-mnist-fp32"].attrs["precision"] == "fp32"


@needs_bf16
@pytest.mark.slow
def test_bf16_training_reaches_the_fp32_validation_bits_per_dim(tmp_path):
    """At a step size where training is smooth. At lr 1e-3 and batch 32 the validation bits/dim of this model
    jumps by +-0.3 from epoch to epoch, and fp32 alone lands 0.34 apart on 1 and 2 threads at step 300, so
    no precision could be held to 0.02 there; at lr 2e-4 and batch 64 bf16 tracked fp32 to 2e-4."""
    val = {}
    for precision in ("fp32", "bf16"):
        result = train_flow("demo-fashionmnist", TrainConfig(max_steps=300, batch_size=64, lr=2e-4, precision=precision,
                                                             val_fraction=0.2), out=tmp_path / f"{precision}.pt",
                            model_options={"channels": 16, "blocks": 2, "scales": 2})
        assert result.steps == 300
        val[precision] = result.history[-1]["val_bpd"]
        assert torch.load(tmp_path / f"{precision}.pt", weights_only=True)["extra"]["train_config"]["precision"] \
            == precision
    assert abs(val["fp32"] - val["bf16"]) <= 0.02, val


def test_cuda_logic_without_a_gpu(monkeypatch):
    """What --device cuda decides, checked on the CPU: device choice, precision choice, TF32 off in fp32."""
    from ood_flow.device import to_device
    from ood_flow.errors import OodflowError
    from ood_flow.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(OodflowError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_precision("auto", "cuda", capability=(9, 0)) == "bf16"
    assert resolve_precision("auto", "cuda", capability=(7, 0)) == "fp32"
    x = torch.zeros(3)
    assert to_device(x, "cpu") is x
    before = torch.backends.cudnn.allow_tf32
    with Runtime(device="cuda").st_networks():
        assert torch.backends.cudnn.allow_tf32 is False  # cuDNN's TF32 convolutions are not fp32
    assert torch.backends.cudnn.allow_tf32 == before
    with Runtime(device="cpu").st_networks():  # nothing of CUDA's is touched for a run on the CPU
        assert torch.backends.cudnn.allow_tf32 == before


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_invertible_1x1_convolution_as_a_matrix_product_under_bf16_is_the_convolution_in_float32(layout):
    """Under a bf16 runtime InvConv1x1 mixes channels by a matrix product (torch's convolution is many times
    slower for so few channels): float32 throughout, the convolution's values and gradients to float32's
    rounding, in either memory format."""
    from ood_flow.flows.layers import InvConv1x1, mix_channels
    from ood_flow.flows.precision import st_autocast

    torch.manual_seed(0)
    layer = InvConv1x1(8)
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=layout).requires_grad_()
    w = layer.weight()
    torch.testing.assert_close(mix_channels(x, w), torch.nn.functional.conv2d(x, w.view(8, 8, 1, 1)))
    grads = []
    for dtype in (None, torch.bfloat16):
        with st_autocast(dtype):
            y, logdet = layer(x)
        assert y.dtype == torch.float32 and y.shape == x.shape
        grads.append(torch.autograd.grad((y * torch.arange(y.numel()).view_as(y).sin()).sum() + logdet.sum(),
                                         (x, layer.lu)))
    for fp32, bf16 in zip(*grads):  # sums of many terms: float32 rounding relative to the largest
        torch.testing.assert_close(bf16, fp32, rtol=1e-5, atol=1e-5 * fp32.abs().max().item())
