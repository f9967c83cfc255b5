"""The speed benchmark's report: headline ratios, utilization, warnings, the markdown table, the files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ood_flow.fileio import atomic_write
from speed_machine import cap_note

TASKS = ("train", "score")


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _utilize(row: dict, peak: dict, flops: dict | None = None) -> None:
    """Add GFLOP/s and the share of the peak of its precision to each task of ``row``."""
    for task in TASKS:
        key = f"{task}_images_per_s"
        if key in row:
            f = flops[task] if flops else row[f"{task}_flops_per_image"]
            row[f"{task}_gflops"] = f * row[key] / 1e9
            row[f"{task}_utilization"] = row[f"{task}_gflops"] / peak[row.get(f"{task}_precision", "fp32")]


def _paper_rows(paper: dict, peak: dict) -> dict:
    rows = {}
    for prec in ("fp32", "bf16"):
        row = {f"{t}_images_per_s": paper[f"{prec}_{t}_images_per_s"] for t in TASKS}
        row.update({f"{t}_precision": prec for t in TASKS})
        _utilize(row, peak, paper["flops_per_image"])
        rows[prec] = row
    return rows


def results(archs: dict, papers: dict, env: dict, peak: dict, precision: str, peers: dict) -> dict:
    for a in archs.values():
        for row in _rows(a).values():
            _utilize(row, peak)
    for paper in papers.values():
        paper["rows"] = _paper_rows(paper, peak)
    rows = [r for a in archs.values() for r in a.values() if isinstance(r, dict) and "train_utilization" in r]
    rows += [r for p in papers.values() for r in p["rows"].values()]
    shares = [r[f"{t}_utilization"] for r in rows for t in TASKS]
    # The load at the end counts the benchmark's own threads (one-minute average), so only the start's says
    # whether other work was running; the end's is recorded beside it.
    load = env["load_average_start"][0]
    warnings = [f"load average {load:.2f} > 0.5 at the start: other work shared the CPU"] if load > 0.5 else []
    if max(shares) > 1:
        warnings.append(f"a utilization of {max(shares):.2f} > 1: the peak is wrong (too low), so are the shares")
    bound_broken = [f"{arch} {lib}" for arch, a in archs.items() for lib, e in a["bf16_error_bits_per_dim"].items()
                    if e > 0.01]
    paper = papers["realnvp"]["rows"][precision]
    return {
        "train_speedup_vs_normflows": geomean([a["train_speedup_vs_normflows"] for a in archs.values()]),
        "score_speedup_vs_normflows": geomean([a["score_speedup_vs_normflows"] for a in archs.values()]),
        "train_speedup_vs_normflows_halfres_per_flop": archs["realnvp"]["train_speedup_per_flop_vs_normflows_halfres"],
        "peer_settings": peer_settings(archs, peers),
        "precision": precision,
        "utilization_train": paper["train_utilization"],
        "utilization_score": paper["score_utilization"],
        "cpu_flags": env["cpu_flags"],
        "peak_gflops": peak,
        "bf16_bound_exceeded": bound_broken,
        "warnings": warnings,
        "models": archs,
        "paper_models": papers,
        "machine": env,
    }


def _rows(a: dict) -> dict:
    """One model's rows (oodflow fp32 and bf16, each peer, any peer in oodflow's precision), by name."""
    return {k: v for k, v in a.items() if isinstance(v, dict) and "params" in v}


def peer_settings(archs: dict, peers: dict) -> str:
    parts = [f"{lib} {arch}: train {a[lib]['train_setting']}, score {a[lib]['score_setting']}"
             for arch, a in archs.items() for lib in peers[arch]]
    return ("fastest setting within the bf16 accuracy bound, chosen per task from NCHW/channels-last x "
            "fp32/bf16 (bf16 = torch.autocast around the whole model); training in train mode, scoring in "
            "eval mode under torch.inference_mode; same threads and batches. " + "; ".join(parts))


def _spread(row: dict, task: str) -> str:
    lo, hi = row[f"{task}_spread"]
    return f"{row[f'{task}_images_per_s']:.1f} ({lo:.1f}-{hi:.1f})"


def markdown(res: dict) -> str:
    lines = ["| model | run | setting (train / score) | params | GFLOP/img train | train img/s (min-max) | "
             "score img/s (min-max) | util. train | util. score | bf16 Δbits/dim |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    same = []  # peers in oodflow's precision beside the rule's choice (speed.same_precision)
    for arch, a in res["models"].items():
        libs, errors = list(_rows(a)), a["bf16_error_bits_per_dim"]
        same += [f"{arch} {lib}" for lib in libs if lib.endswith(f"-{res['precision']}")]
        for lib in libs:
            name = lib.split()[0]
            r, err = a[lib], errors.get(name, errors.get(name.rsplit("-", 1)[0], float("nan")))
            lines.append(f"| {arch} | {lib} | {r['train_setting']} / {r['score_setting']} | {r['params']:,} | "
                         f"{r['train_flops_per_image'] / 1e9:.3f} | {_spread(r, 'train')} | {_spread(r, 'score')} | "
                         f"{r['train_utilization']:.0%} | {r['score_utilization']:.0%} | {err:.1e} |")
        for lib in libs[2:]:
            k = lib.replace("-", "_")
            lines.append(f"| {arch} | **oodflow {res['precision']} / {lib}** | | | per FLOP: "
                         f"{a[f'train_speedup_per_flop_vs_{k}']:.2f}x / {a[f'score_speedup_per_flop_vs_{k}']:.2f}x | "
                         f"**{a[f'train_speedup_vs_{k}']:.2f}x** ({_range(a[f'train_speedup_vs_{k}_spread'])}) | "
                         f"**{a[f'score_speedup_vs_{k}']:.2f}x** ({_range(a[f'score_speedup_vs_{k}_spread'])}) | | | |")
    m, peak = res["machine"], res["peak_gflops"]
    rounds = len(next(iter(res["models"].values()))["rounds"])
    lines += ["", f"Medians over {rounds} alternating rounds, spread min-max. "
              f"Headline (geometric mean over glow and realnvp, oodflow {res['precision']} vs normflows at its "
              f"best): training **{res['train_speedup_vs_normflows']:.2f}x**, scoring "
              f"**{res['score_speedup_vs_normflows']:.2f}x**."]
    if same:
        lines += ["", f"Equal precision ({', '.join(same)}): the peer's fastest bf16 setting, timed in the same rounds "
                  "though its bf16 scores moved past the 0.01 bits/dim bound (so the rule, and the headline, compare "
                  "its setting within the bound)."]
    lines += ["", "Paper models (oodflow only):", ""]
    for name, p in res["paper_models"].items():
        for prec, r in p["rows"].items():
            lines.append(f"- {name} ({p['params']:,} params, {p['flops_per_image']['train'] / 1e9:.1f} GFLOP/img "
                         f"train) {prec}: train {r['train_images_per_s']:.2f} img/s (batch {p['batch']}, "
                         f"{r['train_gflops']:.0f} GFLOP/s, {r['train_utilization']:.0%} of peak), score "
                         f"{r['score_images_per_s']:.1f} img/s ({r['score_gflops']:.0f} GFLOP/s, "
                         f"{r['score_utilization']:.0%}); bf16 mean |Δbits/dim| {p['bf16_error_bits_per_dim']:.1e}; "
                         f"batch preparation {p['data_share_of_train_step']:.1%} of a training step")
    lines += ["", f"Peak (best of many matmuls and 3x3 convs, before / after): fp32 "
              f"{m['peak_gflops_before']['fp32']:.0f} / {m['peak_gflops_after']['fp32']:.0f}, bf16 "
              f"{m['peak_gflops_before']['bf16']:.0f} / {m['peak_gflops_after']['bf16']:.0f} GFLOP/s "
              f"(used: fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f}).",
              f"Peer: {res['peer_settings']}.",
              f"Machine: {m['cpu']}, flags {', '.join(m['cpu_flags'])}{cap_note(m)}, {m['threads']} threads, "
              f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset (libgomp default)'}, "
              f"malloc {m.get('malloc', 'system')}, "
              f"load average {m['load_average_start'][0]:.2f} at start, "
              f"{m['load_average_end'][0]:.2f} at end (its own threads included); torch {m['torch']}, "
              f"normflows {m['normflows']}; data: {m['data']}.", f"Command: `{res['command']}`"]
    lines += [f"**Warning:** {w}" for w in res["warnings"]]
    return "\n".join(lines) + "\n"


def _range(v: list[float]) -> str:
    return f"{v[0]:.2f}-{v[1]:.2f}"


RESULTS = Path(__file__).resolve().parents[1] / "results"


def write(res: dict, out: Path, stem: str) -> None:
    write_pair(stem, res, markdown(res), out, indent=1)


def write_pair(stem: str, res: dict, md: str, out: Path = RESULTS, indent: int = 2) -> None:
    """A benchmark's results as ``out/stem.json`` and ``out/stem.md``, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(res, indent=indent) + "\n"), (".md", md)):
        with atomic_write(out / f"{stem}{suffix}", overwrite=True) as tmp:
            Path(tmp).write_text(text)
