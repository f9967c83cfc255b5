"""The logit layer's forward pass, as oodflow computes it, against the formula it replaced (67a6a03).

The logit is the first layer of every image flow. Its value ``log p - log(1 - p)`` and its log-determinant
``log(1 - 2a) - log p - log(1 - p)`` need the same two logarithms; the former code computed each twice, and
``torch.log1p`` runs several times slower than ``torch.log`` on a CPU. This script times ``Logit.forward``
against that former formula (restated below, operation for operation) on batches of FashionMNIST-sized
images, alternating, checks that both give the same bits, and times ``torch.log`` and ``torch.log1p`` alone on
the same pixels.

Usage::

    python benchmarks/speed/logit_speed.py [--batch 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed_machine import MALLOC_CHOICES, machine, set_allocator, shown_command  # noqa: E402
from speed_measure import alternate, fastest_us  # noqa: E402
from speed_runs import machine_line, positive_int  # noqa: E402

from ood_flow.flows.base import sum_except_batch  # noqa: E402
from ood_flow.flows.preprocess import Logit  # noqa: E402


def former(layer: Logit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Logit.forward`` as it was before 67a6a03: each logarithm computed twice."""
    p = layer.alpha + (1 - 2 * layer.alpha) * x
    y = torch.log(p) - torch.log1p(-p)
    ld = math.log(1 - 2 * layer.alpha) - torch.log(p) - torch.log1p(-p)
    return y, sum_except_batch(ld)


def fastest(fn) -> float:
    """Microseconds per call, the fastest of 20 calls."""
    return fastest_us(fn, 20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=positive_int, default=256, help="images of 1 x 28 x 28 per call")
    ap.add_argument("--rounds", type=positive_int, default=5, help="alternating rounds (each: 20 calls per formula)")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    args = ap.parse_args(argv)
    malloc = set_allocator(args.malloc)
    env = machine("uniform random pixels", malloc, peers=())  # before the timings: the load at the start
    x = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    layer = Logit()
    now, then = layer.forward(x), former(layer, x)
    same = all(torch.equal(a, b) for a, b in zip(now, then))
    p = layer.alpha + (1 - 2 * layer.alpha) * x
    ways = {"Logit.forward": lambda: layer.forward(x), "former formula": lambda: former(layer, x)}
    per = alternate(ways, args.rounds, fastest)
    ratios = [b / a for a, b in zip(per["Logit.forward"], per["former formula"])]
    print(f"`{shown_command(__file__, argv)}`\n")
    print(f"{machine_line(env, malloc, flags=True)} Batch {args.batch} x 1 x 28 x 28, fastest of 20 calls per round, "
          f"{args.rounds} alternating rounds; same bits: {'yes' if same else 'NO'}.\n")
    print("| computation | µs per batch, median (min-max) |\n|---|---:|")
    for name, v in per.items():
        print(f"| {name} | {statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f}) |")
    print(f"| `torch.log(p)` alone | {fastest(lambda: torch.log(p)):.0f} |")
    print(f"| `torch.log1p(-p)` alone | {fastest(lambda: torch.log1p(-p)):.0f} |")
    print(f"\nformer / now: {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
