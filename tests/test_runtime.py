"""The runtime: how a run executes is resolved once, at the API entry, into one frozen value; fused weights
belong to the prepared flow and follow its weights.

Every API entry resolves once (counted); an unknown value is one usage error; bf16 on a device without it is
one error class, one message and exit 2 wherever it is asked for (simulated: the check reports no support);
fused kernels are rebuilt when a weight changes in place; each prepared flow owns its path and counters.
(That narrow convolutions are decided when a network is built: tests/test_precision.py.)
"""

from __future__ import annotations

import copy
import dataclasses

import h5py
import numpy as np
import pytest
import timm
import torch

from cli_helpers import image_npz, one_line_error, run
from ood_flow import calibrate_model, embed_source, plot_latents, runtime, score_source, train_flow
from ood_flow.data import SourceOptions
from ood_flow.device import bf16_pays, bf16_supported, narrow_split_pays, onednn_isa_cap, usable_cpu_flags
from ood_flow.errors import NoBfloat16, UsageError
from ood_flow.flows import create_flow, fused
from ood_flow.flows.weightnorm import WNConv2d
from ood_flow.runtime import Runtime, resolve, resolve_precision
from ood_flow.score.likelihood import score_likelihood
from ood_flow.train import TrainConfig

SMALL = {"channels": 8, "blocks": 1, "scales": 2}
LIMIT = SourceOptions(limit=40)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("runtime") / "m.pt"
    train_flow("demo-fashionmnist", TrainConfig(max_steps=2, batch_size=16, cal_fraction=0.2), out=out,
               model_options=SMALL, options=SourceOptions(limit=100))
    return out


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "w.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict(), path)
    return path


@pytest.fixture
def resolutions(monkeypatch):
    """Every resolution of a runtime, wherever it comes from (each resolves its device first)."""
    calls = []
    real = runtime.resolve_device

    def counting(device):
        calls.append(device)
        return real(device)

    monkeypatch.setattr(runtime, "resolve_device", counting)
    return calls


def test_a_runtime_is_frozen_and_holds_every_decision():
    rt = resolve("cpu", st="fp32", backbone="fp32", compile=True)
    assert (rt.device, rt.st, rt.backbone, rt.memory_format, rt.compile, rt.dist.world) == \
        ("cpu", "fp32", "fp32", "channels_last", True, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rt.st = "bf16"
    assert rt.for_detector().st == "fp32" and Runtime(st="bf16", backbone="bf16").for_detector().backbone == "bf16"


@pytest.mark.parametrize("values, fragment", [({"device": "tpu"}, "unknown device 'tpu'"),
                                              ({"st": "fp16"}, "unknown precision 'fp16'"),
                                              ({"backbone": "int8"}, "unknown precision 'int8'"),
                                              ({"memory_format": "nhwc"}, "unknown memory format 'nhwc'")])
def test_a_bad_value_is_one_usage_error(values, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve(**values)


def test_every_api_entry_resolves_its_runtime_once(model, tmp_path, backbone_weights, resolutions):
    score_source("demo-mnist", model, options=LIMIT)
    calibrate_model(model, "demo-fashionmnist:test", options=LIMIT, overwrite=True)
    embed_source(str(image_npz(tmp_path / "x.npz", n=6, size=16)), "test_resnet", tmp_path / "f.h5",
                 weights=backbone_weights, image_size=16)
    plot_latents(["demo-mnist"], model, tmp_path / "l.png", count=2)
    train_flow("demo-fashionmnist", TrainConfig(max_steps=1, batch_size=8), out=tmp_path / "t.pt",
               model_options=SMALL, options=SourceOptions(limit=30))
    assert len(resolutions) == 5, resolutions


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU runs no bfloat16")
def test_a_resumed_run_continues_in_its_checkpoint_precision_checked_here(tmp_path, monkeypatch):
    out, data = tmp_path / "r.pt", SourceOptions(limit=30)
    train_flow("demo-fashionmnist", TrainConfig(max_steps=1, batch_size=8, precision="bf16"), out=out,
               model_options=SMALL, options=data)
    resumed = train_flow("demo-fashionmnist", TrainConfig(max_steps=2), out=out, resume=True, options=data)
    assert torch.load(out, weights_only=True)["extra"]["train_config"]["precision"] == "bf16" and resumed.steps == 2
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    with pytest.raises(NoBfloat16):  # the checkpoint's bf16, on a machine without it
        train_flow("demo-fashionmnist", TrainConfig(max_steps=3), out=out, resume=True, options=data)


@pytest.fixture
def no_bf16(monkeypatch):
    """This machine, as one whose device cannot run bfloat16."""
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)


def test_bf16_without_support_is_one_error_class_and_message_wherever_asked(model, tmp_path, backbone_weights,
                                                                            no_bf16):
    calls = {
        "score": lambda: score_source("demo-mnist", model, precision="bf16", options=LIMIT),
        "calibrate": lambda: calibrate_model(model, "demo-fashionmnist:test", precision="bf16", overwrite=True),
        "embed": lambda: embed_source("demo-mnist", "test_resnet", tmp_path / "f.h5", weights=backbone_weights,
                                      precision="bf16"),
        "train": lambda: train_flow("demo-fashionmnist", TrainConfig(precision="bf16"), out=tmp_path / "m.pt"),
        "train --features": lambda: train_flow("demo-mnist", features=train_features(backbone_weights, "bf16"),
                                               out=tmp_path / "d.pt"),
    }
    messages = set()
    for name, call in calls.items():
        with pytest.raises(NoBfloat16) as caught:
            call()
        assert caught.value.exit_code == 2, name
        messages.add(str(caught.value))
    assert len(messages) == 1 and "cannot run bfloat16" in messages.pop()
    assert not list(tmp_path.iterdir())  # refused before any work


def train_features(weights, precision):
    from ood_flow.train import FeatureSpec

    return FeatureSpec("test_resnet", str(weights), 16, precision)


def test_the_commands_refuse_bf16_without_support_with_exit_2_and_one_line(model, tmp_path, backbone_weights,
                                                                           no_bf16):
    images = image_npz(tmp_path / "x.npz", n=6, size=16)
    score = run("score", "demo-mnist", "--model", model, "--precision", "bf16", "--limit", "5", code=2)
    embed = run("embed", images, "--backbone", "test_resnet", "--weights", backbone_weights, "--precision", "bf16",
                "--out", tmp_path / "f.h5", code=2)
    train = run("train", "--data", images, "--precision", "bf16", "--out", tmp_path / "m.pt", code=2)
    errors = {one_line_error(r, "cannot run bfloat16") for r in (score, embed, train)}
    assert len(errors) == 1


def test_embed_takes_precision_auto_like_the_other_commands(tmp_path, backbone_weights):
    images = image_npz(tmp_path / "x.npz", n=6, size=16)
    run("embed", images, "--backbone", "test_resnet", "--weights", backbone_weights, "--image-size", "16",
        "--precision", "auto", "--out", tmp_path / "f.h5", "--quiet")
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f.attrs["precision"] == resolve(backbone="auto").backbone


def _randomized(seed: int = 0):
    torch.manual_seed(seed)
    flow = Runtime().prepare(create_flow("realnvp", (1, 8, 8), channels=8, blocks=2, scales=2))
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return flow.eval()


def test_fused_weights_follow_the_weights_they_were_made_of():
    flow, x = _randomized(), (torch.rand(16, 1, 8, 8) * 255).to(torch.uint8)
    path = fused.path_of(flow)

    def scores(plain: bool = False):
        with path.disabled() if plain else torch.no_grad():
            return score_likelihood(flow, x)["log_likelihood"]

    before = scores()
    assert path.stats()["fused_kernel_convs"] > 0
    changes = [lambda: next(m for m in flow.modules() if isinstance(m, WNConv2d)).weight_g.mul_(1.5),
               lambda: next(m for m in flow.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.add_(0.5),
               lambda: flow.load_state_dict(_randomized(seed=1).state_dict())]
    for change in changes:
        with torch.no_grad():
            change()
        after, plain = scores(), scores(plain=True)
        assert not np.array_equal(after, before)  # not the kernels of the old weights
        np.testing.assert_allclose(after, plain, rtol=1e-6)
        before = after


def test_each_prepared_flow_owns_its_fused_path_and_counters():
    a, b, x = _randomized(), _randomized(), torch.rand(2, 1, 8, 8)
    assert fused.path_of(a) is not fused.path_of(b) and fused.path_of(create_flow("realnvp", (1, 8, 8))) is None
    with torch.no_grad():
        a.log_prob(x)
    assert fused.path_of(a).stats()["fused_calls"] > 0 and "fused_calls" not in fused.path_of(b).stats()
    twin = copy.deepcopy(a)
    assert fused.path_of(twin) is not fused.path_of(a) and "fused_calls" not in fused.path_of(twin).stats()
    with torch.no_grad():
        np.testing.assert_array_equal(twin.log_prob(x), a.log_prob(x))


def test_a_contiguous_runtime_scores_as_the_channels_last_one():
    flow, x = _randomized(), torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        channels_last = flow.log_prob(x)
        Runtime(memory_format="contiguous").prepare(flow)
        contiguous = flow.log_prob(x)
    assert all(m.layout == torch.contiguous_format for m in flow.modules() if hasattr(m, "layout"))
    torch.testing.assert_close(contiguous, channels_last, rtol=1e-5, atol=1e-3)


def test_how_narrow_convolutions_compute_is_decided_once_from_the_machine():
    expected = "split" if narrow_split_pays("cpu") else "fp32"
    st = "bf16" if bf16_supported("cpu") else None
    assert Runtime().narrow == expected and resolve("cpu", st=st).narrow == expected
    assert Runtime(narrow="fp32").narrow == "fp32"  # written out: taken as it is (tests, benchmarks)
    amx, bf16 = frozenset({"avx512_bf16", "amx_bf16"}), frozenset({"avx512f", "avx512_bf16"})
    assert narrow_split_pays("cpu", flags=amx, vendor="GenuineIntel")
    assert narrow_split_pays("cpu", flags=bf16, vendor="AuthenticAMD")  # Zen 4: measured faster than fp32 kernels
    assert not narrow_split_pays("cpu", flags=bf16, vendor="GenuineIntel")  # no AMX: bf16 itself does not pay
    assert not narrow_split_pays("cpu", flags=frozenset({"avx2"}), vendor="AuthenticAMD")


def test_a_cap_on_onednns_instruction_sets_counts_as_the_machine(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    amx = frozenset({"avx512_bf16", "amx_tile", "amx_bf16"})
    assert usable_cpu_flags(amx) == amx  # no cap
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx512_core_bf16")  # oneDNN runs as on Zen 4: no AMX
    assert onednn_isa_cap() == "AVX512_CORE_BF16" and usable_cpu_flags(amx) == {"avx512_bf16", "amx_tile"}
    assert Runtime().narrow == ("split" if narrow_split_pays("cpu") else "fp32")  # the capped flags decide
    assert not bf16_pays("cpu", flags=usable_cpu_flags(amx), vendor="GenuineIntel")  # slower than fp32 there
    assert not narrow_split_pays("cpu", flags=usable_cpu_flags(amx), vendor="GenuineIntel")
    assert bf16_pays("cpu", flags=usable_cpu_flags(amx), vendor="AuthenticAMD")  # Zen 4: it paid
    assert narrow_split_pays("cpu", flags=usable_cpu_flags(amx), vendor="AuthenticAMD")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the newer name wins: bf16 only emulated
    assert onednn_isa_cap() == "AVX2" and usable_cpu_flags(amx) == {"amx_tile"}
    assert Runtime().narrow == "fp32" and resolve_precision("auto", "cpu") == "fp32"
    for cap in ("AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL", "no such isa"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)  # AMX allowed, or a value oneDNN would not take
        assert usable_cpu_flags(amx) == amx


EMPTY_CASES = [("tabular", (6,), {"couplings": 2, "hidden": 4, "layers": 1}),
               ("realnvp", (1, 8, 8), {"channels": 4, "blocks": 1, "scales": 2}),
               ("realnvp", (1, 8, 8), {"channels": 4, "blocks": 1, "mask": "cycle", "couplings": 4}),
               ("glow", (1, 8, 8), {"channels": 4, "scales": 2, "couplings": 2, "net": "glow"}),
               ("gaussian", (5,), {})]


@pytest.mark.parametrize("st", ["fp32", "bf16"])
@pytest.mark.parametrize("name, shape, opts", EMPTY_CASES, ids=[c[0] + "-" + str(i) for i, c in enumerate(EMPTY_CASES)])
def test_an_empty_batch_has_an_empty_log_likelihood(name, shape, opts, st):
    """Per-sample sizes come from the shape, not from a first sample that an empty batch lacks."""
    from ood_flow.device import bf16_supported
    from ood_flow.runtime import Runtime

    if st == "bf16" and not bf16_supported("cpu"):
        pytest.skip("this CPU runs no bfloat16 at all")
    runtime = Runtime(st=st)
    flow = runtime.prepare(create_flow(name, shape, **opts)).eval()
    with torch.no_grad(), runtime.st_networks():
        out = flow.log_prob(torch.rand(0, *shape))
        one = flow.log_prob(torch.rand(1, *shape))
    assert out.shape == (0,) and one.shape == (1,) and torch.isfinite(one).all()


class ReadBacks(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the tensors read back to Python (``.item()``, ``bool()``: ``aten::_local_scalar_dense``)."""

    count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["glow", "realnvp"])
def test_a_training_step_reads_no_tensor_back_once_actnorm_has_initialised(name):
    """On a GPU each read-back is a synchronisation; ActNorm's flag is read only until it turns true."""
    from ood_flow.flows.layers import ActNorm

    flow = create_flow(name, (1, 8, 8), channels=8, blocks=1, scales=2).train()
    assert any(isinstance(m, ActNorm) for m in flow.modules()) or name == "realnvp"
    x = torch.rand(4, 1, 8, 8)
    flow.log_prob(x).mean().backward()  # the first step initialises
    with ReadBacks() as reads:
        flow.log_prob(x).mean().backward()
    assert reads.count == 0


def test_actnorm_reads_its_flag_again_after_a_state_dict_is_loaded():
    """The remembered flag never hides a loaded one: an uninitialised state dict makes the next training
    pass initialise again, from that batch."""
    from ood_flow.flows.layers import ActNorm

    fresh = ActNorm(3).state_dict()
    layer = ActNorm(3).train()
    layer(torch.randn(8, 3, 4, 4))
    assert layer.is_initialized()
    layer.load_state_dict(fresh)
    assert not layer.is_initialized()
    x = torch.randn(8, 3, 4, 4) * 2 + 5
    y, _ = layer(x)
    assert layer.is_initialized() and torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("shape, ndim", [((3, 4, 4), 3), ((6,), 1)])
def test_actnorm_waits_for_a_batch_with_a_spread_to_initialise(shape, ndim):
    """An empty batch (or one vector) in training mode passes through without setting ActNorm's parameters
    from a standard deviation it does not have (NaN); the next real batch initialises them."""
    from ood_flow.flows.layers import ActNorm

    layer = ActNorm(shape[0], ndim=ndim).train()
    small = [torch.rand(0, *shape)] + ([torch.rand(1, *shape)] if ndim == 1 else [])
    for x in small:
        y, logdet = layer(x)
        assert y.shape == x.shape and logdet.shape == (x.shape[0],) and torch.isfinite(y).all()
        assert not bool(layer.initialized)
    x = torch.randn(5, *shape) * 3 + 1
    y, _ = layer(x)
    assert bool(layer.initialized)
    assert torch.isfinite(layer.bias).all() and torch.isfinite(layer.log_scale).all()
    dims = [0] + list(range(2, y.dim()))
    assert torch.allclose(y.mean(dims), torch.zeros(shape[0]), atol=1e-5)
