"""oodflow against normflows, side by side in one process: training and scoring speed, memory, MFU.

Usage::

    python benchmarks/speed/speed.py            # full run (about 10 minutes on 2 cores)
    python benchmarks/speed/speed.py --quick    # small models, few steps (about a minute)
    python benchmarks/speed/speed.py --json     # the results as JSON on stdout

Both libraries get the same data (FashionMNIST training images from ``../shared/data``, or random
uint8 images where that is absent), the same batches, threads, optimiser (Adam), loss (bits/dim of
the dequantized 8-bit data) and warm-up; both score under ``torch.inference_mode`` in eval mode.
The architectures are matched as far as normflows allows (see ``speed_models.py``).

These machines are shared and noisy, so what is quoted are ratios: timings of the two libraries
alternate within each round (the order flips every round), each round is bracketed by an fp32
matmul timed before and after it, and every figure is the median over rounds of a within-round
ratio. MFU is the model's matmul/conv FLOPs (``FlopCounterMode``) times images/s divided by the
fp32 ``torch.mm`` rate of the same round; the headline MFU is the paper's FashionMNIST RealNVP's.
oodflow scores through its default (fused) path; the largest bits/dim difference from its plain
modules is reported. Results go to ``benchmarks/results/speed.json`` and ``speed.md``
(``speed.quick.*`` for ``--quick``).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting take the CPU from the thread they wait for when other
# processes share the cores; a passive wait made both libraries 2-2.5x faster under load here.
# It must be set before torch starts its thread pool; set OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from speed_measure import (  # noqa: E402
    conv_gflops,
    flops_per_image,
    large_allocations_from_os,
    matmul_gflops,
    peak_memory_mib,
    timed,
)
from speed_models import bits_per_dim_8bit, bits_per_dim_loss, normflows_model, oodflow_model, params  # noqa: E402

import speed_report  # noqa: E402

from ood_flow.flows import create_flow, fused  # noqa: E402
from ood_flow.dequantize import dequantize  # noqa: E402

SHAPE = (1, 28, 28)
PRESETS = {
    "quick": {"glow": {"scales": 2, "steps": 2, "hidden": 64}, "realnvp": {"scales": 2, "hidden": 32, "blocks": 1},
              "batch": 32, "score_batch": 64, "score_images": 128, "rounds": 3, "steps": 1, "warmup": 1,
              "paper_rounds": 1, "paper_warmup_batch": 8, "paper_score_images": 32, "mm_n": 1536},
    "full": {"glow": {"scales": 2, "steps": 8, "hidden": 256}, "realnvp": {"scales": 2, "hidden": 64, "blocks": 2},
             "batch": 64, "score_batch": 256, "score_images": 256, "rounds": 5, "steps": 1, "warmup": 2,
             "paper_rounds": 3, "paper_warmup_batch": 64, "paper_score_images": 128, "mm_n": 2048},
}
# Per model, oodflow and its normflows counterparts; the first counterpart is the headline's.
LIBS = {"glow": ("oodflow", "normflows"), "realnvp": ("oodflow", "normflows", "normflows-halfres")}


def load_images(n: int, data_dir: Path) -> tuple[torch.Tensor, str]:
    """The first ``n`` FashionMNIST training images (uint8), or random ones where the data is absent."""
    try:
        from ood_flow.data import load_source

        x = load_source("fashionmnist:train", data_dir=data_dir, limit=n, download=False).x
        return torch.as_tensor(x)[:n], f"FashionMNIST train ({data_dir})"
    except Exception as e:  # noqa: BLE001 - any failure means: no real data here
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8), f"random uint8 ({e})"


class Runner:
    """One model with its optimiser: a training step and a scoring pass over fixed batches."""

    def __init__(self, model: torch.nn.Module, train_x: torch.Tensor, score_x: torch.Tensor, score_batch: int):
        self.model, self.train_x, self.score_x, self.score_batch = model, train_x, score_x, score_batch
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.loss = float("nan")

    def train_step(self, x: torch.Tensor | None = None) -> None:
        self.model.train()
        loss = bits_per_dim_loss(self.model.log_prob, self.train_x if x is None else x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss = loss.item()

    def score(self, x: torch.Tensor | None = None) -> None:
        self.model.eval()
        x = self.score_x if x is None else x
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.score_batch):
                self.model.log_prob(x[start : start + self.score_batch])

    def flops(self, n: int = 4) -> dict[str, float]:
        """FLOPs per image: forward (scoring) and forward + backward (training).

        Counted on the plain modules: the counter does not know oneDNN's fused kernels, and the
        fused path computes the same convolutions.
        """
        x = self.train_x[:n]
        train = flops_per_image(lambda v: bits_per_dim_loss(self.model.log_prob, v).backward(), x)
        self.opt.zero_grad(set_to_none=True)
        self.model.eval()
        with torch.inference_mode(), fused.disabled():
            score = flops_per_image(self.model.log_prob, x)
        return {"train": train, "score": score}


def compare(arch: str, p: dict, train_x: torch.Tensor, score_x: torch.Tensor) -> tuple[dict, dict]:
    """Both libraries on ``arch``: rates per round, within-round ratios and MFU, FLOPs, params."""
    torch.manual_seed(0)
    libs = LIBS[arch]
    runners = {lib: Runner(build(lib, arch, p[arch]), train_x, score_x, p["score_batch"]) for lib in libs}
    for r in runners.values():
        for _ in range(p["warmup"]):
            r.train_step()
        r.score(score_x[: p["score_batch"]])
    flops = {lib: r.flops() for lib, r in runners.items()}
    rounds = []
    for i in range(p["rounds"]):
        order = libs if i % 2 == 0 else libs[::-1]
        before = kernel_rates(p)
        rec = {}
        for lib in order:
            t = sum(timed(runners[lib].train_step) for _ in range(p["steps"]))
            rec[f"{lib}_train"] = p["batch"] * p["steps"] / t
        for lib in order:
            rec[f"{lib}_score"] = score_x.shape[0] / timed(runners[lib].score)
        rounds.append({**rec, **bracket(before, kernel_rates(p))})
    out = summarize(arch, p, runners, flops, rounds)
    out["oodflow"]["fast_path_max_abs_diff_bits_per_dim"] = fast_path_difference(runners["oodflow"])
    return out, runners


def build(lib: str, arch: str, size: dict) -> torch.nn.Module:
    if lib == "oodflow":
        return oodflow_model(arch, SHAPE, size)
    return normflows_model(arch, SHAPE, size, halfres=lib.endswith("halfres"))


def _median(rounds: list[dict], fn) -> float:
    return statistics.median(fn(r) for r in rounds)


def summarize(arch: str, p: dict, runners: dict, flops: dict, rounds: list[dict]) -> dict:
    out = {"size": p[arch], "batch": p["batch"], "score_batch": p["score_batch"], "rounds": rounds}
    for lib in LIBS[arch]:
        out[lib] = {
            "params": params(runners[lib].model),
            "train_images_per_s": _median(rounds, lambda r: r[f"{lib}_train"]),
            "score_images_per_s": _median(rounds, lambda r: r[f"{lib}_score"]),
            "flops_per_image_train": flops[lib]["train"],
            "flops_per_image_score": flops[lib]["score"],
            "loss_bits_per_dim_after": runners[lib].loss,
        }
        for task in ("train", "score"):
            f = flops[lib][task]
            out[lib][f"mfu_{task}"] = _median(rounds, lambda r: f * r[f"{lib}_{task}"] / (r["mm_gflops"] * 1e9))
    for lib in LIBS[arch][1:]:
        suffix = lib.replace("-", "_")
        for task in ("train", "score"):
            speed = _median(rounds, lambda r: r[f"oodflow_{task}"] / r[f"{lib}_{task}"])
            out[f"{task}_speedup_vs_{suffix}"] = speed
            out[f"{task}_speedup_per_flop_vs_{suffix}"] = speed * flops["oodflow"][task] / flops[lib][task]
    return out


def memory(runners: dict) -> dict:
    """Peak resident memory added by one training step and one scoring batch, per library (MiB)."""
    large_allocations_from_os()
    return {lib: {"train_step_mib": peak_memory_mib(r.train_step),
                  "score_batch_mib": peak_memory_mib(lambda r=r: r.score(r.score_x[: r.score_batch]))}
            for lib, r in runners.items()}


def paper_realnvp(p: dict, images: torch.Tensor) -> dict:
    """The paper's FashionMNIST RealNVP (``create_flow`` defaults): training at batch 64, and scoring."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x, score_x = dequantize(images[:64], gen), dequantize(images[: p["paper_score_images"]], gen)
    runner = Runner(create_flow("realnvp", SHAPE), x, score_x, p["score_batch"])
    runner.train_step(x[: p["paper_warmup_batch"]])
    runner.score(score_x[:8])
    flops = runner.flops()
    rounds = []
    for _ in range(p["paper_rounds"]):
        before = kernel_rates(p)
        rec = {"train": 64 / timed(runner.train_step), "score": score_x.shape[0] / timed(runner.score)}
        rounds.append({**rec, **bracket(before, kernel_rates(p))})
    out = {"config": dict(runner.model.config.__dict__), "batch": 64, "score_batch": p["score_batch"],
           "params": params(runner.model), "flops_per_image_train": flops["train"],
           "flops_per_image_score": flops["score"], "rounds": rounds,
           "fast_path_max_abs_diff_bits_per_dim": fast_path_difference(runner)}
    for task in ("train", "score"):
        out[f"{task}_images_per_s"] = _median(rounds, lambda r: r[task])
        out[f"mfu_{task}"] = _median(rounds, lambda r: flops[task] * r[task] / (r["mm_gflops"] * 1e9))
        out[f"mfu_{task}_vs_best_kernel"] = _median(
            rounds, lambda r: flops[task] * r[task] / (max(r["mm_gflops"], r["conv_gflops"]) * 1e9))
    return out


def kernel_rates(p: dict) -> dict[str, float]:
    """fp32 rates now: MKL's square ``torch.mm`` and oneDNN's channels-last 3x3 64-channel conv."""
    return {"mm_gflops": matmul_gflops(p["mm_n"]), "conv_gflops": conv_gflops(channels_last=True)}


def bracket(before: dict, after: dict) -> dict[str, float]:
    """Mean of the rates timed before and after a round: the load can change during it."""
    return {k: (before[k] + after[k]) / 2 for k in before}


def fast_path_difference(runner: Runner) -> float:
    """Largest |bits/dim| difference between the default (fused) scoring path and the plain modules."""
    x = runner.score_x[:32]
    runner.model.eval()
    with torch.inference_mode():
        fast = _bpd(runner.model, x)
        with fused.disabled():
            plain = _bpd(runner.model, x)
    return (fast - plain).abs().max().item()


def _bpd(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return bits_per_dim_8bit(model.log_prob(x), x[0].numel())


def environment(p: dict, data: str) -> dict:
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "torch": torch.__version__, "normflows": _version("normflows"), "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_hardware": any(f in cpu_flags for f in ("avx512_bf16", "amx_bf16")),
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None, "data": data,
        "mm_gflops_best": max(matmul_gflops(p["mm_n"], repeats=3) for _ in range(2)),
        "conv3x3_64ch_14px_gflops": {"channels_last": conv_gflops(channels_last=True),
                                     "nchw": conv_gflops(channels_last=False)},
    }


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def run(p: dict, data_dir: Path) -> dict:
    n = max(p["batch"], 64, p["score_images"])
    images, data = load_images(n, data_dir)
    gen = torch.Generator().manual_seed(0)
    train_x = dequantize(images[: p["batch"]], gen)
    score_x = dequantize(images[: p["score_images"]], gen)
    env = environment(p, data)
    archs, runners = {}, {}
    for arch in ("glow", "realnvp"):
        archs[arch], runners[arch] = compare(arch, p, train_x, score_x)
    paper = paper_realnvp(p, images)
    all_rounds = paper["rounds"] + [r for a in archs.values() for r in a["rounds"]]
    env["mm_gflops_best"] = max([env["mm_gflops_best"]] + [r["mm_gflops"] for r in all_rounds])
    for arch in archs:  # last: it changes how large tensors are allocated
        archs[arch]["peak_memory"] = memory(runners[arch])
    return {**speed_report.headline(archs, paper), "models": archs, "paper_realnvp_fmnist": paper,
            "environment": env, "notes": speed_report.notes(env)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small models and few steps (about a minute)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results", help="folder for speed.json and speed.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = "quick" if args.quick else "full"
    res = run(PRESETS[preset], args.data_dir)
    res["preset"] = preset
    speed_report.write(res, args.out, "speed.quick" if args.quick else "speed", LIBS)
    print(json.dumps(res, indent=1) if args.json else speed_report.markdown(res, LIBS),
          end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
