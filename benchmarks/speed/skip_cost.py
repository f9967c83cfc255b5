"""What the authors' skip path costs RealNVP against normflows: the same oodflow model with and without it.

``speed.py``'s RealNVP row compares oodflow's RealNVP, whose st-networks are the authors' (a ResNet with a
skip path of 1x1 convolutions from every block to the output: ``resnet``), with normflows' residual network,
which has no such path. This script times, in the same process, alternating:

* oodflow's RealNVP of ``speed.py``'s preset with the authors' st-network (``net="resnet"``, the default),
* the same model with ``net="resnet-noskip"`` (the paper's network without the skip path, which oodflow
  offers for the bottleneck experiment, Appendix I): everything else equal, code included,
* normflows' RealNVP of ``speed.py`` (masked checkerboard couplings), channels-last, in bf16 autocast where
  oodflow runs bf16 st-networks and in fp32 where it runs fp32: the setting ``speed.py`` chose for it in every
  full-preset row of both of its published tables (with AMX: bf16; oneDNN capped below AMX: fp32),

oodflow in ``--precision`` (default ``auto``, the runtime's rule: bf16 st-networks where bf16 pays), training
(Adam, lr 1e-4, as ``speed.py``) and scoring (eval mode,
``torch.inference_mode``), on the same FashionMNIST images. Each round times every runner once per task
(``speed_runs.rate``: right after an untimed call of the same runner), in an order that flips every round; the
table gives medians and the spread over rounds, and conv/matmul GFLOP per image as ``speed.py`` counts them.

Usage::

    python benchmarks/speed/skip_cost.py --save      # benchmarks/results/skip_cost.md (a few minutes)
    python benchmarks/speed/skip_cost.py --quick     # small models, 3 rounds: a check that it runs (normflows'
                                                     # quick RealNVP is best in fp32 in speed.py, bf16 here)
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/speed/skip_cost.py --save --out benchmarks/results/no_amx
                                                     # the branch without AMX on an AMX CPU (fp32 both)
"""

from __future__ import annotations

# OpenMP wait policy: as the environment has it, as speed.py (see there)

import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed import SHAPE, build, rounds_inputs  # noqa: E402
from speed_machine import shown_command  # noqa: E402
from speed_models import oodflow_model  # noqa: E402
from speed_runs import Runner, machine_line, publish, rate, ratio_spread, rounds_parser, spread  # noqa: E402

from ood_flow.runtime import resolve_precision  # noqa: E402


NETS = {"oodflow, authors' st-network (resnet)": "resnet", "oodflow, without the skip path (resnet-noskip)":
        "resnet-noskip"}
TASKS = ("train", "score")


def peer(precision: str) -> str:
    return f"normflows (channels-last {precision})"


def runners(size: dict, x: torch.Tensor, score_x: torch.Tensor, score_batch: int, precision: str) -> dict[str, Runner]:
    """oodflow's two RealNVPs and normflows', in that order, all channels-last in ``precision``."""
    out = {}
    for name, net in [*NETS.items(), (peer(precision), None)]:
        torch.manual_seed(0)
        model = oodflow_model("realnvp", SHAPE, size, net=net) if net else build("normflows", "realnvp", size)
        out[name] = Runner("oodflow" if net else "normflows", model, ("channels_last", precision), x, score_x,
                           score_batch)
    return out


def measure(rs: dict[str, Runner], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Images per second of each runner and task, one figure per round, alternating."""
    for r in rs.values():
        r.train_step()
        r.score()
    rates: dict = {name: {task: [] for task in TASKS} for name in rs}
    for i in range(rounds):
        for task in TASKS:
            for name in (list(rs) if i % 2 == 0 else list(rs)[::-1]):
                rates[name][task].append(rate(rs[name], task))
    return rates


def table(rates: dict, flops: dict, peer_name: str) -> list[str]:
    rows = ["| model | GFLOP/img train / score | train img/s (min-max) | score img/s (min-max) | "
            "train / normflows (min-max) | score / normflows (min-max) | per FLOP train / score |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in rates:
        cells = [name, f"{flops[name]['train'] / 1e9:.3f} / {flops[name]['score'] / 1e9:.3f}"]
        cells += [spread(rates[name][t]) for t in TASKS]
        per_flop = []
        for task in TASKS:
            versus = rates[peer_name][task]
            cells.append("" if name == peer_name else ratio_spread(rates[name][task], versus, bold=True))
            ratio = statistics.median(a / b for a, b in zip(rates[name][task], versus))
            per_flop.append(ratio * flops[name][task] / flops[peer_name][task])
        cells.append("" if name == peer_name else f"{per_flop[0]:.2f}x / {per_flop[1]:.2f}x")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def skip_share(rates: dict, flops: dict) -> str:
    """The skip path's share of oodflow's FLOP and of its time, per task (paired by round)."""
    full, bare = list(NETS)
    parts = []
    for task in TASKS:
        time_share = 1 - statistics.median(a / b for a, b in zip(rates[bare][task], rates[full][task])) ** -1
        flop_share = 1 - flops[bare][task] / flops[full][task]
        parts.append(f"{task}: {100 * flop_share:.1f} % of the FLOP, {100 * time_share:.1f} % of the time")
    return ("The skip path's share of oodflow's model (median over rounds of the paired times): " + "; ".join(parts)
            + ".")


def main(argv: list[str] | None = None) -> int:
    ap = rounds_parser(__doc__, 7, "skip_cost")
    ap.add_argument("--precision", default="auto", choices=("fp32", "bf16", "auto"),
                    help="oodflow's st-networks and normflows' autocast (auto: the runtime's choice, bf16 where "
                         "it pays)")
    args = ap.parse_args(argv)
    precision = resolve_precision(args.precision, "cpu")
    rounds, malloc, p, x, score_x, env = rounds_inputs(args)
    size = p["realnvp"]
    rs = runners(size, x, score_x, p["score_batch"], precision)
    rates = measure(rs, rounds)
    flops = {name: r.flops() for name, r in rs.items()}
    out = ["# RealNVP with and without the authors' skip path, against normflows", "",
           f"`{shown_command(__file__, argv, data=args.data_dir)}`", "",
           f"{machine_line(env, malloc)} RealNVP of "
           f"{size['scales']} scales, {size['hidden']} channels, {size['blocks']} blocks "
           f"({'quick' if args.quick else 'full'} preset), training batch {p['batch']}, scoring "
           f"{p['score_images']} images in batches of {p['score_batch']}; medians over "
           f"{rounds} alternating rounds; oodflow with {precision} st-networks.", ""]
    publish(out + table(rates, flops, peer(precision)) + ["", skip_share(rates, flops)], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
