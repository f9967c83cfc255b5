"""Does ``torch.compile`` pay for oodflow on this CPU? Compile time, then eager against compiled, alternating.

Usage::

    python benchmarks/speed/compile_check.py --json      # a few minutes on 2 idle cores (most of it compiling)

For the quick preset's RealNVP of ``speed.py`` (FashionMNIST shape), in the setting oodflow uses
(channels-last inputs, fp32 and bf16 st-networks): scoring under ``torch.inference_mode`` eager with the
fused path (oodflow's default), eager plain, and ``torch.compile`` of the plain path (inductor; the
fused path calls oneDNN directly and would only add graph breaks); training steps eager and compiled.
Compile time is the first call's seconds; the rates are medians of alternating rounds with their spread.
The scores of the compiled model are compared with eager ones (max |delta bits/dim|).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed import PRESETS, SHAPE, load_images  # noqa: E402
from speed_machine import machine, shown_command  # noqa: E402
from speed_measure import timed  # noqa: E402
from speed_models import bits_per_dim_8bit, bits_per_dim_loss, normflows_model, oodflow_model  # noqa: E402

from ood_flow.dequantize import dequantize  # noqa: E402
from ood_flow.flows import fused  # noqa: E402
from ood_flow.runtime import Runtime  # noqa: E402


def _scorer(model, precision: str, use_fused: bool, compiled: bool):
    fn = torch.compile(model.log_prob) if compiled else model.log_prob
    path = fused.path_of(model)

    def score(x):
        with torch.inference_mode(), Runtime(st=precision).st_networks(), (contextlib.nullcontext() if use_fused
                                                                           else path.disabled()):
            return fn(x).float()
    return score


def _trainer(model, precision: str, compiled: bool, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fn = torch.compile(model.log_prob) if compiled else model.log_prob

    def step():
        model.train()
        with Runtime(st=precision).st_networks():
            loss = bits_per_dim_loss(fn, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _peer_trainer(model, precision: str, compiled: bool, x):
    """normflows' training step as a user would compile it: the whole model's log-density, channels-last,
    bf16 as autocast around the whole model."""
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fn = torch.compile(model.log_prob) if compiled else model.log_prob

    def step():
        model.train()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with ctx:
            loss = bits_per_dim_loss(lambda v: fn(v).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def peer_training(p: dict, train_x, rounds: int) -> dict:
    """oodflow against normflows, both eager and both compiled, training the quick RealNVP, alternating."""
    out = {}
    for precision in ("fp32", "bf16"):
        steps = {}
        for compiled in (False, True):
            torch.manual_seed(0)
            steps[f"oodflow {'compiled' if compiled else 'eager'}"] = _trainer(
                oodflow_model("realnvp", SHAPE, p["realnvp"]), precision, compiled, train_x)
            torch.manual_seed(0)
            steps[f"normflows {'compiled' if compiled else 'eager'}"] = _peer_trainer(
                normflows_model("realnvp", SHAPE, p["realnvp"]), precision, compiled, train_x)
        compile_s = {}
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            compile_s[name] = time.perf_counter() - t0
        rates = {k: [] for k in steps}
        for i in range(rounds):
            for k in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
                rates[k].append(train_x.shape[0] / timed(steps[k]))
        med = {k: statistics.median(v) for k, v in rates.items()}
        out[precision] = {"first_step_seconds": compile_s, "train_images_per_s": med,
                          "train_spread": {k: [min(v), max(v)] for k, v in rates.items()},
                          "oodflow_vs_normflows_eager": med["oodflow eager"] / med["normflows eager"],
                          "oodflow_vs_normflows_compiled": med["oodflow compiled"] / med["normflows compiled"],
                          "normflows_compiled_vs_eager": med["normflows compiled"] / med["normflows eager"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--peer", action="store_true", help="also train normflows' RealNVP eager and compiled beside ours")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results")
    args = ap.parse_args(argv)
    p = PRESETS["quick"]
    images, data = load_images(max(p["batch"], p["score_images"]), args.data_dir)
    gen = torch.Generator().manual_seed(0)
    train_x = dequantize(images[: p["batch"]], gen).contiguous(memory_format=torch.channels_last)
    score_x = dequantize(images[: p["score_images"]], gen).contiguous(memory_format=torch.channels_last)
    env = machine(data)
    result = {"model": "realnvp", "size": p["realnvp"], "batch": p["batch"], "score_batch": p["score_images"],
              "machine": env, "precisions": {}}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = oodflow_model("realnvp", SHAPE, p["realnvp"]).eval()
        dim = score_x[0].numel()
        runs = {"eager fused": _scorer(model, precision, True, False),
                "eager plain": _scorer(model, precision, False, False),
                "compiled plain": _scorer(model, precision, False, True)}
        compile_s, reference = {}, bits_per_dim_8bit(runs["eager plain"](score_x), dim)
        t0 = time.perf_counter()
        compiled_bpd = bits_per_dim_8bit(runs["compiled plain"](score_x), dim)
        compile_s["score"] = time.perf_counter() - t0
        for f in runs.values():
            f(score_x)
        rates = {k: [] for k in runs}
        for i in range(args.rounds):
            for k in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                rates[k].append(score_x.shape[0] / timed(lambda f=runs[k]: f(score_x)))
        torch.manual_seed(0)
        train_model = oodflow_model("realnvp", SHAPE, p["realnvp"])
        steps = {"eager": _trainer(train_model, precision, False, train_x),
                 "compiled": _trainer(train_model, precision, True, train_x)}
        t0 = time.perf_counter()
        steps["compiled"]()
        compile_s["train"] = time.perf_counter() - t0
        steps["eager"]()
        train_rates = {k: [] for k in steps}
        for i in range(args.rounds):
            for k in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
                train_rates[k].append(train_x.shape[0] / timed(steps[k]))
        med = {k: statistics.median(v) for k, v in rates.items()}
        tmed = {k: statistics.median(v) for k, v in train_rates.items()}
        result["precisions"][precision] = {
            "compile_seconds": compile_s,
            "score_images_per_s": med, "score_spread": {k: [min(v), max(v)] for k, v in rates.items()},
            "train_images_per_s": tmed, "train_spread": {k: [min(v), max(v)] for k, v in train_rates.items()},
            "compiled_vs_eager_fused_score": med["compiled plain"] / med["eager fused"],
            "compiled_vs_eager_train": tmed["compiled"] / tmed["eager"],
            "compiled_max_abs_delta_bits_per_dim": float((compiled_bpd - reference).abs().max()),
            "score_seconds_saved_per_image": 1 / med["eager fused"] - 1 / med["compiled plain"],
        }
        saved = result["precisions"][precision]["score_seconds_saved_per_image"]
        result["precisions"][precision]["images_to_amortize_compile"] = (
            compile_s["score"] / saved if saved > 0 else None)
    if args.peer:
        result["peer_training"] = peer_training(p, train_x, args.rounds)
    result["machine"]["load_average_end"] = os.getloadavg()
    result["command"] = shown_command(__file__, argv, data=args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "compile_check.peer.json" if args.peer else "compile_check.json"
    (args.out / name).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
