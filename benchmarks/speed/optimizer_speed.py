"""How the optimiser's implementation moves ``speed.py``'s training ratios.

``speed.py`` trains both libraries with torch's Adam as it runs by default on CPU, one parameter tensor at a
time. torch has two faster implementations of the same update, multi-tensor (``foreach=True``, what
``oodflow train`` runs) and fused (``fused=True``), which a user of either library may choose. This
script trains each image model of the preset with each implementation, the same one for both libraries in
a row: oodflow with bf16 st-networks, normflows channels-last in bf16 autocast (``speed.py``'s choice for it
in every full-preset row), Adam with lr 1e-4 as ``speed.py``, on the same batch of FashionMNIST images. Each
round times every runner once (``speed_runs.rate``: two steps right after an untimed one), in an order
that flips every round; the table gives medians, and the ratio's median and spread over rounds.

It also says whether each implementation trains oodflow to the same bits as the default one (three steps
from the same weights on the same batch, float32): only one that does can be ``oodflow train``'s without
changing the models it trains.

Usage::

    python benchmarks/speed/optimizer_speed.py --save      # benchmarks/results/optimizer_speed.md
    python benchmarks/speed/optimizer_speed.py --quick     # small models, a minute (a check that it runs: in
                                                           # speed.py's quick rows normflows' RealNVP runs fp32)
"""

from __future__ import annotations

# OpenMP wait policy: as the environment has it, as speed.py (see there)

import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed import build, rounds_inputs  # noqa: E402
from speed_machine import shown_command  # noqa: E402
from speed_runs import Runner, machine_line, publish, rate, ratio_spread, rounds_parser  # noqa: E402

IMPLEMENTATIONS = {"one tensor at a time (default)": {}, "multi-tensor (foreach=True)": {"foreach": True},
                   "fused (fused=True)": {"fused": True}}


def runner(lib: str, arch: str, size: dict, options: dict, x: torch.Tensor) -> Runner:
    return Runner(lib, build(lib, arch, size), ("channels_last", "bf16"), x, x, x.shape[0], adam=options)


def same_bits(arch: str, size: dict, options: dict, x: torch.Tensor, steps: int = 3) -> str:
    """Whether ``steps`` float32 steps of oodflow with Adam(**options) give the default Adam's weights."""
    weights = []
    for opts in ({}, options):
        r = Runner("oodflow", build("oodflow", arch, size), ("channels_last", "fp32"), x, x, x.shape[0], adam=opts)
        for _ in range(steps):
            r.train_step()
        weights.append([p.detach().clone() for p in r.model.parameters()])
    if all(torch.equal(a, b) for a, b in zip(*weights)):
        return "identical"
    return f"differ (max \\|Δ\\| {max((a - b).abs().max().item() for a, b in zip(*weights)):.1e})"


def measure(arch: str, size: dict, x: torch.Tensor, rounds: int) -> list[str]:
    runners = {(name, lib): runner(lib, arch, size, opts, x)
               for name, opts in IMPLEMENTATIONS.items() for lib in ("oodflow", "normflows")}
    for r in runners.values():
        r.train_step()
    rates: dict = {k: [] for k in runners}
    for i in range(rounds):
        for k in (list(runners) if i % 2 == 0 else list(runners)[::-1]):
            rates[k].append(rate(runners[k], "train"))
    rows = []
    for name, opts in IMPLEMENTATIONS.items():
        ours, peer = rates[(name, "oodflow")], rates[(name, "normflows")]
        bits = "(the default)" if not opts else same_bits(arch, size, opts, x)
        rows.append(f"| {arch} | {name} | {statistics.median(ours):.1f} | {statistics.median(peer):.1f} | "
                    f"{ratio_spread(ours, peer, bold=True)} | {bits} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = rounds_parser(__doc__, 5, "optimizer_speed").parse_args(argv)
    rounds, malloc, p, x, _, env = rounds_inputs(args)
    out = ["# Training speed by Adam implementation: oodflow bf16 against normflows (channels-last bf16)", "",
           f"`{shown_command(__file__, argv, data=args.data_dir)}`", "",
           f"{machine_line(env, malloc)} Training images per "
           f"second, median over {rounds} alternating rounds, batch {p['batch']}; the same Adam implementation "
           f"for both libraries in a row. Last column: oodflow's weights after 3 float32 steps against the "
           f"default implementation's.", "",
           "| model | Adam | oodflow img/s | normflows img/s | oodflow / normflows (min-max) | oodflow's bits |",
           "|---|---|---:|---:|---:|---|"]
    for arch in ("glow", "realnvp"):
        out += measure(arch, p[arch], x, rounds)
    publish(out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
