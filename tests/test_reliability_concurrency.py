"""Concurrent writers as real processes: every group lands, a second trainer of one model is refused.

Issue 12 saw two ``score`` processes writing different groups to one file lose a group in 4 of 7
tries. Here the writers start together (a shared start file) and each adds several groups, so
without the lock a lost update is all but certain.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from reliability_helpers import cli, env, make_images, make_model, no_leftovers

from ood_flow import store

WRITER = """
import os, sys, time
import numpy as np
from ood_flow import store
path, tag, n, go, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
open(go + "." + tag, "w").close()  # ready
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(n):
    store.write_group(path, f"{tag}-{i}", {"log_likelihood": np.full(size, i, float)}, {"writer": tag})
"""
N = 200_000  # 1.6 MB per group: copying the file takes long enough that unlocked writers overlap (checked:
# without the lock, 3 writers of 6 groups kept 12 of the 18)


def _start(procs, go, tags):
    deadline = time.monotonic() + 300
    while not all(os.path.exists(f"{go}.{t}") for t in tags) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()


def _race(tmp_path, writers: int, groups: int) -> set[str]:
    path, go = tmp_path / "s.h5", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{k}", str(groups), str(go), str(N)],
                              env=env(), stderr=subprocess.PIPE, text=True) for k in range(writers)]
    _start(procs, go, [f"w{k}" for k in range(writers)])
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return set(store.list_groups(path))


@pytest.mark.parametrize("round_", range(2))
def test_concurrent_writers_to_one_score_file_all_land(tmp_path, round_):
    got = _race(tmp_path, writers=3, groups=6)
    assert got == {f"w{k}-{i}" for k in range(3) for i in range(6)}, f"round {round_}: groups lost"
    for name in got:
        arrays, attrs = store.read_group(tmp_path / "s.h5", name)
        assert (arrays["log_likelihood"] == float(name.split("-")[1])).all() and len(arrays["log_likelihood"]) == N
    no_leftovers(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(7))
def test_two_score_commands_writing_different_groups_both_land(tmp_path, round_):
    """The issue's own experiment, with the real command, seven times."""
    model, data = make_model(tmp_path), make_images(tmp_path / "x.npz", n=300)
    out = tmp_path / "s.h5"
    procs = [subprocess.Popen(cli("score", data, "--model", model, "--out", out, "--name", name, "--quiet"), env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    assert set(store.list_groups(out)) == {"a", "b"}, f"round {round_}: a group was lost"
    no_leftovers(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("after_first_save", [False, True], ids=["at-start", "after-first-save"])
def test_a_second_trainer_of_the_same_model_is_refused_while_the_first_runs(tmp_path, after_first_save):
    """The first run trains far longer than the test needs and is stopped (SIGTERM) once the second has been
    refused, so the second always meets a live run: before its model file exists, or after (then the file's
    existence must not hide the live writer)."""
    data = make_images(tmp_path / "x.npz", n=400)
    args = ("train", "--data", data, "--out", tmp_path / "m.pt", "--channels", "4", "--blocks", "1",
            "--batch-size", "8", "--quiet")
    first = subprocess.Popen(cli(*args, "--epochs", "1000"), env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    ready = (lambda: (tmp_path / "m.pt").exists()) if after_first_save else (
        lambda: any(p.name.endswith(".lock") for p in tmp_path.iterdir()))
    while not ready() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cli(*args, "--epochs", "3"), env=env(), capture_output=True, text=True, timeout=600)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=900) == 143, first.stderr.read()
    assert second.returncode == 1 and "being written by process" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    no_leftovers(tmp_path)


def test_readers_never_see_a_half_written_file(tmp_path):
    """A reader racing a writer sees the old file or the new one, never a mixture or a truncated one."""
    path = tmp_path / "s.h5"
    store.write_group(path, "g0", {"log_likelihood": np.zeros(50_000)}, {})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "w", "4", str(tmp_path / "go"), "1000"],
                            env=env())
    _start([proc], tmp_path / "go", ["w"])
    seen = 0
    rng = random.Random(0)
    while proc.poll() is None:
        with h5py.File(path, "r") as f:  # a truncated or half-written file would fail to open or read
            assert f["g0/log_likelihood"].shape == (50_000,)
            seen += 1
        time.sleep(rng.random() * 0.01)
    assert proc.wait() == 0 and seen > 0
    assert os.path.exists(path) and len(store.list_groups(path)) == 5
