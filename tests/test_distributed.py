"""Data-parallel training and sharded scoring under torchrun (gloo, 2 processes on the CPU).

One torchrun launch (tests/distributed_job.py) trains and scores; the single-process references
run here. Outputs are compared, not weights (Adam turns rounding noise in parameters with exactly
zero gradient into steps of about lr).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ood_flow import TrainConfig, load_model, score_source, train_flow
from ood_flow.cli.main import app
from ood_flow.dequantize import dequantize_indexed, discrete_log_likelihood
from ood_flow.distributed import Dist, check_layout, interleave
from ood_flow.distributed.group import DistributedError, _rebuilt
from ood_flow.errors import AlreadyExists, GateFailed, InputError, NoBfloat16, UsageError
from ood_flow.flows.layers import ActNorm
from ood_flow.train import load_training_state
from tests.cli_helpers import image_npz, one_line_error, run, run_json, runner

HERE = Path(__file__).parent
SMALL = {"channels": 4, "blocks": 1}


def torchrun(*args: str, **popen) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OODFLOW_DIST_TIMEOUT": "60",
            "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    data = image_npz(out / "in.npz", n=80)
    done = subprocess.run(torchrun(str(HERE / "distributed_job.py"), str(out), str(data)), env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "job.stderr").write_text(done.stderr)
    return out, data


def _held_out_ll(path: Path, data: Path) -> torch.Tensor:
    flow = load_model(path).eval()
    x = torch.from_numpy(np.load(data)["x"][:16])[:, None]
    with torch.no_grad():
        return discrete_log_likelihood(flow.log_prob(dequantize_indexed(x, torch.arange(16), 12345)), x)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    rel = ((a - b).abs() / b.abs()).max().item()
    assert rel < 1e-5, rel


def _config(steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=16, lr=1e-3, seed=0)


def test_two_processes_with_sync_bn_train_the_model_of_one_with_the_same_global_batch(job, tmp_path):
    out, data = job
    train_flow(str(data), _config(5), out=tmp_path / "one.pt", model_options=SMALL)
    start = _held_out_ll(out / "three.pt", data)
    one, two = _held_out_ll(tmp_path / "one.pt", data), _held_out_ll(out / "five.pt", data)
    assert (one - start).abs().max() > 1e-2  # the weights moved
    _close(two, one)
    assert load_model(out / "five.pt") is not None
    assert load_training_state(out / "five.ckpt.pt", "cpu")[1]["processes"] == 2


def test_data_parallel_training_warns_of_no_gradient_laid_out_unlike_its_parameter(job):
    """DistributedDataParallel warned on every rank that gradient strides did not match its buckets' (the 1x1
    weight-normalised kernels of RealNVP's st-networks, test_weightnorm.py)."""
    out, _ = job
    assert "Grad strides do not match" not in (out / "job.stderr").read_text()


def test_actnorm_starts_from_the_global_first_batch_identically_on_every_rank(job):
    out, _ = job
    rank0, rank1 = torch.load(out / "actnorm-rank0.pt"), torch.load(out / "actnorm-rank1.pt")
    assert torch.equal(rank0, rank1)
    saved = torch.cat([torch.cat([m.bias.flatten(), m.log_scale.flatten()])
                       for m in load_model(out / "glow.pt").modules() if isinstance(m, ActNorm)])
    assert torch.equal(saved, rank0)


def test_a_two_process_checkpoint_resumes_on_one_process_and_continues_identically(job, tmp_path):
    out, data = job
    for name in ("three.pt", "three.ckpt.pt"):
        shutil.copy(out / name, tmp_path / name)
    train_flow(str(data), TrainConfig(max_steps=5), out=tmp_path / "three.pt", resume=True)
    _close(_held_out_ll(tmp_path / "three.pt", data), _held_out_ll(out / "five.pt", data))
    assert load_training_state(tmp_path / "three.ckpt.pt", "cpu")[1]["position"]["step"] == 5


def test_two_process_scoring_equals_one_process_scoring_bit_for_bit_in_order(job):
    out, data = job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = score_source(str(data), out / "five.pt", batch_size=16)
    finally:
        torch.set_num_threads(threads)
    with h5py.File(out / "scores.h5") as f:
        group = f[list(f)[0]]
        for name, values in one.arrays.items():
            assert np.array_equal(group[name][()], values), name
        assert [i.decode() for i in group["id"][()]] == list(one.ids)


def test_killing_one_rank_ends_the_job_with_an_error_and_keeps_the_checkpoint(tmp_path):
    data = image_npz(tmp_path / "in.npz", n=80)
    model = tmp_path / "m.pt"
    proc = subprocess.Popen(torchrun("-m", "ood_flow", "train", "--data", str(data), "--out", str(model),
                                     "--channels", "4", "--blocks", "1", "--batch-size", "8", "--epochs", "100000",
                                     "--quiet"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ckpt = tmp_path / "m.ckpt.pt"
        deadline = time.time() + 300
        while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert ckpt.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
        os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    flow, extra = load_training_state(ckpt, "cpu")
    assert extra["position"]["step"] > 0 and load_model(model) is not None


def test_an_existing_output_gives_every_rank_the_commands_own_one_line_error(tmp_path):
    """Rank 0 finds the output; the other ranks rebuild its error from what it sent and print the same line (they
    printed the message with the file name replaced by the whole message)."""
    data = image_npz(tmp_path / "in.npz", n=40)
    model = tmp_path / "m.pt"
    model.write_bytes(b"kept")
    done = subprocess.run(torchrun("-m", "ood_flow", "train", "--data", str(data), "--out", str(model),
                                   "--channels", "4", "--blocks", "1", "--max-steps", "1", "--quiet"),
                          env=_env(), capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    expected = f"error: {model} exists; pass --resume to continue training it or --overwrite to replace it"
    assert done.returncode != 0 and errors == [expected, expected], done.stderr[-3000:]
    assert model.read_bytes() == b"kept"


def test_scores_printed_without_out_are_printed_once(tmp_path):
    """Every rank wrote the TSV rows (plain scores and --flags), so a torchrun job printed each table twice."""
    data = image_npz(tmp_path / "in.npz", n=40)
    model = tmp_path / "m.pt"
    run("train", "--data", data, "--out", model, "--channels", "4", "--blocks", "1", "--max-steps", "2", "--quiet")
    for extra in ((), ("--flags",)):
        done = subprocess.run(torchrun("-m", "ood_flow", "score", str(data), "--model", str(model), "--limit", "6",
                                       "--quiet", *extra), env=_env(), capture_output=True, text=True, timeout=300)
        lines = done.stdout.splitlines()
        assert done.returncode == 0 and len(lines) == 7 and lines[0].startswith("id\t"), done.stdout + done.stderr


def test_calibrate_under_torchrun_writes_the_model_file_once(tmp_path):
    """Every rank wrote the calibration into the model file, and all but one failed on its lock (exit 1)."""
    data, held = image_npz(tmp_path / "in.npz", n=40), image_npz(tmp_path / "held.npz", n=30, seed=5)
    model = tmp_path / "m.pt"
    run("train", "--data", data, "--out", model, "--channels", "4", "--blocks", "1", "--max-steps", "2", "--quiet")
    done = subprocess.run(torchrun("-m", "ood_flow", "calibrate", str(held), "--model", str(model), "--overwrite",
                                   "--quiet"), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "error" not in done.stderr, done.stderr[-3000:]
    assert run_json("info", model)["calibration"]["n"] == 30


@pytest.mark.parametrize("command", [["info", "m.pt"], ["visualize", "samples", "--model", "m.pt", "--out", "s.png"],
                                     ["demo"]], ids=lambda c: c[0])
def test_a_command_that_runs_in_one_process_refuses_torchrun(command, monkeypatch):
    """Each process would have done the whole job (and written the same files)."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    one_line_error(result, f"oodflow {command[0]} runs in one process", "torchrun runs train, score, calibrate, embed")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: nothing to refuse
    assert "runs in one process" not in runner.invoke(app, command).stderr


def test_every_error_class_is_rebuilt_on_another_rank_as_it_was_raised():
    raised = [AlreadyExists("m.pt", resume=True), AlreadyExists("s.h5: group 'x'"), NoBfloat16.on("cpu"),
              UsageError("--lr inf: give a finite number"), InputError("x.npy: NaN at row 3")]
    for error in raised:
        again = _rebuilt(*error.relayed(), str(error))
        assert type(again) is type(error) and str(again) == str(error), error
        assert again.cli_message() == error.cli_message() and again.exit_code == error.exit_code
    gate = GateFailed("3 of 10 flagged", result=object())
    assert type(_rebuilt(*gate.relayed(), str(gate))) is DistributedError  # its result stays where it was computed
    odd = _rebuilt("AlreadyExists", (), {"colour": "red"}, "m.pt exists")  # arguments its class does not take
    assert type(odd) is DistributedError and str(odd) == "m.pt exists"


def _rank_pid(parent: int, rank: int) -> int:
    """The pid of torchrun's worker of ``rank`` (a child of ``parent`` whose environment says so)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank}")


def test_sync_bn_without_a_process_group_is_a_usage_error(tmp_path):
    data = image_npz(tmp_path / "in.npz", n=40)
    result = run("train", "--data", data, "--out", tmp_path / "m.pt", "--sync-bn", "--max-steps", "1", code=2)
    one_line_error(result, "--sync-bn", "torchrun")


def test_layouts_data_parallelism_cannot_split_are_usage_errors():
    with pytest.raises(UsageError, match="only 3 training samples"):
        check_layout(Dist(world=4, backend="gloo"), 3, 8)
    with pytest.raises(UsageError, match="multiple of the 3 processes"):
        check_layout(Dist(world=3, backend="gloo"), 100, 32)
    check_layout(Dist(world=2, backend="gloo"), 100, 32)


def test_interleave_restores_the_order_of_the_batch_grid():
    rows = np.arange(23)
    parts = [np.concatenate([rows[i * 4:(i + 1) * 4] for i in range(r, 6, 3)]) for r in range(3)]
    assert np.array_equal(interleave(parts, 4), rows)
