"""The speed benchmark's report: headline ratios, notes, the markdown table, and writing the results."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ood_flow.fileio import atomic_write


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def headline(archs: dict, paper: dict) -> dict:
    """The headline numbers: geometric-mean speedups over the comparisons, and the paper RealNVP's MFU."""
    return {
        "train_speedup_vs_normflows": geomean([a["train_speedup_vs_normflows"] for a in archs.values()]),
        "score_speedup_vs_normflows": geomean([a["score_speedup_vs_normflows"] for a in archs.values()]),
        **{f"{t}_speedup_per_flop_vs_normflows": geomean(
            [a[f"{t}_speedup_per_flop_vs_normflows"] for a in archs.values()]) for t in ("train", "score")},
        "mfu_train": paper["mfu_train"],
        "mfu_score": paper["mfu_score"],
        "mfu_train_vs_best_kernel": paper["mfu_train_vs_best_kernel"],
        "mfu_score_vs_best_kernel": paper["mfu_score_vs_best_kernel"],
        "paper_realnvp_fmnist_train_images_per_s": paper["train_images_per_s"],
        "paper_realnvp_fmnist_score_images_per_s": paper["score_images_per_s"],
        "fast_path_max_abs_diff_bits_per_dim": max(
            [paper["fast_path_max_abs_diff_bits_per_dim"]]
            + [a["oodflow"]["fast_path_max_abs_diff_bits_per_dim"] for a in archs.values()]),
    }


def notes(env: dict) -> dict:
    """What each headline number means, written into the results."""
    return {
        "speedups": "geometric means over the glow and realnvp comparisons (FLOP-matched normflows models); "
                    "each is the median over rounds of a within-round ratio",
        "bf16": "not used: bf16 st-networks only pay on CPUs with AMX or AVX-512-BF16"
                + ("" if env["bf16_hardware"] else ", which this one lacks"),
        "omp_wait_policy": "PASSIVE unless set: 2-2.5x faster for both libraries when other processes share the "
                           "cores, about 10% slower on an idle machine",
        "mfu_train/mfu_score": "of the paper's FashionMNIST RealNVP (the model users train); the smaller "
                               "comparison models' MFUs are under models",
        "mfu_*_vs_best_kernel": "the same FLOP rate over the faster of torch.mm and oneDNN's 3x3 conv timed "
                                "alongside (oneDNN's conv can beat MKL's sgemm on AMD CPUs, so MFU against "
                                "torch.mm alone can pass 100%)",
        "mfu": "model conv/matmul FLOPs (FlopCounterMode) x images/s / fp32 torch.mm rate of the same round",
    }


def markdown(res: dict, libs: dict) -> str:
    lines = ["| model | library | params | train img/s | score img/s | GFLOP/img train | MFU train | MFU score "
             "| peak MiB train | peak MiB score |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arch, a in res["models"].items():
        for lib in libs[arch]:
            m, mem = a[lib], a.get("peak_memory", {}).get(lib, {})
            lines.append(f"| {arch} {a['size']} | {lib} | {m['params']:,} | {m['train_images_per_s']:.1f} | "
                         f"{m['score_images_per_s']:.1f} | {m['flops_per_image_train'] / 1e9:.3f} | "
                         f"{m['mfu_train']:.0%} | {m['mfu_score']:.0%} | {_mib(mem.get('train_step_mib'))} | "
                         f"{_mib(mem.get('score_batch_mib'))} |")
        for lib in libs[arch][1:]:
            k = lib.replace("-", "_")
            lines.append(f"| | **oodflow / {lib}** | | **{a[f'train_speedup_vs_{k}']:.2f}x** | "
                         f"**{a[f'score_speedup_vs_{k}']:.2f}x** | per FLOP: | "
                         f"{a[f'train_speedup_per_flop_vs_{k}']:.2f}x | "
                         f"{a[f'score_speedup_per_flop_vs_{k}']:.2f}x | | |")
    paper, env = res["paper_realnvp_fmnist"], res["environment"]
    lines += ["", f"Speedup over normflows (geometric mean of glow and realnvp, FLOP-matched counterparts): "
              f"training {res['train_speedup_vs_normflows']:.2f}x, scoring {res['score_speedup_vs_normflows']:.2f}x. "
              "normflows-halfres is normflows' own checkerboard split, whose st-networks see half the pixels "
              "(fewer FLOPs, a different model): compare it per FLOP.",
              f"Paper FashionMNIST RealNVP ({paper['params']:,} params, "
              f"{paper['flops_per_image_train'] / 1e9:.1f} GFLOP/image train): {paper['train_images_per_s']:.2f} "
              f"training images/s at batch 64, {paper['score_images_per_s']:.1f} scoring images/s at batch "
              f"{paper['score_batch']}.",
              f"MFU (paper RealNVP): train {res['mfu_train']:.0%}, score {res['mfu_score']:.0%} of the fp32 "
              f"torch.mm rate timed alongside (best {env['mm_gflops_best']:.0f} GFLOP/s); "
              f"{res['mfu_train_vs_best_kernel']:.0%} and {res['mfu_score_vs_best_kernel']:.0%} of the faster of "
              f"torch.mm and oneDNN's 3x3 conv (at start: channels-last "
              f"{env['conv3x3_64ch_14px_gflops']['channels_last']:.0f}, NCHW "
              f"{env['conv3x3_64ch_14px_gflops']['nchw']:.0f} GFLOP/s).",
              f"Fused scoring path vs plain modules: max |bits/dim difference| "
              f"{res['fast_path_max_abs_diff_bits_per_dim']:.1e}.",
              f"torch {env['torch']}, normflows {env['normflows']}, {env['threads']} threads, "
              f"OMP_WAIT_POLICY={env['omp_wait_policy']}, load average {env['load_average']}, data: {env['data']}."]
    return "\n".join(lines) + "\n"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def write(res: dict, out: Path, stem: str, libs: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{stem}.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(res, indent=1) + "\n")
    with atomic_write(out / f"{stem}.md", overwrite=True) as tmp:
        tmp.write_text(markdown(res, libs))
