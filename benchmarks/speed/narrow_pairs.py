"""What pairing output columns buys the bf16 split's narrowing convolutions (``ood_flow.flows.fused._pairs_outputs``).

An st-network's last convolution predicts a few channels (``s`` and ``t``) from many. oneDNN's bf16 kernel computes
16 output channels per pass on AVX-512 (:data:`ood_flow.flows.fused.LANES`), so one with 4 or 8 takes about as long
as one with 16. Under the bound's split (hi and lo kernels stacked: twice the output channels) a narrowing
convolution with at most 4 output channels computes two neighbouring output columns per pass instead: a kernel
one column wider that moves two at a time, a third more products in half the passes.

Three tables, each in alternating rounds on this machine:

1. oneDNN's kernel alone (prepacked bf16 weights, channels-last), 3 x 3, by output channels: the lanes.
2. The fused path's narrowing split convolution (``FusedPath._split``) paired and unpaired, on the shapes of the
   speed presets' st-networks and an odd width, with the largest difference between the two results.
3. Whole models scoring in bf16 (the full preset's Glow and RealNVP of ``speed.py``, 1,024 images in batches of
   256), paired and unpaired, with the largest difference in log-likelihood.

Usage::

    python benchmarks/speed/narrow_pairs.py [--rounds 7] [--save] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed_machine import MALLOC_CHOICES, machine, set_allocator, shown_command  # noqa: E402
from speed_measure import alternate, fastest_us, timed  # noqa: E402
from speed_models import perturbed_twins  # noqa: E402
from speed_runs import machine_line, positive_int, publish_as, ratio_spread, results_folder, spread  # noqa: E402

from ood_flow.flows import fused  # noqa: E402
from ood_flow.flows.precision import STConv2d, st_autocast  # noqa: E402
from ood_flow.runtime import Runtime  # noqa: E402

BATCH = 256
KERNEL_CASES = [(128, 14, [4, 8, 16, 32])]  # input channels, side, output channels
SPLIT_CASES = [(128, 4, 14, "Glow, first level"), (64, 2, 28, "RealNVP, checkerboard"),
               (64, 4, 14, "RealNVP, channel"), (128, 4, 13, "odd width")]  # cin, cout, side, what
MODELS = {"glow": {"scales": 2, "steps": 4, "hidden": 128}, "realnvp": {"scales": 2, "hidden": 64, "blocks": 2}}


@contextlib.contextmanager
def unpaired():
    """The fused path as it was before pairing: every narrowing split convolution one column per pass."""
    kept = fused._pairs_outputs
    fused._pairs_outputs = lambda *args: False
    try:
        yield
    finally:
        fused._pairs_outputs = kept


def kernel_table(rounds: int) -> list[str]:
    kernel = torch.ops.mkldnn._convolution_pointwise
    lines = ["| input | output channels | µs per batch of 256, median (min-max) |", "|---|---:|---:|"]
    for cin, side, couts in KERNEL_CASES:
        x = torch.randn(BATCH, cin, side, side).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        ways = {}
        for cout in couts:
            w = torch.randn(cout, cin, 3, 3).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), [1, 1], [1, 1], [1, 1], 1, list(x.shape))
            ways[cout] = lambda p=packed: kernel(x, p, None, [1, 1], [1, 1], [1, 1], 1, "none", [], "")
        for cout, v in alternate(ways, rounds, lambda way: fastest_us(way, 10)).items():
            lines.append(f"| {cin} x {side} x {side} | {cout} | {spread(v, 0)} |")
    return lines


def split_table(rounds: int) -> list[str]:
    lines = ["| st-network's last convolution | paired, µs | unpaired, µs | unpaired / paired | max \\|difference\\| |",
             "|---|---:|---:|---:|---:|"]
    for cin, cout, side, what in SPLIT_CASES:
        torch.manual_seed(0)
        conv = STConv2d(cin, cout, 3, padding=1).eval()
        x = torch.randn(BATCH, cin, side, side).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        paths = {"paired": fused.FusedPath(), "unpaired": fused.FusedPath()}

        def run(name: str) -> torch.Tensor:
            with torch.no_grad(), st_autocast(torch.bfloat16, "split"), torch.autocast("cpu", dtype=torch.bfloat16):
                with unpaired() if name == "unpaired" else contextlib.nullcontext():
                    return paths[name]._conv(conv, None, x, relu=False).contiguous()

        diff = (run("paired") - run("unpaired")).abs().max().item()
        per = alternate({n: lambda n=n: run(n) for n in paths}, rounds, lambda way: fastest_us(way, 10))
        lines.append(f"| {what}: {cin} -> {cout}, {side} x {side} | {spread(per['paired'], 0)} | "
                     f"{spread(per['unpaired'], 0)} | {ratio_spread(per['unpaired'], per['paired'])} | {diff:.1e} |")
    return lines


def model_table(rounds: int) -> list[str]:
    lines = ["| model (bf16 scoring) | paired, img/s | unpaired, img/s | paired / unpaired | max \\|Δ log p\\| |",
             "|---|---:|---:|---:|---:|"]
    x = torch.rand(4 * BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    runtime = Runtime(st="bf16")
    for arch, size in MODELS.items():
        models = perturbed_twins(arch, size, ("paired", "unpaired"))

        def score(name: str) -> torch.Tensor:
            with torch.inference_mode(), runtime.st_networks():
                with unpaired() if name == "unpaired" else contextlib.nullcontext():
                    return torch.cat([models[name].log_prob(b) for b in x.split(BATCH)])

        diff = (score("paired") - score("unpaired")).abs().max().item()
        per = alternate({n: lambda n=n: score(n) for n in models}, rounds, lambda way: x.shape[0] / timed(way))
        lines.append(f"| {arch} | {spread(per['paired'])} | {spread(per['unpaired'])} | "
                     f"{ratio_spread(per['paired'], per['unpaired'], bold=True)} | {diff:.1e} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=positive_int, default=7, help="alternating rounds per table")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    ap.add_argument("--save", action="store_true", help="write narrow_pairs.md into --out")
    ap.add_argument("--out", type=results_folder, default=HERE.parent / "results",
                    help="the folder --save writes into (default benchmarks/results)")
    args = ap.parse_args(argv)
    if not torch.backends.mkldnn.is_available() or fused.find_kernel() is None:
        print("narrow_pairs.py: this torch build has no oneDNN fused convolution to time", file=sys.stderr)
        return 1
    malloc = set_allocator(args.malloc)
    env = machine("random inputs and perturbed models", malloc, peers=())  # before the timings: the load at start
    lines = [f"`{shown_command(__file__, argv)}`", "",
             f"{machine_line(env, malloc, flags=True)} {args.rounds} alternating rounds per table; the kernels and "
             f"convolutions: fastest of 10 calls per round; the models: one scoring pass per round.", "",
             "oneDNN's bf16 kernel alone (3 x 3, batch 256):", "", *kernel_table(args.rounds), "",
             "The fused path's narrowing split convolution (batch 256):", "", *split_table(args.rounds), "",
             "Whole models, the full preset of `speed.py`, 1,024 images in batches of 256:", "",
             *model_table(args.rounds)]
    publish_as(lines, args.out, "narrow_pairs.md", args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
