"""The speed benchmarks start: each script's --help runs in a fresh interpreter (an import that shadows the
standard library, or a helper module renamed, fails here rather than at the next measurement)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed"


@pytest.mark.parametrize("script", ["speed.py", "speed_profile.py", "vector_speed.py", "startup.py", "bf16_error.py",
                                    "narrow_cost.py", "optimizer_speed.py", "skip_cost.py",
                                    "st_share.py", "logit_speed.py", "tanh_cost.py", "narrow_pairs.py",
                                    "widen_split.py"])
def test_a_speed_benchmark_starts(script):
    result = subprocess.run([sys.executable, str(SPEED / script), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


@pytest.mark.parametrize("content", [None, b"not a model"])
def test_narrow_cost_refuses_a_missing_or_corrupt_model_file_in_one_line_before_timing(tmp_path, content):
    model = tmp_path / "m.pt"
    if content is not None:
        model.write_bytes(content)
    result = subprocess.run([sys.executable, str(SPEED / "narrow_cost.py"), "--models", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and str(model) in result.stderr


def test_widen_split_refuses_a_missing_model_file_as_a_usage_error_before_timing(tmp_path):
    result = subprocess.run([sys.executable, str(SPEED / "widen_split.py"), "--models", str(tmp_path / "m.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and "no model file at" in result.stderr


def test_widen_split_computes_the_way_it_names_as_the_fused_path_does(monkeypatch):
    """widen_split.py's own widening convolution, asked for the path's way (kernel split, input rounded), gives
    the fused path's bits: its other columns differ from the path's in what they name only."""
    pytest.importorskip("torch")
    from ood_flow.device import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU runs no bfloat16 at all")
    monkeypatch.syspath_prepend(str(SPEED))
    import widen_split

    import torch
    from ood_flow.flows import create_flow
    from ood_flow.runtime import Runtime

    monkeypatch.setitem(widen_split.VARIANTS, "kernel split, redone here", (False, True))
    torch.manual_seed(0)
    flow = Runtime().prepare(create_flow("glow", (1, 8, 8), net="glow", channels=16, scales=2, couplings=2)).eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.rand(16, 1, 8, 8)
    scores = {}
    for variant in ("kernel split, redone here", widen_split.NOW, widen_split.FORMER):
        with torch.inference_mode(), Runtime(st="bf16").st_networks(), widen_split.widening(variant):
            scores[variant] = flow.log_prob(x)
    assert torch.equal(scores["kernel split, redone here"], scores[widen_split.NOW])
    assert not torch.equal(scores[widen_split.FORMER], scores[widen_split.NOW])


@pytest.mark.parametrize("script, option", [("narrow_cost.py", "--rounds"), ("narrow_cost.py", "--limit"),
                                            ("optimizer_speed.py", "--rounds"), ("skip_cost.py", "--rounds"),
                                            ("st_share.py", "--rounds"), ("speed.py", "--rounds")])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_a_count_below_one_is_a_usage_error_before_any_timing(script, option, value):
    result = subprocess.run([sys.executable, str(SPEED / script), option, value], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert f"argument {option}: expected a whole number of at least 1, got '{value}'" in result.stderr



@pytest.mark.parametrize("script", ["speed.py", "vector_speed.py", "skip_cost.py", "st_share.py",
                                    "optimizer_speed.py"])
def test_a_file_as_the_results_folder_is_a_usage_error_before_any_timing(tmp_path, script):
    taken = tmp_path / "results"
    taken.write_text("kept")
    result = subprocess.run([sys.executable, str(SPEED / script), "--out", str(taken)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and taken.read_text() == "kept"
    assert "argument --out: " in result.stderr and "is a file, not a folder for the results" in result.stderr

REPLAY = """
import sys, torch
sys.path[:0] = [sys.argv[1]]
from speed import PRESETS, build
from speed_runs import Runner
from st_share import StNets

p = PRESETS["quick"]
torch.manual_seed(0)
x = torch.rand(p["batch"], 1, 28, 28)
for arch in ("glow", "realnvp"):
    runner = Runner("oodflow", build("oodflow", arch, p[arch]), ("channels_last", "bf16"), x, x[:16], 8)
    runner.train_step()
    nets = StNets(runner)
    couplings = sum(1 for m in runner.model.modules() if type(m).__name__.endswith("Coupling"))
    assert len(nets.nets) == couplings > 0, (arch, len(nets.nets), couplings)
    assert len(nets.inputs["train"]) == couplings and len(nets.inputs["score"]) == 2 * couplings  # 2 batches
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.clone())) for m in nets.nets]
    runner.score()
    replayed = []
    for h in hooks:
        h.remove()
    hooks = [m.register_forward_hook(lambda m, i, o: replayed.append(o.clone())) for m in nets.nets]
    nets.score()
    assert len(seen) == len(replayed) and all(torch.equal(a, b) for a, b in zip(seen, replayed)), arch
    runner.opt.zero_grad(set_to_none=True)
    nets.train()
    params = [q for m in nets.nets for q in m.parameters()]
    assert all(q.grad is not None for q in params), arch
print("ok")
"""


def test_st_share_replays_each_st_network_on_the_inputs_it_saw():
    """The script's split rests on replaying the st-networks: once per coupling, computing in scoring exactly what
    they computed in the pass, and giving every st-network weight a gradient in training."""
    result = subprocess.run([sys.executable, "-c", REPLAY, str(SPEED)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_a_run_with_onednn_capped_says_so_in_its_command_and_machine_line(monkeypatch):
    monkeypatch.syspath_prepend(str(SPEED))
    monkeypatch.syspath_prepend(str(SPEED.parent))
    import speed_machine  # its machine() also needs normflows (the bench extra): the parts it records, here

    from ood_flow.device import onednn_isa_cap

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert speed_machine.with_cap("python speed.py") == "python speed.py"
    assert speed_machine.cap_note({"onednn_max_cpu_isa": onednn_isa_cap()}) == ""
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx512_core_bf16")
    assert speed_machine.with_cap("python speed.py") == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python speed.py"
    assert speed_machine.cap_note({"onednn_max_cpu_isa": onednn_isa_cap()}) == ", oneDNN capped at AVX512_CORE_BF16"
    import speed_runs  # the rounds benchmarks' machine line (skip_cost.py, st_share.py, ...) records it too

    env = {"cpu": "a CPU", "threads": 2, "load_average_start": [0.1], "onednn_max_cpu_isa": onednn_isa_cap()}
    line = speed_runs.machine_line(env, "kept")
    assert line.startswith("Machine: a CPU, oneDNN capped at AVX512_CORE_BF16, 2 threads")


SAME_PRECISION = """
import sys
sys.path[:0] = [sys.argv[1]]
from speed import same_precision

chosen = {("normflows", "train"): ("channels_last", "fp32"), ("normflows", "score"): ("nchw", "fp32"),
          ("normflows-halfres", "train"): ("channels_last", "bf16"), ("normflows-halfres", "score"): ("nchw", "bf16")}
rates = {"nchw fp32": 10.0, "channels_last fp32": 12.0, "nchw bf16": 20.0, "channels_last bf16": 18.0}
selection = {"normflows train": rates, "normflows score": {**rates, "channels_last bf16": 25.0},
             "normflows-halfres train": rates, "normflows-halfres score": rates}
errors = {"normflows": 0.0101, "normflows-halfres": 0.004}
got = same_precision(chosen, selection, errors, "bf16")
assert got == {"normflows": {"train": ("nchw", "bf16"), "score": ("channels_last", "bf16")}}, got
assert same_precision(chosen, selection, errors, "fp32") == {}
assert same_precision(chosen, selection, {"normflows": 0.01, "normflows-halfres": 0.004}, "bf16") == {}
print("ok")
"""


def test_speed_adds_the_peer_in_bf16_only_where_its_bf16_broke_the_bound():
    """speed.py's equal-precision row: a peer whose bf16 moved scores past the 0.01 bound (so the rule compares its
    fp32) is also timed in its fastest bf16 setting per task; a peer within the bound, or oodflow in fp32, adds
    nothing."""
    result = subprocess.run([sys.executable, "-c", SAME_PRECISION, str(SPEED)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
