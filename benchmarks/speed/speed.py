"""oodflow against normflows at its best, side by side in one process: training and scoring speed.

Usage::

    python benchmarks/speed/speed.py                  # full run (about 7 minutes on 2 idle cores)
    python benchmarks/speed/speed.py --quick --json   # small models, few rounds; one JSON object on stdout
    python benchmarks/speed/speed.py --rounds 15      # more alternating rounds where the host is noisy

Both libraries get the same data (FashionMNIST training images from ``../shared/data``, or random
uint8 images where absent), the same batches, threads, optimiser (Adam) and loss (bits/dim of the
dequantized 8-bit data). normflows runs at its best: every setting of ``speed_runs.PEER_SETTINGS``
(NCHW or channels-last, fp32 or whole-model bf16 autocast) is timed, and the fastest one within
the accuracy bound (a bf16 setting must move bits/dim by <= 0.01 on average) is the one compared,
separately for training and scoring. oodflow runs in fp32 and with bf16 st-networks
(``--precision``, default auto: the runtime's rule, bf16 where it pays); the headline ratios use its
``--precision``. normflows' own half-resolution RealNVP is a row of its own (compare it per FLOP).

Timings alternate between the libraries within each round (the order flips every round), each
right after an untimed call of the same model (``speed_runs.rate``); every figure is a median over
rounds, with its spread (min and max). Utilization is the model's
conv/matmul GFLOP/s over a peak that does not move with load: the best of many large matmuls and 3x3
convolutions, per precision, timed before and after the benchmark. The load average is recorded
(warning above 0.5), with the CPU model, its flags and the threads. Results go to
``benchmarks/results/speed.json`` and ``speed.md`` (``speed.quick.*`` for ``--quick``).
"""

from __future__ import annotations

import os

# OpenMP's wait policy stays as the environment has it, libgomp's default unless set (threads spin a while
# before they sleep), which is how both libraries run out of the box. OMP_WAIT_POLICY=PASSIVE (sleep at once)
# costs each small parallel operation a thread wake-up, which slowed both libraries in the tables up to
# 2026-12-06 that used it (docs/speed.md); set it to compare. The policy in force is recorded with the machine.

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

import speed_report  # noqa: E402
from portable import portable  # noqa: E402
from speed_machine import MALLOC_CHOICES, machine, peak_rates, set_allocator, shown_command  # noqa: E402
from speed_models import normflows_model, oodflow_model, params  # noqa: E402
from speed_runs import (BF16_BOUND, PEER_SETTINGS, Runner, best_setting, bf16_error, positive_int, rate,  # noqa: E402
                        results_folder, rounds_of)

from ood_flow.dequantize import dequantize  # noqa: E402
from ood_flow.runtime import resolve_precision  # noqa: E402
from ood_flow.flows import create_flow  # noqa: E402

SHAPE = (1, 28, 28)
PRESETS = {
    "quick": {"glow": {"scales": 2, "steps": 2, "hidden": 64}, "realnvp": {"scales": 2, "hidden": 32, "blocks": 1},
              "batch": 32, "score_batch": 64, "score_images": 128, "rounds": 3, "select": 2, "warmup": 1,
              "paper": {"rounds": 1, "batch": 4, "score_images": 8}, "peak": {"n": 1024, "repeats": 8}},
    "full": {"glow": {"scales": 2, "steps": 4, "hidden": 128}, "realnvp": {"scales": 2, "hidden": 64, "blocks": 2},
             "batch": 64, "score_batch": 256, "score_images": 1024, "rounds": 5, "select": 2, "warmup": 1,
             "paper": {"rounds": 1, "batch": 16, "score_images": 32}, "peak": {"n": 2048, "repeats": 10}},
}
PEERS = {"glow": ("normflows",), "realnvp": ("normflows", "normflows-halfres")}


def load_images(n: int, data_dir: Path) -> tuple[torch.Tensor, str]:
    """The first ``n`` FashionMNIST training images (uint8), or random ones where the data is absent, and
    which of the two, for the results (the data root shown as ``<data>``)."""
    try:
        from ood_flow.data import load_source

        x = load_source("fashionmnist:train", data_dir=data_dir, limit=n, download=False).x
        images, data = torch.as_tensor(x)[:n], f"FashionMNIST train ({data_dir})"
    except Exception as e:  # noqa: BLE001 - any failure means: no real data here
        g = torch.Generator().manual_seed(0)
        images, data = torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8), f"random uint8 ({e})"
    return images, portable(data, data=data_dir)


def rounds_inputs(args) -> tuple[int, str, dict, torch.Tensor, torch.Tensor, dict]:
    """What a script of ``speed_runs.rounds_parser``'s options starts with: its rounds, the allocator it set
    (before any tensor is made), its preset, the dequantized training batch and scoring images (the first ones of
    :func:`load_images`, one generator of seed 0 for both, in that order) and the machine's description."""
    rounds = rounds_of(args)
    malloc = set_allocator(args.malloc)
    p = PRESETS["quick" if args.quick else "full"]
    images, data = load_images(max(p["batch"], p["score_images"]), args.data_dir)
    g = torch.Generator().manual_seed(0)
    x, score_x = dequantize(images[: p["batch"]], g), dequantize(images[: p["score_images"]], g)
    return rounds, malloc, p, x, score_x, machine(data, malloc)


def build(lib: str, arch: str, size: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    if lib == "oodflow":
        return oodflow_model(arch, SHAPE, size)
    return normflows_model(arch, SHAPE, size, halfres=lib.endswith("halfres"))


def compare(arch: str, p: dict, train_x: torch.Tensor, score_x: torch.Tensor, precision: str) -> dict:
    """oodflow (fp32 and bf16) against each peer at its best setting: rates per round and their medians."""
    def maker(lib: str, fmt: str = "channels_last"):
        return lambda model, prec: Runner(lib, model if model is not None else build(lib, arch, p[arch]),
                                          (fmt, prec), train_x, score_x, p["score_batch"])

    check = score_x[:32]
    errors = {lib: bf16_error(maker(lib), check) for lib in ("oodflow",) + PEERS[arch]}
    ours = {prec: maker("oodflow")(None, prec) for prec in ("fp32", "bf16")}
    peers = {lib: {s: maker(lib, s[0])(None, s[1]) for s in PEER_SETTINGS} for lib in PEERS[arch]}
    for r in [*ours.values(), *(r for d in peers.values() for r in d.values())]:
        for _ in range(p["warmup"]):
            r.train_step()
        r.score(score_x[: p["score_batch"]])
    chosen, selection = {}, {}
    for lib, runners in peers.items():
        for task in ("train", "score"):
            chosen[(lib, task)], selection[f"{lib} {task}"] = best_setting(runners, errors[lib], task, p["select"])
    entries = {f"oodflow {prec}": {t: r for t in ("train", "score")} for prec, r in ours.items()}
    entries.update({lib: {t: peers[lib][chosen[(lib, t)]] for t in ("train", "score")} for lib in PEERS[arch]})
    compared = list(PEERS[arch])
    for lib, settings in same_precision(chosen, selection, errors, precision).items():  # timed in the same rounds
        entries[f"{lib}-{precision}"] = {t: peers[lib][s] for t, s in settings.items()}
        compared.append(f"{lib}-{precision}")
    rounds = []
    for i in range(p["rounds"]):
        names = list(entries) if i % 2 == 0 else list(entries)[::-1]
        rounds.append({f"{n} {t}": rate(entries[n][t], t) for t in ("train", "score") for n in names})
    return summarize(arch, p, entries, rounds, errors, selection, precision, compared)


def same_precision(chosen: dict, selection: dict, errors: dict, precision: str) -> dict[str, dict[str, tuple]]:
    """For each peer whose bf16 moved its scores past the bound (``errors``, bits/dim) where oodflow runs in bf16 (so
    the rule compares the peer's fp32), its fastest bf16 setting for each task: an equal-precision ratio printed
    beside the rule's. ``chosen``: ``{(lib, task): setting}``; ``selection``: ``{"lib task": {"layout precision":
    images/s}}``, both as :func:`compare` makes them."""
    if precision != "bf16":
        return {}
    out = {}
    for lib in sorted({lib for lib, _ in chosen if errors[lib] > BF16_BOUND}):
        out[lib] = {}
        for t in ("train", "score"):
            rates = {tuple(k.split()): v for k, v in selection[f"{lib} {t}"].items() if k.endswith(" bf16")}
            out[lib][t] = max(rates, key=rates.get)
    return out


def summarize(arch, p, entries, rounds, errors, selection, precision, compared) -> dict:
    """Medians, spreads and FLOP of each entry; oodflow's ratios against each name in ``compared`` (the peers,
    then any peer in oodflow's precision that :func:`same_precision` added)."""
    out = {"size": p[arch], "batch": p["batch"], "score_batch": p["score_batch"], "rounds": rounds,
           "peer_selection_images_per_s": selection, "bf16_error_bits_per_dim": errors}
    for name, runners in entries.items():
        row = {"params": params(runners["train"].model)}
        for task, r in runners.items():
            values = [rd[f"{name} {task}"] for rd in rounds]
            flops = r.flops()[task]
            row.update({f"{task}_setting": f"{r.setting[0]} {r.precision}", f"{task}_flops_per_image": flops,
                        f"{task}_images_per_s": statistics.median(values), f"{task}_spread": [min(values), max(values)],
                        f"{task}_precision": r.precision})
        out[name] = row
    for lib in compared:
        for task in ("train", "score"):
            ratios = [rd[f"oodflow {precision} {task}"] / rd[f"{lib} {task}"] for rd in rounds]
            key = lib.replace("-", "_")
            out[f"{task}_speedup_vs_{key}"] = statistics.median(ratios)
            out[f"{task}_speedup_vs_{key}_spread"] = [min(ratios), max(ratios)]
            ours_f, peer_f = out[f"oodflow {precision}"][f"{task}_flops_per_image"], out[lib][f"{task}_flops_per_image"]
            out[f"{task}_speedup_per_flop_vs_{key}"] = out[f"{task}_speedup_vs_{key}"] * ours_f / peer_f
    return out


def paper_model(name: str, p: dict, images: torch.Tensor) -> dict:
    """The paper's FashionMNIST model (``create_flow`` defaults), oodflow only, fp32 and bf16 alternating;
    also the share of a training step that preparing its batch (indexing, dequantization) takes."""
    gen = torch.Generator().manual_seed(1)
    q = p["paper"]
    x, score_x = dequantize(images[: q["batch"]], gen), dequantize(images[: q["score_images"]], gen)
    torch.manual_seed(0)
    model = create_flow(name, SHAPE)
    runners = {prec: Runner("oodflow", model, ("channels_last", prec), x, score_x, q["score_images"])
               for prec in ("fp32", "bf16")}
    error = bf16_error(lambda m, prec: Runner("oodflow", m if m is not None else model, ("channels_last", prec), x,
                                              score_x, q["score_images"]), score_x)
    for r in runners.values():
        r.train_step()
        r.score()
    rounds = []
    for i in range(q["rounds"]):
        order = list(runners) if i % 2 == 0 else list(runners)[::-1]
        rounds.append({f"{prec} {t}": rate(runners[prec], t) for t in ("train", "score") for prec in order})
    flops = runners["fp32"].flops()
    data = statistics.median(_timed_data(images, q["batch"]) for _ in range(5))
    out = {"config": dict(model.config.__dict__), "params": params(model), "batch": q["batch"],
           "score_batch": q["score_images"], "flops_per_image": flops, "rounds": rounds,
           "bf16_error_bits_per_dim": error}
    for key in rounds[0]:
        values = [rd[key] for rd in rounds]
        out[f"{key.replace(' ', '_')}_images_per_s"] = statistics.median(values)
    out["data_share_of_train_step"] = data / (q["batch"] / out["fp32_train_images_per_s"])
    return out


def _timed_data(images: torch.Tensor, batch: int) -> float:
    """Seconds to draw and dequantize one training batch, as the training loop does."""
    from speed_measure import timed

    gen = torch.Generator().manual_seed(2)
    return timed(lambda: dequantize(images[torch.randperm(images.shape[0], generator=gen)[:batch]], gen))


def run(p: dict, data_dir: Path, precision: str, malloc: str = "system") -> dict:
    images, data = load_images(max(p["batch"], p["score_images"], 64), data_dir)
    gen = torch.Generator().manual_seed(0)
    train_x, score_x = dequantize(images[: p["batch"]], gen), dequantize(images[: p["score_images"]], gen)
    env = machine(data, malloc)
    before = peak_rates(**p["peak"])
    archs = {arch: compare(arch, p, train_x, score_x, precision) for arch in ("glow", "realnvp")}
    papers = {name: paper_model(name, p, images) for name in ("realnvp", "glow")}
    after = peak_rates(**p["peak"])
    env.update(load_average_end=os.getloadavg(), peak_gflops_before=before, peak_gflops_after=after)
    peak = {prec: max(before[prec], after[prec]) for prec in before}
    return speed_report.results(archs, papers, env, peak, precision, PEERS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small models and few rounds (a few minutes)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--rounds", type=positive_int, default=None,
                    help=f"alternating rounds of the comparison (default: {PRESETS['full']['rounds']}, or "
                         f"{PRESETS['quick']['rounds']} with --quick); more rounds narrow the spread on a noisy host")
    ap.add_argument("--precision", default="auto", choices=("fp32", "bf16", "auto"),
                    help="oodflow's precision in the headline ratios (auto: the runtime's choice, bf16 where it pays: "
                         "AMX, or AMD with AVX512-BF16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--out", type=results_folder, default=HERE.parent / "results",
                    help="folder for speed.json and speed.md")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES,
                    help="kept: freed memory kept for reuse, as the oodflow command runs (both libraries, one "
                         "process); system: glibc's defaults")
    args = ap.parse_args(argv)
    malloc = set_allocator(args.malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} > 0.5: other work shares the CPU; ratios are noisier",
              file=sys.stderr)
    preset = "quick" if args.quick else "full"
    p = dict(PRESETS[preset], **({"rounds": args.rounds} if args.rounds else {}))
    res = run(p, args.data_dir, resolve_precision(args.precision, "cpu"), malloc)
    res["preset"] = preset
    res["command"] = shown_command(__file__, argv, data=args.data_dir)
    speed_report.write(res, args.out, "speed.quick" if args.quick else "speed")
    print(json.dumps(res) if args.json else speed_report.markdown(res), end="\n" if args.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
