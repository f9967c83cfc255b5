"""What the vector flows' bf16 scoring gains from taking the scale bound's tanh through the sigmoid.

Under bf16 the fused chain of a vector flow computes each coupling's ``tanh(raw)`` as ``2 sigmoid(2 raw) - 1``
(``AffineCoupling.scale_shift``'s ``via_sigmoid``, f59645b), because ``torch.tanh``'s CPU kernel is several
times slower than ``torch.sigmoid``'s. This script scores the rows of ``vector_speed.py`` (the detector's
flow and the tabular preset, oodflow eager in bf16 as its commands score) with the chain as it is and with
``torch.tanh`` back in it, alternating within each round, on a perturbed model (no zero-initialised layer, so
the tanh sees real values), and prints the speed-up, each one's mean distance from float32 scoring (the bf16
bound is 0.01 bits/dim), and the distance between the two.

Usage::

    python benchmarks/speed/tanh_cost.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

import vector_speed as vs  # noqa: E402
from speed_machine import MALLOC_CHOICES, machine, set_allocator, shown_command  # noqa: E402
from speed_measure import timed  # noqa: E402
from speed_runs import machine_line, perturbed, positive_int  # noqa: E402

from ood_flow.flows import fused  # noqa: E402


@contextlib.contextmanager
def with_tanh():
    """The fused chain as before f59645b: it takes ``via_sigmoid`` only where the precision in force is bf16,
    so it is told fp32 (the st-networks still run in bf16: that is decided elsewhere, by ``run_st``)."""
    original = fused.current
    fused.current = lambda: "fp32"
    try:
        yield
    finally:
        fused.current = original


def row(name: str, rounds: int) -> dict:
    r = vs.ROWS[name]
    x = vs.data(r["features"], r["batch"])
    score_x = vs.data(r["features"], vs.SCORE_BATCH * 4, seed=1)
    model = perturbed(vs.oodflow_model(r, x))
    runner = vs.Runner("oodflow", model, "bf16", False, x, score_x)
    exact = vs.Runner("oodflow", model, "fp32", False, x, score_x).score()
    sigmoid = runner.score()
    with with_tanh():
        tanh = runner.score()
    bits = lambda a, b: (a - b).abs() / (r["features"] * math.log(2))  # noqa: E731
    per = {"sigmoid": [], "tanh": []}
    for i in range(rounds):
        for way in (("sigmoid", "tanh") if i % 2 == 0 else ("tanh", "sigmoid")):
            with with_tanh() if way == "tanh" else contextlib.nullcontext():
                per[way].append(len(score_x) / timed(runner.score))
    gain = [s / t for s, t in zip(per["sigmoid"], per["tanh"])]
    return {"samples_per_s": {k: statistics.median(v) for k, v in per.items()},
            "speedup": statistics.median(gain), "spread": [min(gain), max(gain)],
            "bits_per_dim_vs_fp32": {"sigmoid": bits(sigmoid, exact).mean().item(),
                                     "tanh": bits(tanh, exact).mean().item()},
            "bits_per_dim_between": {"mean": bits(sigmoid, tanh).mean().item(),
                                     "max": bits(sigmoid, tanh).max().item()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=positive_int, default=10, help="alternating rounds of one scoring pass each")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    args = ap.parse_args(argv)
    malloc = set_allocator(args.malloc)
    env = machine("correlated Gaussian vectors (vector_speed.py)", malloc, peers=())
    results = {name: row(name, args.rounds) for name in ("detector", "tabular")}
    print(f"`{shown_command(__file__, argv)}`\n")
    print(f"{machine_line(env, malloc, flags=True)} oodflow bf16 eager scoring of {vs.SCORE_BATCH * 4} samples "
          f"per pass, {args.rounds} alternating rounds, medians.\n")
    print("| row | through the sigmoid, samples/s | torch.tanh, samples/s | speed-up (min-max) | mean \\|Δ bits/dim\\| "
          "against fp32: sigmoid / tanh | between the two: mean / max |\n|---|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        rates, fp32, between = res["samples_per_s"], res["bits_per_dim_vs_fp32"], res["bits_per_dim_between"]
        print(f"| {name} | {rates['sigmoid']:.0f} | {rates['tanh']:.0f} | {res['speedup']:.2f}x "
              f"({res['spread'][0]:.2f}-{res['spread'][1]:.2f}) | {fp32['sigmoid']:.1e} / {fp32['tanh']:.1e} | "
              f"{between['mean']:.1e} / {between['max']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
