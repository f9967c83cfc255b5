"""What the bf16 split of the widening convolution needs: its kernel split, its input rounded.

Under bf16 the fused path runs an st-network's first (widening) convolution as a bf16 kernel on split operands
(``ood_flow.flows.fused.FusedPath._split``). The float32 kernel ``w`` is split into ``hi = bf16(w)`` and
``lo = bf16(w - hi)``; the input ``x`` is rounded to bf16 and ``x*hi + x*lo`` is one convolution over twice the
input channels. Until commit b102877 the input was split as well (``x_hi*hi + x_lo*hi + x_hi*lo``, three times
the input channels). This script shows what each choice costs and keeps:

1. Accuracy: trained model files (``--models``) scored in bf16 with the widening convolution's input and kernel
   split (three terms, the former way), the kernel split and the input rounded (two terms, the way now), the
   input split and the kernel rounded (two terms), neither (plain bf16): the mean |bits/dim(bf16) -
   bits/dim(fp32)| on each ``--sources`` (the first ``--limit`` images). The narrowing convolution is split as
   the runtime does in every column.
2. Speed: the full preset's Glow and RealNVP of ``speed.py`` (perturbed), 1,024 images in batches of 256, bf16
   scoring with the two-term and the three-term widening split, in alternating rounds, with the largest
   difference in log-likelihood.

Usage::

    python benchmarks/speed/widen_split.py --models M.pt ... [--sources fashionmnist:test mnist:test]
        [--limit 2000] [--rounds 11] [--save] [--out DIR]
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
from speed_measure import alternate, timed  # noqa: E402
from speed_models import perturbed_twins  # noqa: E402
from speed_runs import machine_line, positive_int, publish_as, ratio_spread, results_folder, spread  # noqa: E402

from ood_flow.flows import fused  # noqa: E402
from ood_flow.runtime import Runtime  # noqa: E402

BATCH = 256
MODELS = {"glow": {"scales": 2, "steps": 4, "hidden": 128}, "realnvp": {"scales": 2, "hidden": 64, "blocks": 2}}
VARIANTS = {  # name: (the input split, the kernel split), or None: the fused path's own code
    "input and kernel split (three terms, before b102877)": (True, True),
    "kernel split, input rounded (two terms, now)": None,
    "input split, kernel rounded (two terms)": (True, False),
    "neither (plain bf16)": (False, False),
}
NOW = "kernel split, input rounded (two terms, now)"
_KEPT: dict = {}  # (variant, id(path), id(conv)) -> (path, conv, products, kernel parts, bias): widening()
FORMER = "input and kernel split (three terms, before b102877)"


def _parts(a: torch.Tensor, split: bool) -> list[torch.Tensor]:
    hi = a.to(torch.bfloat16)
    return [hi, (a - hi).to(torch.bfloat16)] if split else [hi]


@contextlib.contextmanager
def widening(variant: str):
    """The fused path's widening split convolutions computed as ``variant`` says (the other convolutions as the
    path computes them; ``None`` in :data:`VARIANTS`: the path's own code). The folded float32 kernel comes from
    the path; its parts, made once per convolution, are reordered into oneDNN's layout as the path does its own,
    and the products are summed in the former code's order (``x_hi*hi``, ``x_lo*hi``, ``x_hi*lo``)."""
    if VARIANTS[variant] is None:
        yield
        return
    split_input, split_kernel = VARIANTS[variant]
    own = fused.FusedPath._split

    def split(path, conv, bn, x, relu):
        if not conv.widens or path.kernel is None:
            return own(path, conv, bn, x, relu)
        geometry = fused._geometry(conv)
        key = (variant, id(path), id(conv))
        if key not in _KEPT:  # the path and the convolution are kept with it, so that their ids stay theirs
            weight, bias = path._weights(conv, bn, torch.float32)
            pairs = [(i, k) for k in range(1 + split_kernel) for i in range(1 + split_input) if i + k < 2]
            kernel = torch.cat([_parts(weight, split_kernel)[k] for _, k in pairs], dim=1)
            _KEPT[key] = (path, conv, pairs, kernel.contiguous(memory_format=path.layout), bias)
        _, _, pairs, kernel, bias = _KEPT[key]
        inputs = _parts(x, split_input)
        x_in = torch.cat([inputs[i] for i, _ in pairs], dim=1).contiguous(memory_format=path.layout)
        packed = path._packed(conv, kernel, geometry, x.shape)
        return path.kernel(x_in, packed, bias, *geometry, "relu" if relu else "none", [], "")

    fused.FusedPath._split = split
    try:
        yield
    finally:
        fused.FusedPath._split = own


def accuracy_table(models: list[str], sources: list[str], limit: int, data_dir: Path) -> list[str]:
    from ood_flow import score_source
    from ood_flow.data import SourceOptions

    options = SourceOptions(limit=limit, data_dir=data_dir)
    lines = ["| model file | images | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---:|" * len(VARIANTS)]
    for model in models:
        for source in sources:
            exact = score_source(source, model, options=options, precision="fp32").arrays["bits_per_dim"]
            cells = []
            for variant in VARIANTS:
                with widening(variant):
                    bf16 = score_source(source, model, options=options, precision="bf16").arrays["bits_per_dim"]
                cells.append(f"{float(abs(bf16 - exact).mean()):.4f}")
            lines.append(f"| `{Path(model).name}` | {source}, first {limit} | " + " | ".join(cells) + " |")
    return lines


def speed_table(rounds: int) -> list[str]:
    lines = ["| model (bf16 scoring) | two terms (now), img/s | three terms, img/s | two / three | max \\|Δ log p\\| |",
             "|---|---:|---:|---:|---:|"]
    x = torch.rand(4 * BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    runtime = Runtime(st="bf16")
    for arch, size in MODELS.items():
        models = perturbed_twins(arch, size, (NOW, FORMER))

        def score(name: str) -> torch.Tensor:
            with torch.inference_mode(), runtime.st_networks(), widening(name):
                return torch.cat([models[name].log_prob(b) for b in x.split(BATCH)])

        diff = (score(NOW) - score(FORMER)).abs().max().item()
        per = alternate({n: lambda n=n: score(n) for n in models}, rounds, lambda way: x.shape[0] / timed(way))
        lines.append(f"| {arch} | {spread(per[NOW])} | {spread(per[FORMER])} | "
                     f"{ratio_spread(per[NOW], per[FORMER], bold=True)} | {diff:.1e} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help="trained model files whose bf16 error to measure")
    ap.add_argument("--sources", nargs="+", default=["fashionmnist:test", "mnist:test"])
    ap.add_argument("--limit", type=positive_int, default=2000, help="images per source")
    ap.add_argument("--rounds", type=positive_int, default=11, help="alternating rounds of the speed table")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    ap.add_argument("--save", action="store_true", help="write widen_split.md into --out")
    ap.add_argument("--out", type=results_folder, default=HERE.parent / "results",
                    help="the folder --save writes into (default benchmarks/results)")
    args = ap.parse_args(argv)
    missing = [m for m in args.models if not Path(m).is_file()]
    if missing:
        ap.error(f"no model file at {missing[0]}")
    if not torch.backends.mkldnn.is_available() or fused.find_kernel() is None:
        print("widen_split.py: this torch build has no oneDNN fused convolution to time", file=sys.stderr)
        return 1
    malloc = set_allocator(args.malloc)
    env = machine(str(args.data_dir), malloc, peers=())  # before the timings: the load at start
    lines = [f"`{shown_command(__file__, argv)}`", "", f"{machine_line(env, malloc, flags=True)}", ""]
    if args.models:
        lines += ["Mean \\|bits/dim(bf16) - bits/dim(fp32)\\| with the widening convolution computed each way "
                  "(bound 0.01):", "", *accuracy_table(args.models, args.sources, args.limit, args.data_dir), ""]
    lines += [f"Whole models, the full preset of `speed.py`, 1,024 images in batches of 256, {args.rounds} "
              "alternating rounds, one scoring pass each:", "", *speed_table(args.rounds)]
    publish_as(lines, args.out, "widen_split.md", args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
