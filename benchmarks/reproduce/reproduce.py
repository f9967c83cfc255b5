"""Reproduce Kirichenko, Izmailov & Wilson (NeurIPS 2020) at CPU scale through the oodflow CLI.

Trains and evaluates CPU-scale versions of the paper's experiments, each sized for about ten
minutes on two cores, and writes benchmarks/results/reproduction.md (our AUROC beside the
paper's, the configuration, the sample sizes and the wall time), reproduction.json and the
figures under benchmarks/results/figures/:

    1. RealNVP and Glow on FashionMNIST, OOD MNIST and notMNIST (Table 1)
    2. masks: checkerboard vs horizontal vs cycle, same size and budget (Section 7, App. I.1)
    3. st-network bottleneck l in {10, 50, 100} and none (Figure 4)
    4. flows on EfficientNet-Lite0 embeddings vs raw pixels (Section 8, Table 2a analogue)
    5. negative training against MNIST (Appendix B)
    6. RealNVP on the CIFAR-10 sample, MNIST/notMNIST in RGB as OOD (the colour path)

Every step is ``python -m ood_flow ...``, echoed to stderr as ``$ oodflow ...``. Models and score
files go to --work (git-ignored). --quick runs everything at a tiny budget as a smoke test and
writes its report under WORK/quick/ so it never replaces the real one; --only re-runs some
experiments and keeps the others from the existing reproduction.json.

Usage:
    OODFLOW_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/reproduce/reproduce.py [--quick]
        [--only 1,4] [--work DIR] [--data-dir DIR] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from repro_experiments import EXPERIMENTS, FULL, QUICK, budget_dict  # noqa: E402
from repro_report import write_report  # noqa: E402
from repro_runner import ReproError, Runner  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny budget, a smoke test (report under WORK/quick/)")
    p.add_argument("--only", default="", help="comma-separated experiment numbers (default: all, 1-6)")
    p.add_argument("--work", type=Path, default=RESULTS / "work", help="models and score files")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $OODFLOW_DATA_DIR)")
    p.add_argument("--results", type=Path, default=None,
                   help="where reproduction.md/.json and figures/ go (default: benchmarks/results, "
                        "or WORK/quick with --quick)")
    return p.parse_args(argv)


def selected(only: str) -> list[int]:
    """``'1,4'`` -> ``[1, 4]``; empty -> all. Raises ValueError on an unknown number."""
    if not only.strip():
        return sorted(EXPERIMENTS)
    keys = [int(k) for k in only.split(",") if k.strip()]
    bad = [k for k in keys if k not in EXPERIMENTS]
    if bad:
        raise ValueError(f"unknown experiment {bad[0]}; valid: {', '.join(map(str, EXPERIMENTS))}")
    return keys


def data_root(arg: str | None) -> Path:
    root = arg or os.environ.get("OODFLOW_DATA_DIR")
    if not root:
        raise ValueError("no data root: pass --data-dir DIR or set OODFLOW_DATA_DIR "
                         "(the folder with FashionMNIST/, MNIST/, notMNIST/, CIFAR10/)")
    if not Path(root).is_dir():
        raise ValueError(f"data root {root} is not a folder")
    return Path(root).resolve()


def short(path: Path) -> Path:
    """``path`` relative to the current folder when inside it, so echoed commands stay readable."""
    path = path.resolve()
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def git_state() -> str:
    """Commit of the checkout, and whether ood_flow/ had uncommitted changes (the report's provenance)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + (" (ood_flow/ modified)" if git("status", "--porcelain", "--", "../ood_flow") else "")


def environment() -> dict:
    import torch

    import ood_flow

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"oodflow": getattr(ood_flow, "__version__", "?"), "torch": torch.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "git": git_state(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "load_start": " / ".join(f"{x:.1f}" for x in load) if load else "?"}


def previous(js: Path, quick: bool) -> dict:
    """Experiments of an earlier run of the same kind, kept when --only re-runs some."""
    if not js.exists():
        return {}
    old = json.loads(js.read_text())
    return old.get("experiments", {}) if old.get("quick") == quick else {}


def run_one(key: int, runner: Runner, budget) -> dict:
    """Run experiment ``key``; a failed CLI step is recorded, not raised."""
    runner.commands = []
    t0 = time.monotonic()
    try:
        exp = EXPERIMENTS[key](runner, budget)
    except ReproError as exc:
        exp = {"title": EXPERIMENTS[key].__doc__.splitlines()[0], "error": str(exc)}
    except Exception as exc:  # a bug here must not cost the other experiments of an hour-long run
        traceback.print_exc()
        exp = {"title": EXPERIMENTS[key].__doc__.splitlines()[0], "error": f"{type(exc).__name__}: {exc}"}
    exp.update(wall_s=time.monotonic() - t0, commands=list(runner.commands),
               run_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), git=git_state())
    return exp


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        keys, root = selected(args.only), data_root(args.data_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    budget = QUICK if args.quick else FULL
    work = short(args.work / ("quick" if args.quick else "full"))
    out = short(args.results or (work if args.quick else RESULTS))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(data_dir=root, work=work, figures=out / "figures")
    results = {"quick": args.quick, "complete": False,
               "command": shlex.join(["python", "benchmarks/reproduce/reproduce.py",
               *(argv if argv is not None else sys.argv[1:])]),
               "started": datetime.now().astimezone().isoformat(timespec="seconds"), "finished": None,
               "environment": environment(), "budget": budget_dict(budget),
               "experiments": previous(out / "reproduction.json", args.quick)}
    print(f"# OODFLOW_DATA_DIR={root}; work {work}; report {out}", file=sys.stderr)
    for key in keys:
        print(f"# experiment {key}: {EXPERIMENTS[key].__doc__.splitlines()[0]}", file=sys.stderr, flush=True)
        results["experiments"][str(key)] = run_one(key, runner, budget)
        results["wall_s"] = sum(e.get("wall_s") or 0 for e in results["experiments"].values())
        write_report(results, out)
    results.update(complete=True, finished=datetime.now().astimezone().isoformat(timespec="seconds"))
    md, _ = write_report(results, out)
    failed = [k for k in keys if results["experiments"][str(k)].get("error")]
    print(f"# wrote {md} ({minutes_text(results['wall_s'])}); failed: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0


def minutes_text(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    sys.exit(main())
