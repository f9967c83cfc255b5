"""What oodflow's bf16 accuracy bound costs: its narrow convolutions in each mode, beside normflows.

An st-network's first and last convolutions have few channels; how they compute under bf16 is
``Runtime.narrow`` (``ood_flow.flows.precision.NARROW_MODES``): ``fp32`` kernels, ``split`` bf16 kernels
on operands split into a bf16 part and remainder (what the runtime picks on a CPU with AMX), or plainly
``bf16`` as normflows runs them under autocast, which no runtime picks because it broke the bound on
trained models. This script
times oodflow's bf16 rows of ``speed.py`` (full preset) in each mode beside normflows in channels-last
bf16 (its best setting in every full-preset row of ``speed.py``), training and scoring, alternating within
each round, and with ``--models`` scores trained model files in each mode against fp32 as
``bf16_error.py`` does (the first 2,000 MNIST test images), so that speed and accuracy sit side by side.

Usage::

    OODFLOW_DATA_DIR=../shared/data python benchmarks/speed/narrow_cost.py [--models m1.pt ...] [--save]
"""

from __future__ import annotations

# OpenMP wait policy: as the environment has it, as speed.py (see there)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from portable import portable  # noqa: E402
from speed import PRESETS, build, load_images  # noqa: E402
from speed_machine import MALLOC_CHOICES, machine, set_allocator, shown_command  # noqa: E402
from speed_report import RESULTS, write_pair  # noqa: E402
from speed_runs import Runner, positive_int, rate, results_folder  # noqa: E402

from ood_flow.dequantize import dequantize  # noqa: E402
from ood_flow.errors import OodflowError, UsageError  # noqa: E402
from ood_flow.flows.io import read_model_file  # noqa: E402
from ood_flow.flows.precision import NARROW_MODES  # noqa: E402

TASKS = ("train", "score")


def timings(arch: str, p: dict, train_x: torch.Tensor, score_x: torch.Tensor, rounds: int) -> dict:
    """Images per second of oodflow bf16 in each narrow mode and of normflows, medians and ratios per round."""
    runners = {f"oodflow {m}": Runner("oodflow", build("oodflow", arch, p[arch]), ("channels_last", "bf16"), train_x,
                                      score_x, p["score_batch"], narrow=m) for m in NARROW_MODES}
    runners["normflows"] = Runner("normflows", build("normflows", arch, p[arch]), ("channels_last", "bf16"), train_x,
                                  score_x, p["score_batch"])
    for r in runners.values():
        r.train_step()
        r.score(score_x[: p["score_batch"]])
    out = {}
    for task in TASKS:
        per = {n: [] for n in runners}
        for i in range(rounds):
            for n in (list(runners) if i % 2 == 0 else list(runners)[::-1]):
                per[n].append(rate(runners[n], task))
        out[task] = {n: {"images_per_s": statistics.median(v), "spread": [min(v), max(v)],
                         "vs_normflows": statistics.median(a / b for a, b in zip(v, per["normflows"]))}
                     for n, v in per.items()}
    return out


@contextlib.contextmanager
def narrow_mode(mode: str):
    """``score_source`` with its runtime's narrow mode set to ``mode`` (the API picks it from the machine)."""
    import ood_flow.runtime as runtime

    original = runtime.session

    @contextlib.contextmanager
    def session(*args, **values):
        with original(*args, **values) as rt:
            yield dataclasses.replace(rt, narrow=mode)

    runtime.session = session
    try:
        yield
    finally:
        runtime.session = original


def errors(models: list[str], source: str, limit: int, data_dir: Path) -> dict:
    """Mean |bits/dim(bf16) - bits/dim(fp32)| of each model file in each narrow mode."""
    from ood_flow import score_source
    from ood_flow.data import SourceOptions

    options, out = SourceOptions(limit=limit, data_dir=data_dir), {}
    for model in models:
        exact = score_source(source, model, options=options, precision="fp32").arrays["bits_per_dim"]
        out[model] = {}
        for mode in NARROW_MODES:
            with narrow_mode(mode):
                bf16 = score_source(source, model, options=options, precision="bf16").arrays["bits_per_dim"]
            out[model][mode] = float(abs(bf16 - exact).mean())
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# What the bf16 bound costs: oodflow's narrow convolutions in each mode", "",
             f"`{res['command']}`", "",
             f"Machine: {m['cpu']}, flags {', '.join(m['cpu_flags'])}, {m['threads']} threads, malloc {m['malloc']}, "
             f"load average {m['load_average_start'][0]:.2f} at the start; torch {m['torch']}. "
             f"{res['preset'].capitalize()} preset of "
             f"speed.py, {res['rounds']} alternating rounds, medians (ratio to normflows: median of the rounds' "
             "ratios); normflows in channels-last bf16.", "",
             "| model | task | oodflow bf16, narrow fp32 | narrow split | narrow bf16 (breaks the bound) | normflows |",
             "|---|---|---:|---:|---:|---:|"]
    for arch, tasks in res["timings"].items():
        for task, rows in tasks.items():
            cells = [f"{rows[f'oodflow {n}']['images_per_s']:.1f} img/s ({rows[f'oodflow {n}']['vs_normflows']:.2f}x)"
                     for n in NARROW_MODES]
            lines.append(f"| {arch} | {task} | {' | '.join(cells)} | {rows['normflows']['images_per_s']:.1f} img/s |")
    if res["errors"]:
        lines += ["", f"Mean \\|bits/dim(bf16) - bits/dim(fp32)\\| scoring {res['source']} (first {res['limit']}), "
                  "bound 0.01:", "", "| model file | narrow fp32 | narrow split | narrow bf16 |",
                  "|---|---:|---:|---:|"]
        for model, e in res["errors"].items():
            lines.append(f"| `{model}` | " + " | ".join(f"{e[n]:.4f}" for n in NARROW_MODES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help="trained model files whose bf16 error to measure")
    ap.add_argument("--source", default="mnist:test")
    ap.add_argument("--limit", type=positive_int, default=2000)
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--quick", action="store_true", help="speed.py's quick preset (small models)")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/narrow_cost[.quick].{json,md}")
    ap.add_argument("--out", type=results_folder, default=RESULTS,
                    help="folder --save writes into (default benchmarks/results; e.g. benchmarks/results/zen4)")
    args = ap.parse_args(argv)
    try:  # before the timings: a missing or corrupt model file is one line, not a traceback minutes later
        for model in args.models:
            read_model_file(model)
    except OodflowError as exc:  # as oodflow and bf16_error.py say it
        print(f"error: {exc}", file=sys.stderr)
        return 1
    malloc = set_allocator(args.malloc)
    p = PRESETS["quick" if args.quick else "full"]
    images, data = load_images(max(p["batch"], p["score_images"]), args.data_dir)
    gen = torch.Generator().manual_seed(0)
    train_x, score_x = dequantize(images[: p["batch"]], gen), dequantize(images[: p["score_images"]], gen)
    res = {"command": shown_command(__file__, argv, data=args.data_dir),
           "preset": "quick" if args.quick else "full",
           "machine": machine(data, malloc), "rounds": args.rounds, "source": args.source, "limit": args.limit,
           "timings": {arch: timings(arch, p, train_x, score_x, args.rounds) for arch in ("glow", "realnvp")}}
    try:
        res["errors"] = {portable(m): e for m, e in errors(args.models, args.source, args.limit, args.data_dir).items()}
    except OodflowError as exc:  # e.g. the source's data missing: one line, as oodflow says it
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    text = markdown(res)
    print(text, end="")
    if args.save:
        write_pair("narrow_cost.quick" if args.quick else "narrow_cost", res, text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
