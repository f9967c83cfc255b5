"""What ``ood_flow.allocator.keep_freed_memory`` (called by the ``oodflow`` command) changes, side by side.

Usage::

    OODFLOW_DATA_DIR=../shared/data python benchmarks/speed/malloc_effect.py            # 3 rounds
    OODFLOW_DATA_DIR=../shared/data python benchmarks/speed/malloc_effect.py --rounds 1 --small   # a quick check

Each task runs in a fresh process (malloc's settings are per process), once with glibc's defaults
(``OODFLOW_MALLOC=system``) and once with freed memory kept for reuse, the order flipping every
round; the table gives the median seconds, the median ratio default / kept with its min-max over
rounds, and the minor page faults and peak resident memory of the process (of the last round).
The tasks, all fp32 on the CPU with every core torch uses by default:

- ``timm forward``: a plain ``tf_efficientnet_lite0`` forward (channels-last, inference mode) of
  FashionMNIST test images already resized to 224x224, batch 64: what any PyTorch program gets;
- ``embed``: oodflow's embedding of the same images (read, resize in the workers, forward);
- ``score``: the paper's FashionMNIST RealNVP (Appendix C, untrained weights) scoring test images;
- ``train``: training steps of the same RealNVP (batch 32, Adam), from ``train_flow``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = ("timm forward", "embed", "score", "train")


def child(task: str, n: int, work: str) -> dict:
    """Run ``task`` in this process; seconds, minor faults and peak RSS."""
    import resource

    from ood_flow.allocator import keep_freed_memory

    kept = keep_freed_memory()
    import torch

    from ood_flow.data import load_source, open_source
    from ood_flow.embed import create_backbone, transform_for

    if task in ("timm forward", "embed"):
        model = create_backbone("tf_efficientnet_lite0", pretrained=False).eval()
        model = model.to(memory_format=torch.channels_last)
    if task == "timm forward":
        x = transform_for(model)(load_source("fashionmnist:test", limit=n, download=False).x)
    elif task == "score":
        from ood_flow.flows import create_flow
        from ood_flow.score.likelihood import score_likelihood

        torch.manual_seed(0)
        flow = create_flow("realnvp", (1, 28, 28)).eval()
        x = load_source("fashionmnist:test", limit=n, download=False).x
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if task == "timm forward":
        with torch.inference_mode():
            for batch in x.split(64):
                model(batch.contiguous(memory_format=torch.channels_last))
    elif task == "embed":
        from ood_flow.embed.extract import embed_stream

        embed_stream(model, open_source("fashionmnist:test", limit=n, split="test"), transform_for(model))
    elif task == "score":
        score_likelihood(flow, x, batch_size=64)
    else:
        from ood_flow.data import SourceOptions
        from ood_flow.train import TrainConfig, train_flow

        train_flow("fashionmnist", TrainConfig(max_steps=n, batch_size=32, epochs=1, val_fraction=0.0),
                   out=Path(work) / "t.pt", overwrite=True, options=SourceOptions(limit=32 * n))
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "minor_faults": r1.ru_minflt - r0.ru_minflt, "peak_rss_mib": r1.ru_maxrss / 1024,
            "kept": kept}


def run_child(task: str, n: int, work: str, kept: bool) -> dict:
    env = dict(os.environ, OODFLOW_MALLOC="" if kept else "system")
    out = subprocess.run([sys.executable, __file__, "--child", task, "--n", str(n), "--work", work],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{task} failed: {out.stderr.strip()[-800:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["kept"] != kept:
        raise RuntimeError(f"{task}: keep_freed_memory() returned {result['kept']}, expected {kept} (not glibc?)")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--small", action="store_true", help="fewer images and steps: a check that the script works")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.work)))
        return
    import tempfile

    sizes = {"timm forward": 256, "embed": 256, "score": 256, "train": 10}
    if args.small:
        sizes = {k: max(1, v // 8) for k, v in sizes.items()}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for task in TASKS:
            runs = {True: [], False: []}
            for r in range(args.rounds):
                for kept in ((False, True) if r % 2 == 0 else (True, False)):
                    runs[kept].append(run_child(task, sizes[task], work, kept))
            ratios = [d["seconds"] / k["seconds"] for d, k in zip(runs[False], runs[True])]
            rows.append({"task": task, "n": sizes[task],
                         "default_s": statistics.median(d["seconds"] for d in runs[False]),
                         "kept_s": statistics.median(k["seconds"] for k in runs[True]),
                         "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
                         "default_faults": runs[False][-1]["minor_faults"],
                         "kept_faults": runs[True][-1]["minor_faults"],
                         "default_peak_mib": runs[False][-1]["peak_rss_mib"],
                         "kept_peak_mib": runs[True][-1]["peak_rss_mib"]})
    sys.path[:0] = [str(HERE)]
    from speed_machine import FLAGS, cpu_model

    from ood_flow.device import cpu_flags

    res = {"rows": rows, "rounds": args.rounds, "cpu": cpu_model(), "cpu_flags": [f for f in FLAGS if f in cpu_flags()],
           "cores": len(os.sched_getaffinity(0)), "load_average_end": os.getloadavg()}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['cpu']} ({', '.join(res['cpu_flags'])}), {res['cores']} cores; median of {args.rounds} rounds, "
          "each task in a fresh process; speed-up = seconds with glibc's defaults / with freed memory kept (min-max)")
    print("| task | n | default s | kept s | speed-up | minor faults default / kept | peak RSS MiB default / kept |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['n']} | {r['default_s']:.2f} | {r['kept_s']:.2f} | {r['speedup']:.2f}x "
              f"({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) | {r['default_faults']:,} / {r['kept_faults']:,} | "
              f"{r['default_peak_mib']:.0f} / {r['kept_peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
