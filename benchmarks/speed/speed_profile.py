"""Where each row of ``speed.py`` spends its time: per-operator self CPU time, oodflow beside normflows.

For each model of a preset (``--quick`` or full) and each task (training step, scoring pass), both
libraries run in the setting ``speed.py`` compares (oodflow at ``--precision``, normflows at the setting
given by ``--peer-precision``, channels-last: by default bf16, the setting ``speed.py`` chose for every
full-preset row of the published run), under ``torch.profiler`` for a few steps after a warm-up, twice per
library in the order oodflow, peer, peer, oodflow (a machine drifting in speed weighs on both alike). The
table lists the operators that take the most self time in either library, in milliseconds per image, and
the total, so that the two columns add up to the time each library spends per image; the wall clock of
the same runs shows the time outside every operator, and the wall clock of as many runs right after, without
the profiler, what the profiler itself added to each library (it adds a cost to every operator call, and more
to some large convolutions than to others, so profiled ratios need not be the speed table's).
``--vectors`` adds the scoring rows of ``vector_speed.py``.

Usage::

    python benchmarks/speed/speed_profile.py --quick            # a minute
    python benchmarks/speed/speed_profile.py --save             # full preset; benchmarks/results/profile.md
    python benchmarks/speed/speed_profile.py --save --out benchmarks/results/zen4   # another machine's folder
"""

from __future__ import annotations

# OpenMP wait policy: as the environment has it, as speed.py (see there)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed import PRESETS, build, load_images  # noqa: E402
from speed_machine import MALLOC_CHOICES, machine, set_allocator, shown_command  # noqa: E402
from speed_report import RESULTS  # noqa: E402
from speed_runs import Runner, machine_line, results_folder  # noqa: E402

from ood_flow.dequantize import dequantize  # noqa: E402
from ood_flow.fileio import atomic_write  # noqa: E402

PEER_PRECISION = "bf16"  # what speed.py chose for normflows in every full-preset row of the published run


def profiled(runner, task: str, steps: int) -> tuple[dict[str, float], int]:
    """Self CPU time per operator (ms) over ``steps`` runs of ``task``, the wall-clock time of those runs under
    the profiler (key ``WALL``) and of as many runs right after without it (key ``PLAIN``), and the images the
    profiled runs saw. Inductor's compiled graphs are one entry."""
    run = runner.train_step if task == "train" else runner.score
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    plain = time.perf_counter() - t0
    images = steps * (runner.train_x.shape[0] if task == "train" else runner.score_x.shape[0])
    ops: dict[str, float] = {}
    for e in prof.key_averages():
        key = "inductor's compiled graph (its fused kernels)" if "CompiledFxGraph" in e.key else e.key
        ops[key] = ops.get(key, 0.0) + e.self_cpu_time_total / 1e3
    return {**ops, WALL: wall * 1e3, PLAIN: plain * 1e3}, images


WALL, PLAIN = "wall", "wall, not profiled"


def alternated(ours, peer, task: str, steps: int) -> tuple[dict[str, float], int, dict[str, float], int]:
    """:func:`profiled` for both runners in the order ours, peer, peer, ours, each one's two profiles added up: a
    machine that slows down or speeds up during the run weighs on both libraries alike."""
    totals = {"ours": ({}, 0), "peer": ({}, 0)}
    for name in ("ours", "peer", "peer", "ours"):
        ops, images = profiled(ours if name == "ours" else peer, task, steps)
        kept, seen = totals[name]
        totals[name] = ({k: kept.get(k, 0.0) + ops.get(k, 0.0) for k in set(kept) | set(ops)}, seen + images)
    return (*totals["ours"], *totals["peer"])


def table(ours: dict[str, float], ours_n: int, peer: dict[str, float], peer_n: int, top: int,
          peer_name: str = "normflows", unit: str = "ms/img", scale: float = 1.0) -> list[str]:
    """The ``top`` operators by self time in either library, the rest, the total, and the wall-clock time of
    the same runs with the part of it outside every operator (Python, dispatch, the profiler's own)."""
    per = lambda d, n, k: d.get(k, 0.0) / n * scale  # noqa: E731
    ops = lambda d: {k: v for k, v in d.items() if k not in (WALL, PLAIN)}  # noqa: E731
    o, q = ops(ours), ops(peer)
    keys = sorted(set(o) | set(q), key=lambda k: -max(per(o, ours_n, k), per(q, peer_n, k)))[:top]
    lines = [f"| operator | oodflow {unit} | {peer_name} {unit} |", "|---|---:|---:|"]
    lines += [f"| `{k}` | {per(o, ours_n, k):.3f} | {per(q, peer_n, k):.3f} |" for k in keys]
    rest = lambda d, n: sum(v for k, v in d.items() if k not in keys) / n * scale  # noqa: E731
    total = lambda d, n: sum(d.values()) / n * scale  # noqa: E731
    lines.append(f"| (all others) | {rest(o, ours_n):.3f} | {rest(q, peer_n):.3f} |")
    lines.append(f"| **total in operators** | **{total(o, ours_n):.3f}** | **{total(q, peer_n):.3f}** |")
    lines.append(f"| wall clock, profiled | {per(ours, ours_n, WALL):.3f} | {per(peer, peer_n, WALL):.3f} |")
    lines.append(f"| outside every operator | {per(ours, ours_n, WALL) - total(o, ours_n):.3f} | "
                 f"{per(peer, peer_n, WALL) - total(q, peer_n):.3f} |")
    lines.append(f"| wall clock, the same runs without the profiler | {per(ours, ours_n, PLAIN):.3f} | "
                 f"{per(peer, peer_n, PLAIN):.3f} |")
    return lines


def vector_rows(steps: int, top: int) -> list[str]:
    """The scoring rows of ``vector_speed.py``, in microseconds per sample: oodflow eager, as its commands score,
    beside zuko compiled (its fastest), both in one precision: bf16 for the detector flow (each library's
    fastest there within the bound), fp32 for the tabular one (zuko's bf16 breaks the bound there)."""
    import vector_speed as vs

    out = []
    for name, precision in (("detector", "bf16"), ("tabular", "fp32")):
        row = vs.ROWS[name]
        x, score_x = vs.data(row["features"], row["batch"]), vs.data(row["features"], vs.SCORE_BATCH * 4, seed=1)
        ours = vs.Runner("oodflow", vs.oodflow_model(row, x), precision, False, x, score_x)
        peer = vs.Runner("zuko", vs.zuko_model(row), precision, True, x, score_x)
        o, on, q, qn = alternated(ours, peer, "score", steps)
        out += [f"## {name} flow ({row['features']}-d), scoring, {precision}: oodflow eager, zuko compiled", "",
                *table(o, on, q, qn, top, peer_name="zuko", unit="µs/sample", scale=1000.0), ""]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="oodflow's st-network precision")
    ap.add_argument("--peer-precision", default=PEER_PRECISION, choices=("fp32", "bf16"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--only", default=None, choices=("glow", "realnvp", "none"), help="one image model, or none")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/profile[.quick].md")
    ap.add_argument("--out", type=results_folder, default=RESULTS,
                    help="folder --save writes into (default benchmarks/results; e.g. benchmarks/results/zen4)")
    ap.add_argument("--vectors", action="store_true", help="also the scoring rows of vector_speed.py: oodflow "
                    "(eager, as its commands score) beside zuko compiled (its fastest there)")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    args = ap.parse_args(argv)
    malloc = set_allocator(args.malloc)
    p = PRESETS["quick" if args.quick else "full"]
    images, data = load_images(max(p["batch"], p["score_images"], 64), args.data_dir)
    gen = torch.Generator().manual_seed(0)
    train_x, score_x = dequantize(images[: p["batch"]], gen), dequantize(images[: p["score_images"]], gen)
    env = machine(data, malloc)
    out = [f"# Where the time goes: oodflow {args.precision} beside normflows", "",
           f"`{shown_command(__file__, argv, data=args.data_dir)}`", "",
           f"{machine_line(env, malloc)} Self CPU time per operator (`torch.profiler`), milliseconds "
           f"per image, {args.steps} runs after one warm-up, twice per library in the order oodflow, peer, peer, "
           f"oodflow (the two added up), each followed by as many runs without the profiler; training batch "
           f"{p['batch']}, scoring batch {p['score_batch']}.", ""]
    for arch in ("glow", "realnvp") if args.only is None else (args.only,) if args.only != "none" else ():
        for task in ("train", "score"):
            ours = Runner("oodflow", build("oodflow", arch, p[arch]), ("channels_last", args.precision),
                          train_x, score_x, p["score_batch"])
            peer_setting = ("channels_last", args.peer_precision)
            peer = Runner("normflows", build("normflows", arch, p[arch]), peer_setting, train_x, score_x,
                          p["score_batch"])
            o, on, q, qn = alternated(ours, peer, task, args.steps)
            out += [f"## {arch}, {'training' if task == 'train' else 'scoring'} (normflows {' '.join(peer_setting)})",
                    "", *table(o, on, q, qn, args.top), ""]
    if args.vectors:
        out += vector_rows(args.steps, args.top)
    text = "\n".join(out)
    print(text)
    if args.save:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out / f"profile{'.quick' if args.quick else ''}.md", overwrite=True) as tmp:
            Path(tmp).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
