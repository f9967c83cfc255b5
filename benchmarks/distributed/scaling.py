"""Data-parallel scaling of ``oodflow train`` from 1 to 2 processes on this machine (CPU, gloo).

Usage::

    python benchmarks/distributed/scaling.py --save      # writes benchmarks/results/distributed_scaling.{json,md}
    python benchmarks/distributed/scaling.py --steps 20  # a quick check that the script works

The same run (RealNVP, ``--channels 16 --blocks 2`` on the demo-fashionmnist samples shipped with oodflow,
global batch 64, ``--max-steps`` steps) three ways: one process with one thread, one process with
two threads, and ``torchrun --nproc_per_node 2`` with one thread each. The time is the training
loop's own (``seconds`` of ``--json``: no interpreter start, no process-group set-up). Each
configuration runs ``--repeats`` times, alternating, and the best is kept. The load average of the
machine is recorded before and after, since other jobs share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[1] / "benchmarks" / "results"
CONFIGS = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}


def train_seconds(procs: int, threads: int, steps: int, work: Path) -> float:
    """The training loop's seconds of one run."""
    args = ["train", "--data", "demo-fashionmnist", "--out", str(work / f"m{procs}{threads}.pt"), "--channels", "16",
            "--blocks", "2", "--batch-size", "64", "--max-steps", str(steps), "--lr", "1e-3", "--overwrite",
            "--quiet", "--json"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m",
                 "ood_flow"] if procs > 1 else [sys.executable, "-m", "ood_flow"])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OODFLOW_THREADS": str(threads)}
    done = subprocess.run(launcher + args, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout)["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, (procs, threads) in CONFIGS.items():
                seconds = train_seconds(procs, threads, args.steps, Path(tmp))
                best[name] = min(best.get(name, float("inf")), seconds)
    load_after = os.getloadavg()
    base = best["1 process x 1 thread"]
    rows = {name: {"seconds": round(s, 2), "steps_per_s": round(args.steps / s, 2), "speedup": round(base / s, 2)}
            for name, s in best.items()}
    record = {"steps": args.steps, "global_batch": 64, "cores": os.cpu_count(), "rows": rows,
              "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in load_after]}
    print(json.dumps(record, indent=2))
    if args.save:
        RESULTS.joinpath("distributed_scaling.json").write_text(json.dumps(record, indent=2) + "\n")
        RESULTS.joinpath("distributed_scaling.md").write_text(_markdown(record))


def _markdown(record: dict) -> str:
    lines = ["# Data-parallel scaling, 1 to 2 processes (CPU, gloo)", "",
             "`python benchmarks/distributed/scaling.py --save`: RealNVP (16 channels, 2 blocks) on demo-fashionmnist, "
             f"global batch {record['global_batch']}, {record['steps']} steps, best of the repeats; "
             f"{record['cores']} cores; load average before {record['loadavg_before']}, after "
             f"{record['loadavg_after']}.", "",
             "| configuration | training seconds | steps/s | speed-up vs 1 x 1 |", "|---|---|---|---|"]
    for name, row in record["rows"].items():
        lines.append(f"| {name} | {row['seconds']} | {row['steps_per_s']} | {row['speedup']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
