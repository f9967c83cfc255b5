"""Reproduce Kirichenko, Izmailov & Wilson (NeurIPS 2020) through the oodflow CLI, with a verdict per claim.

Trains and evaluates the paper's experiments, most informative first, and writes
benchmarks/results/reproduction.json (``{"experiments": [...]}``: per experiment its claim, a verdict
that is exactly one of holds / does not hold / inconclusive at this budget, our budget beside the
paper's, and rows with our AUROC beside the paper's and the bits/dim of both sets) and
reproduction.md rendered from it:

    masks                Section 7: checkerboard vs horizontal vs cycle, 8 couplings, no squeeze
    bottleneck           Section 7 / Figure 4: st-network bottleneck l in {10, 50, 100} and none
    table1-fashionmnist  Table 1: RealNVP and Glow on FashionMNIST, OOD MNIST and notMNIST
    table1-mnist         Table 1: RealNVP and Glow on MNIST, OOD FashionMNIST and notMNIST
    embeddings           Section 8: a flow on EfficientNet-Lite0 features (Table 2a analogue)
    negative             Appendix B: negative training against MNIST

``--preset cpu`` (the default) trains oodflow's cpu preset to convergence by early stopping (at most
30 epochs; hours on 2 cores); ``--preset paper`` trains the paper's models and schedule (Appendix C;
days on a CPU, so on a GPU: add ``--device cuda``). The run is resumable: each training is
checkpointed and continued with ``--resume``,
finished trainings and finished experiments are kept; run the same command again after a cut.
``--report-only`` re-renders the report from reproduction.json (unfinished experiments are listed as
inconclusive at this budget).

Usage:
    OODFLOW_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/reproduce/reproduce.py
        [--preset cpu|paper] [--device cpu|cuda] [--quick] [--only masks,bottleneck] [--work DIR]
        [--results DIR] [--report-only]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from portable import command_line, portable  # noqa: E402
from repro_experiments import (CPU, EXPERIMENTS, MODELS, OPEN, PAPER, PAPER_BUDGET, PAPER_BUDGET_OF, QUICK,  # noqa: E402
                               budget_dict, claim_of, planned_budget)
from repro_report import write_report  # noqa: E402
from repro_runner import ReproError, Runner  # noqa: E402

from ood_flow.fileio import file_lock  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="cpu: small models to convergence (hours on 2 cores); paper: the paper's models (a GPU)")
    p.add_argument("--device", default=None, help="device for training and scoring (e.g. cuda)")
    p.add_argument("--quick", action="store_true", help="tiny budget, a smoke test (report under WORK/quick/)")
    p.add_argument("--only", default="",
                   help=f"comma-separated experiment ids (default: all: {', '.join(EXPERIMENTS)})")
    p.add_argument("--work", type=Path, default=RESULTS / "work",
                   help="models, checkpoints and score files; the run is resumable: run the same command again "
                        "after a cut and it continues trainings from their checkpoints and keeps finished ones")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $OODFLOW_DATA_DIR)")
    p.add_argument("--results", type=Path, default=None,
                   help="where reproduction.md/.json go (default: benchmarks/results, or WORK/quick with --quick)")
    p.add_argument("--report-only", action="store_true", help="re-render the report from reproduction.json")
    return p.parse_args(argv)


def selected(only: str) -> list[str]:
    """``'masks,negative'`` -> those ids in the given order; empty -> all. Raises ValueError on an unknown id."""
    if not only.strip():
        return list(EXPERIMENTS)
    keys = [k.strip() for k in only.split(",") if k.strip()]
    bad = [k for k in keys if k not in EXPERIMENTS]
    if bad:
        raise ValueError(f"unknown experiment {bad[0]}; valid: {', '.join(EXPERIMENTS)}")
    return keys


def data_root(arg: str | None) -> Path:
    root = arg or os.environ.get("OODFLOW_DATA_DIR")
    if not root:
        raise ValueError("no data root: pass --data-dir DIR or set OODFLOW_DATA_DIR "
                         "(the folder with FashionMNIST/, MNIST/, notMNIST/)")
    if not Path(root).is_dir():
        raise ValueError(f"data root {root} is not a folder")
    return Path(root).resolve()


def git_state() -> str:
    """Commit of the checkout, and whether ood_flow/ had uncommitted changes (the report's provenance)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + (" (ood_flow/ modified)" if git("status", "--porcelain", "--", "../../ood_flow") else "")


def environment() -> dict:
    import torch

    import ood_flow

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"oodflow": getattr(ood_flow, "__version__", "?"), "torch": torch.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "git": git_state(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "load_start": " / ".join(f"{x:.1f}" for x in load) if load else "?"}


def previous(js: Path, preset: str, quick: bool) -> dict:
    """Finished experiments of an earlier run with the same preset, by id (kept, not rerun)."""
    if not js.exists():
        return {}
    old = json.loads(js.read_text())
    if old.get("preset", "cpu") != preset or old.get("quick") != quick or not isinstance(old.get("experiments"), list):
        return {}
    return {e["id"]: e for e in old["experiments"] if e.get("finished")}


def run_one(key: str, runner: Runner, budget) -> dict:
    """Run experiment ``key``; a failed CLI step is recorded (verdict inconclusive), not raised."""
    runner.commands = []
    t0 = time.monotonic()
    try:
        exp = {**EXPERIMENTS[key](runner, budget), "finished": True}
    except Exception as exc:  # a failed step or a bug must not cost the other experiments of a long run
        if not isinstance(exc, ReproError):
            traceback.print_exc()
        exp = unfinished(key, f"failed: {type(exc).__name__}: {exc}")
    exp.update(wall_s=time.monotonic() - t0, commands=list(runner.commands),
               run_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), git=git_state())
    return exp


def unfinished(key: str, why: str, budget=None) -> dict:
    doc = EXPERIMENTS[key].__doc__.splitlines()[0]
    return {"id": key, "title": doc.rstrip("."), "claim": claim_of(key), "verdict": OPEN, "reason": why, "rows": [],
            "budget": {"ours": (planned_budget(budget) + "; " if budget else "") + why,
                       "paper": PAPER_BUDGET[PAPER_BUDGET_OF[key]]}, "finished": False}


def progress(runner: Runner | None, key: str) -> str:
    """How far the trainings of an unfinished experiment got (from their model files, via ``oodflow info``)."""
    if runner is None:
        return ""
    parts = []
    for tag in MODELS[key]:
        model = runner.work / f"{tag}.pt"
        if not model.exists():
            parts.append(f"{tag} not started")
            continue
        info = runner.json("info", str(model))
        parts.append(f"{tag} {info.get('steps')} steps, best validation bits/dim "
                     f"{info.get('best_val_bits_per_dim') or float('nan'):.3f}, not converged")
    return "; trainings so far: " + "; ".join(parts)


def assemble(results: dict, done: dict, runner: Runner | None = None, budget=None) -> None:
    """``results['experiments']`` in the canonical order: finished ones, the rest as not finished."""
    results["experiments"] = [done.get(k) or unfinished(k, "not run to the end within this run's budget"
                                                        + progress(runner, k), budget) for k in EXPERIMENTS]
    results["wall_s"] = sum(e.get("wall_s") or 0 for e in results["experiments"])


def save(results: dict, done: dict, js: Path, budget, quick: bool) -> Path:
    """Write the report with this run's finished experiments and those another run (``--only``) has written.

    Two runs with different ``--only`` may share a results folder (one per core): each re-reads the JSON
    under a lock before writing, so neither drops the other's finished experiments.
    """
    with file_lock(js.parent / "reproduction.run", timeout=None):
        for key, exp in previous(js, budget.preset, quick).items():
            done.setdefault(key, exp)
        results["complete"] = all(k in done for k in EXPERIMENTS)
        assemble(results, done, budget=budget)
        md, _ = write_report(results, js.parent)
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        keys, root = selected(args.only), data_root(args.data_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    budget = QUICK if args.quick else (PAPER if args.preset == "paper" else CPU)
    work = args.work / ("quick" if args.quick else budget.preset)
    out = args.results or (work if args.quick else RESULTS)
    js = out / "reproduction.json"
    places = {"data": root, "work": args.work}
    command = command_line(__file__, argv if argv is not None else sys.argv[1:], **places)
    done = previous(js, budget.preset, args.quick)
    if args.report_only:
        old = json.loads(js.read_text()) if js.exists() else {}
        results = old if isinstance(old.get("experiments"), list) else {
            "preset": budget.preset, "quick": args.quick, "complete": False, "command": command,
            "environment": environment(), "budget": budget_dict(budget), "experiments": []}
        assemble(results, done, Runner(data_dir=root, work=work, figures=out / "figures"), budget)
        md, _ = write_report(results, out)
        print(f"# wrote {md} from {js}", file=sys.stderr)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(data_dir=root, work=work, figures=out / "figures", device=args.device,
                    shown=functools.partial(portable, **places))
    results = {"preset": budget.preset, "quick": args.quick, "complete": False, "command": command,
               "started": datetime.now().astimezone().isoformat(timespec="seconds"), "finished": None,
               "environment": environment(), "budget": budget_dict(budget), "experiments": []}
    print(f"# OODFLOW_DATA_DIR={root}; work {work}; report {out}", file=sys.stderr)
    for key in keys:
        if key in done:
            print(f"# experiment {key}: kept from {done[key].get('run_at')}", file=sys.stderr, flush=True)
            continue
        print(f"# experiment {key}: {EXPERIMENTS[key].__doc__.splitlines()[0]}", file=sys.stderr, flush=True)
        exp = run_one(key, runner, budget)
        if exp.get("finished"):
            done[key] = exp
        save(results, done, js, budget, args.quick)
    results["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    md = save(results, done, js, budget, args.quick)
    failed = [k for k in keys if k not in done]
    print(f"# wrote {md} ({results['wall_s'] / 60:.1f} min); unfinished: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
