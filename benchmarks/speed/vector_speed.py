"""oodflow's flows on vectors against zuko at its best, side by side in one process: training and scoring.

Two rows, the paper's two settings for vectors (Appendix K.1):

* ``detector``: the flow on image embeddings, 8 couplings with st-networks of 3 hidden layers of 512
  units, batch 1024, on 1,280-d vectors (EfficientNet-Lite0's);
* ``tabular``: the UCI preset, 8 couplings with 1 hidden layer of 256 units, batch 32, on 43-d vectors
  (MINIBOONE after Papamakarios et al.'s preprocessing).

oodflow is ``create_flow("tabular", (d,), couplings=8, hidden=..., layers=...)`` as ``train`` builds it
(standardization in front, fitted on the data). zuko is ``zuko.flows.RealNVP(d, transforms=8,
hidden_features=[...] * layers)``: the same count of couplings and the same widths. The differences left:
zuko's masks alternate features (even / odd indices, flipped at each coupling) where ours alternate
halves (first / second), and zuko bounds each log-scale smoothly (``MonotonicAffineTransform``) where
ours bounds it with ``tanh`` and a learned factor per feature. Both train with AdamW (lr 1e-3, weight
decay 1e-3, the paper's) on the negative mean log-likelihood, on the same batches and threads; both
score in eval mode under ``torch.inference_mode``.

Each library runs at its best: fp32 or bf16 (oodflow: bf16 st-networks, ``--precision``; zuko:
``torch.autocast`` around the whole model), each with and without ``torch.compile`` (oodflow's ``train
--compile`` compiles its training; scoring is never compiled by oodflow's commands, so its scoring rows
are eager); a bf16 setting counts only if it moves the mean log-likelihood by at most 0.01 bits per
dimension against the same library in fp32 (on a copy whose weights are moved by N(0, 0.005^2), as
``speed_runs.bf16_error``). The fastest allowed setting of each library is compared, per task. Where
zuko's fastest is compiled and faster than oodflow's, the report says after how many samples its
compilation (its first call beyond a steady one, inductor's caches emptied first, scoring compiled before
training as in a scoring job's process) has paid for itself. Timings alternate between the libraries
within each round; figures are medians over rounds, with the spread (min-max). The process keeps freed
memory for reuse, as the ``oodflow`` command does, for both libraries alike (``--malloc system``: glibc's
defaults, as the tables before 2026-12-07 ran).

Usage::

    python benchmarks/speed/vector_speed.py --save          # benchmarks/results/vector_speed.{json,md}
    python benchmarks/speed/vector_speed.py --quick         # fewer rounds, no compilation
"""

from __future__ import annotations

import os

# OpenMP wait policy: as the environment has it, as speed.py (see there)
# compilation timed as a fresh machine pays it: inductor's on-disk caches in a new, empty folder
import tempfile  # noqa: E402

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="vector-speed-inductor-")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed_machine import MALLOC_CHOICES, cap_note, machine, peak_rates, set_allocator, shown_command  # noqa: E402
from speed_measure import flops_per_image, timed  # noqa: E402
from speed_report import RESULTS, write_pair  # noqa: E402
from speed_runs import perturbed, results_folder  # noqa: E402

from ood_flow.flows import create_flow  # noqa: E402
from ood_flow.runtime import resolve  # noqa: E402

ROWS = {"detector": {"features": 1280, "hidden": 512, "layers": 3, "batch": 1024, "steps": 1},
        "tabular": {"features": 43, "hidden": 256, "layers": 1, "batch": 32, "steps": 30}}
"""Each row's model and batch, and the training steps one timing covers (a step of the tabular row takes
milliseconds: one step alone would time the clock's noise)."""
COUPLINGS = 8
BOUND = 0.01  # bits per dimension, as the image benchmark's
SCORE_BATCH = 1024


def data(d: int, n: int, seed: int = 0) -> torch.Tensor:
    """Correlated Gaussian vectors (a random mixing of standard normals) with unequal scales, like features."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / math.sqrt(d)
    return (torch.randn(n, d, generator=g) @ mix) * torch.rand(d, generator=g).add(0.5) + torch.randn(d, generator=g)


def oodflow_model(row: dict, x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = create_flow("tabular", (row["features"],), couplings=COUPLINGS, hidden=row["hidden"], layers=row["layers"])
    flow.fit_preprocessing(x)
    return flow


def zuko_model(row: dict) -> torch.nn.Module:
    import zuko

    torch.manual_seed(0)
    return zuko.flows.RealNVP(row["features"], transforms=COUPLINGS, hidden_features=[row["hidden"]] * row["layers"])


class Runner:
    """One library's model in one setting (precision, compiled or not), with its optimiser."""

    def __init__(self, lib: str, model: torch.nn.Module, precision: str, compiled: bool, train_x, score_x):
        self.lib, self.model, self.precision, self.compiled = lib, model, precision, compiled
        self.train_x, self.score_x = train_x, score_x
        self.runtime = resolve("cpu", st=precision) if lib == "oodflow" else None
        if self.runtime is not None:  # as the commands run it: prepared for its runtime (the fused scoring path)
            self.runtime.prepare(model)
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
        density = self._density
        self.train_density = torch.compile(density) if compiled else density
        # oodflow's commands never compile scoring; zuko's best may
        self.score_density = torch.compile(density) if compiled and lib == "zuko" else density

    @property
    def setting(self) -> str:
        return f"{self.precision}{' compiled' if self.compiled else ''}"

    def _density(self, x: torch.Tensor) -> torch.Tensor:
        if self.lib == "oodflow":
            with self.runtime.st_networks():
                return self.model.log_prob(x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model().log_prob(x).float()

    def train_step(self) -> None:
        self.model.train()
        loss = -self.train_density(self.train_x).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def score(self) -> torch.Tensor:
        self.model.eval()
        with torch.inference_mode():
            return torch.cat([self.score_density(b) for b in self.score_x.split(SCORE_BATCH)])


def bf16_error(lib: str, make, x: torch.Tensor, d: int) -> float:
    """Mean |log p(bf16) - log p(fp32)| in bits per dimension, of one perturbed model of ``lib``."""
    model = perturbed(make())
    fp32 = Runner(lib, model, "fp32", False, x, x).score()
    bf16 = Runner(lib, model, "bf16", False, x, x).score()
    return ((bf16 - fp32).abs().mean() / (d * math.log(2))).item()


def rate(runner: Runner, task: str, steps: int) -> float:
    """Samples per second of ``steps`` training steps or one scoring pass."""
    if task == "train":
        return steps * runner.train_x.shape[0] / timed(lambda: [runner.train_step() for _ in range(steps)])
    return runner.score_x.shape[0] / timed(runner.score)


def compare(name: str, row: dict, p: dict) -> dict:
    d = row["features"]
    train_x, score_x = data(d, row["batch"]), data(d, p["score_samples"], seed=1)
    makers = {"oodflow": lambda: oodflow_model(row, train_x), "zuko": lambda: zuko_model(row)}
    errors = {lib: bf16_error(lib, make, score_x[:SCORE_BATCH], d) for lib, make in makers.items()}
    settings = [(prec, comp) for comp in p["compile"] for prec in ("fp32", "bf16")]
    runners = {(lib, s): Runner(lib, make(), *s, train_x, score_x) for lib, make in makers.items() for s in settings}
    first = {}
    for key, r in runners.items():  # warm-up: compilation happens in the first call of each task, scoring first
        for task, run in (("score", r.score), ("train", r.train_step)):  # (a scoring job's process compiles afresh)
            first[f"{key[0]} {r.setting} {task}"] = timed(run)
        for _ in range(p["warmup"] - 1):
            r.train_step()
            r.score()
    rates: dict = {f"{lib} {r.setting} {t}": [] for (lib, _), r in runners.items() for t in ("train", "score")}
    for i in range(p["rounds"]):
        keys = list(runners) if i % 2 == 0 else list(runners)[::-1]
        for t in ("train", "score"):
            for key in keys:
                rates[f"{key[0]} {runners[key].setting} {t}"].append(rate(runners[key], t, row["steps"]))
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {"row": row, "couplings": COUPLINGS, "score_samples": p["score_samples"], "rounds": p["rounds"],
           "bf16_error_bits_per_dim": errors, "first_call_seconds": first,
           "images_per_s": {k: {"median": med[k], "spread": [min(v), max(v)]} for k, v in rates.items()},
           "params": {lib: sum(q.numel() for q in make().parameters()) for lib, make in makers.items()}}
    for t in ("train", "score"):
        best = {}
        for lib in makers:
            allowed = [r.setting for (lb, _), r in runners.items() if lb == lib
                       and (r.precision == "fp32" or errors[lib] <= BOUND)
                       and not (lib == "oodflow" and t == "score" and r.compiled)]
            best[lib] = max(allowed, key=lambda s: med[f"{lib} {s} {t}"])
        ratios = [a / b for a, b in zip(rates[f"oodflow {best['oodflow']} {t}"], rates[f"zuko {best['zuko']} {t}"])]
        x = train_x[:8]
        flops = {lib: flops_per_image(lambda v, r=runners[(lib, ("fp32", False))]: r._density(v).sum().backward()
                                      if t == "train" else r._density(v), x) for lib in makers}
        out[t] = {"best": best, "speedup": statistics.median(ratios), "spread": [min(ratios), max(ratios)],
                  "flops_per_sample": flops, "break_even_samples": _break_even(best, first, med, t, row, p)}
    return out


def _break_even(best: dict, first: dict, med: dict, task: str, row: dict, p: dict) -> float | None:
    """Where zuko's best setting is compiled and faster than oodflow's: the samples after which its compilation
    (its first call's time beyond a steady call) has paid for itself against oodflow's best."""
    zuko, ours = f"zuko {best['zuko']} {task}", f"oodflow {best['oodflow']} {task}"
    if "compiled" not in best["zuko"] or med[zuko] <= med[ours]:
        return None
    per_call = row["batch"] if task == "train" else p["score_samples"]  # a first call: one step, one pass
    compile_s = first[zuko] - per_call / med[zuko]
    return compile_s / (1 / med[ours] - 1 / med[zuko])


def markdown(res: dict) -> str:
    env = res["machine"]
    lines = ["# oodflow against zuko on vectors", "", f"`{res['command']}`", "",
             f"Machine: {env['cpu']}, flags {', '.join(env['cpu_flags'])}{cap_note(env)}, {env['threads']} threads, "
             f"OMP_WAIT_POLICY={env['omp_wait_policy'] or 'unset (libgomp default)'}, "
             f"malloc {env.get('malloc', 'system')}, load average {env['load_average_start'][0]:.2f} at the "
             f"start; torch {env['torch']}, zuko {env['zuko']}. Samples per second, median (min-max) over "
             f"{res['preset']['rounds']} alternating rounds; peak {res['peak']['fp32']:.0f} GFLOP/s fp32, "
             f"{res['peak']['bf16']:.0f} bf16.", ""]
    for name, r in res["rows"].items():
        row = r["row"]
        lines += [f"## {name}: {row['features']}-d, {COUPLINGS} couplings, {row['layers']} x {row['hidden']}, "
                  f"batch {row['batch']} (params: oodflow {r['params']['oodflow']:,}, zuko {r['params']['zuko']:,})",
                  "", "| library | setting | train samples/s | score samples/s | util. train | util. score "
                  "| bf16 Δbits/dim |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for key in sorted({k.rsplit(" ", 1)[0] for k in r["images_per_s"]}):
            lib, setting = key.split(" ", 1)
            cell = lambda t: "{median:.0f} ({spread[0]:.0f}-{spread[1]:.0f})".format(**r["images_per_s"][f"{key} {t}"])  # noqa: E731,E501
            util = lambda t: f"{r['images_per_s'][f'{key} {t}']['median'] * r[t]['flops_per_sample'][lib] / 1e9 / res['peak'][setting.split()[0]]:.0%}"  # noqa: E731,E501
            eager = lib == "oodflow" and "compiled" in setting
            score, score_util = ("(eager)", "") if eager else (cell("score"), util("score"))
            lines.append(f"| {lib} | {setting} | {cell('train')} | {score} | {util('train')} | {score_util} | "
                         f"{r['bf16_error_bits_per_dim'][lib]:.1e} |")
        for t in ("train", "score"):
            b, s = r[t]["best"], r[t]
            even = f"; zuko's compilation pays after {s['break_even_samples']:,.0f} samples" \
                if s.get("break_even_samples") else ""
            lines.append(f"| **oodflow {b['oodflow']} / zuko {b['zuko']}** | {t} | | | | | **{s['speedup']:.2f}x** "
                         f"({s['spread'][0]:.2f}-{s['spread'][1]:.2f}){even} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, no compilation")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/vector_speed.{json,md}")
    ap.add_argument("--report", type=Path, help="print (and with --save rewrite) the tables of a results JSON")
    ap.add_argument("--out", type=results_folder, default=RESULTS,
                    help="folder for --save (default benchmarks/results)")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES,
                    help="kept: freed memory kept for reuse, as the oodflow command runs (both libraries, one "
                         "process); system: glibc's defaults")
    args = ap.parse_args(argv)
    if args.report:
        import json

        res = json.loads(args.report.read_text())
        md = markdown(res)
        if args.save:
            write_pair("vector_speed", res, md, args.out)
        print(md, end="")
        return 0
    warnings.filterwarnings("ignore", category=UserWarning)

    p = {"rounds": 3, "warmup": 2, "compile": (False,), "score_samples": 4096} if args.quick else \
        {"rounds": 7, "warmup": 3, "compile": (False, True), "score_samples": 8192}
    malloc = set_allocator(args.malloc)
    env = machine("correlated Gaussian vectors (vector_speed.data)", malloc, peers=("zuko",))
    before = peak_rates(n=2048, repeats=10)
    rows = {name: compare(name, row, p) for name, row in ROWS.items()}
    after = peak_rates(n=2048, repeats=10)
    env["load_average_end"] = os.getloadavg()
    res = {"machine": env, "preset": p, "peak": {k: max(before[k], after[k]) for k in before}, "rows": rows,
           "command": shown_command(__file__, argv)}
    md = markdown(res)
    if args.save:
        write_pair("vector_speed", res, md, args.out)
    print(md, end="")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
