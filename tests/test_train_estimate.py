"""The time estimate before the first step (a one-batch probe on a copy of the flow) and what Ctrl-C says at once.

The probe must leave training bit for bit as it was: the same run with the probe replaced by nothing ends
with the same weights, batch-norm statistics (RealNVP) and ActNorm initialisation (Glow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from cli_helpers import image_npz, run
from reliability_helpers import cli, env, make_images

import ood_flow
from ood_flow.train import TrainConfig, TrainEvents
from ood_flow.train import estimate as estimate_module
from ood_flow.train.estimate import probe_step
from ood_flow.train.stop import StopRequest

SMALL = ["--channels", "4", "--blocks", "1", "--lr", "1e-3", "--batch-size", "8"]


def _train(data, out, model: str, events: TrainEvents):
    arch = {"channels": 4, "blocks": 1} if model == "realnvp" else {"channels": 4, "couplings": 2, "blocks": 1}
    return ood_flow.train_flow(str(data), TrainConfig(lr=1e-3, batch_size=8, epochs=1, max_steps=4), out=out,
                               model=model, model_options=arch, events=events)


@pytest.mark.parametrize("model", ["realnvp", "glow"])  # batch norm statistics; ActNorm's data-dependent init
def test_the_probe_leaves_training_bit_for_bit_unchanged(tmp_path, monkeypatch, model):
    data = image_npz(tmp_path / "x.npz", n=48)
    seen = []
    probed = _train(data, tmp_path / "a.pt", model, TrainEvents(on_estimate=seen.append))
    assert seen and seen[0]["probed"] and seen[0]["seconds_per_step"] > 0, "the probe did not run"
    monkeypatch.setattr("ood_flow.train.run.forecast", lambda trainer, alternative=None: None)
    plain = _train(data, tmp_path / "b.pt", model, TrainEvents())
    a, b = probed.flow.state_dict(), plain.flow.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the probe changed the training"
    assert [h["train_bpd"] for h in probed.history] == [h["train_bpd"] for h in plain.history]


def test_the_flop_count_is_per_sample_of_a_forward_and_backward_pass():
    torch.manual_seed(0)
    flow = ood_flow.create_flow("tabular", (6,), couplings=2, hidden=32, layers=1)
    x = torch.randn(64, 6)
    flow.fit_preprocessing(x)
    weights = sum(m.weight.numel() for m in flow.modules() if isinstance(m, torch.nn.Linear))
    probed = probe_step(flow, lambda twin, n: -twin.log_prob(x[:n]).sum(), 16)
    # a linear layer costs 2 FLOPs per weight forward and 4 backward (input and weight gradients)
    assert 4 * weights <= probed["flops_per_sample"] <= 6.5 * weights and probed["seconds_per_step"] > 0


def test_the_estimate_is_printed_before_the_first_step(tmp_path):
    data = image_npz(tmp_path / "x.npz", n=48)
    err = run("train", "--data", data, "--out", tmp_path / "m.pt", *SMALL, "--epochs", "1").stderr
    line = next(x for x in err.splitlines() if x.startswith("estimated"))
    assert "probed on one batch of 8" in line and "GFLOP per sample" in line and "validation not included" in line
    assert err.index(line) < err.index("epoch 1:")


def test_beyond_a_day_the_line_names_the_cpu_preset_and_cuda_with_their_own_estimates(tmp_path, monkeypatch):
    calls = []

    def slow(flow, loss, batch_size):
        calls.append(sum(p.numel() for p in flow.parameters()))
        return {"seconds_per_step": 100_000.0 if len(calls) == 1 else 2.0, "flops_per_sample": 3e9}

    monkeypatch.setattr(estimate_module, "probe_step", slow)
    data = image_npz(tmp_path / "x.npz", n=48)
    err = run("train", "--data", data, "--out", tmp_path / "m.pt", "--lr", "1e-3", "--blocks", "1",
              "--max-steps", "3", "--device", "cpu").stderr
    line = next(x for x in err.splitlines() if x.startswith("on this CPU"))
    assert line.startswith("on this CPU about 3d11h (3 steps at 1e+05 s/step") and "3 GFLOP per sample" in line
    assert f"faster: --preset cpu ({calls[1]:,} parameters) about 6.0s (at most 3 steps; an upper bound: it " \
           "stops early); or --device cuda" in line
    assert calls[1] < calls[0]  # the cpu preset's model (16 channels), probed itself


def test_a_closed_form_fit_gets_no_estimate(tmp_path):
    import numpy as np

    np.savetxt(tmp_path / "t.csv", np.random.default_rng(0).normal(size=(64, 4)), delimiter=",",
               header="a,b,c,d", comments="")
    err = run("train", "--data", tmp_path / "t.csv", "--model", "gaussian", "--out", tmp_path / "g.pt").stderr
    assert "estimated" not in err and "s/step" not in err


def test_the_first_signal_is_answered_at_once_inside_the_handler():
    said = []
    stop = StopRequest(on_request=said.append)
    with stop.catching():
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode, before anything else
        assert said == ["SIGINT"] and stop.signal == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second signal outside a critical section stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert said == ["SIGINT"]


def test_ctrl_c_says_at_once_that_training_stops_after_the_current_step_and_how_long_it_takes(tmp_path):
    data = make_images(tmp_path / "x.npz", n=400)
    proc = subprocess.Popen(cli("train", "--data", data, "--out", tmp_path / "m.pt", *SMALL, "--epochs", "50"),
                            env=env(), stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the probe's estimate comes before the first step
        if line.startswith("estimated"):
            break
    deadline = time.monotonic() + 120
    while not (tmp_path / ".m.pt.lock").exists() and time.monotonic() < deadline:  # training has begun
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest
    said = [x for x in rest.splitlines() if x.startswith("Ctrl-C:")]
    assert len(said) == 1 and "stopping after the current step (within about " in said[0], rest
    assert "from the probed step time" in said[0] or "from the measured step time" in said[0]
    assert "Ctrl-C again stops at once" in said[0]
    assert rest.index(said[0]) < rest.index("error: interrupted (SIGINT)")


def test_with_compile_the_probed_estimate_says_compilation_is_not_in_it():
    from ood_flow.cli.train import probed_estimate

    e = {"device": "cpu", "early_stopping": False, "steps_left": 30, "seconds_per_step": 0.07, "batch_size": 64,
         "flops_per_sample": 1.1e8, "over_a_day": False, "seconds_left": 2.1}
    assert "; validation not included)" in probed_estimate(e)
    assert "; validation and compilation not included)" in probed_estimate({**e, "compiled": True})
