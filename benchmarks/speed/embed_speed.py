"""``embed`` against a plain timm forward of the same backbone, side by side, at each precision.

Usage::

    python benchmarks/speed/embed_speed.py                    # 1,024 images, fp32 and bf16 (where supported), 5 rounds
    python benchmarks/speed/embed_speed.py --n 128 --rounds 1 # a quick check that the script works
    python benchmarks/speed/embed_speed.py --json             # the results as JSON on stdout

The plain forward is what a user could write with timm alone: ``timm.create_model(name,
num_classes=0)`` in eval mode, channels-last, ``torch.inference_mode``, bf16 autocast for bf16,
fed tensors that are already resized and normalised (batch 64). Both run in this one process with
freed memory kept for reuse (``ood_flow.allocator``, what the ``oodflow`` command sets up).
``embed`` is oodflow's whole path from stored 8-bit images to features: read the source in
batches, scale, repeat grey to RGB, resize (antialiased) and normalise (in DataLoader worker processes
where the machine has more than 2 cores, see ``ood_flow.data.stream.default_workers``), run the
backbone. It is timed on two sources: FashionMNIST test images held in memory
(``../shared/data``; random 28x28 images where that is absent) and the same images as PNG files
in a folder (decoded per file).

The goal is ``embed`` within 5 % of the plain forward's rate. Machines here are shared, so what is
quoted is the median over rounds of a within-round ratio (the order of the three flips every round),
with the smallest and largest ratio beside it. A rate is over a whole run, start-up included (a
DataLoader worker's, where there is one, is about 0.1 s), so it is measured on 1,024 images (16
batches) by default.
Results go to ``benchmarks/results/embed_speed.json`` and ``.md`` with ``--save``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see speed.py: spinning OpenMP threads starve others

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]

from ood_flow.allocator import keep_freed_memory  # noqa: E402
from ood_flow.data import open_source  # noqa: E402
from ood_flow.data.stream import default_workers  # noqa: E402
from ood_flow.device import bf16_supported  # noqa: E402
from ood_flow.embed import create_backbone, transform_for  # noqa: E402
from ood_flow.embed.extract import embed_stream  # noqa: E402
from ood_flow.runtime import Runtime  # noqa: E402
from ood_flow.device import cpu_flags  # noqa: E402
from portable import portable  # noqa: E402
from speed_report import write_pair  # noqa: E402
from speed_machine import FLAGS, cpu_model  # noqa: E402

BATCH = 64


def plain_forward(name: str, x: torch.Tensor, precision: str) -> float:
    """Seconds for a plain timm forward over ``x`` (already the backbone's input), batch 64."""
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0).eval().to(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for batch in x.split(BATCH):
            model(batch.contiguous(memory_format=torch.channels_last))
    return time.perf_counter() - start


def oodflow_embed(name: str, source: str, n: int, precision: str) -> float:
    """Seconds for oodflow's embedding of ``n`` images of ``source``: the path of ``embed`` and of scoring
    raw images with a detector (read in batches, transform, forward)."""
    model = create_backbone(name, pretrained=False)
    src = open_source(source, limit=n, split="test")
    start = time.perf_counter()
    out = embed_stream(model, src, transform_for(model), Runtime(backbone=precision), batch_size=BATCH)
    seconds = time.perf_counter() - start
    assert out.features.shape[0] == n
    return seconds


def images(n: int) -> tuple[str, np.ndarray]:
    """A dataset SOURCE of ``n`` test images and the same images as an array (random where no data)."""
    from ood_flow.data import load_source

    try:
        ds = load_source("fashionmnist:test", limit=n, download=False)
        return "fashionmnist:test", ds.x.numpy()
    except Exception:  # no data root here: random digits-sized images in an .npy file
        x = np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
        path = Path(tempfile.mkdtemp()) / "random.npy"
        np.save(path, x)
        return str(path), x


def write_folder(x: np.ndarray) -> str:
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="embed-speed-"))
    for i, image in enumerate(x):
        Image.fromarray(image[0]).save(folder / f"{i:06d}.png")
    return str(folder)


def run(args) -> dict:
    source, x = images(args.n)
    folder = write_folder(x)
    try:
        return _run(args, source, x, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(args, source: str, x: np.ndarray, folder: str) -> dict:
    model = create_backbone(args.backbone, pretrained=False)
    inputs = transform_for(model)(torch.from_numpy(x))
    precisions = [p for p in args.precision if p == "fp32" or bf16_supported("cpu")]
    rows = []
    for precision in precisions:
        ratios = {"memory": [], "folder": []}
        rates = {"plain": [], "memory": [], "folder": []}
        for r in range(args.rounds + 1):  # round 0 warms up and is not counted
            order = ["plain", "memory", "folder"] if r % 2 else ["folder", "memory", "plain"]
            seconds = {}
            for what in order:
                where = source if what == "memory" else folder
                seconds[what] = (plain_forward(args.backbone, inputs, precision) if what == "plain" else
                                 oodflow_embed(args.backbone, where, args.n, precision))
            if r == 0:
                continue
            for what in rates:
                rates[what].append(args.n / seconds[what])
            for what in ratios:
                ratios[what].append(seconds["plain"] / seconds[what])
        rows.append({"precision": precision, **{f"{k}_img_s": statistics.median(v) for k, v in rates.items()},
                     **{f"ratio_{k}": statistics.median(v) for k, v in ratios.items()},
                     **{f"ratio_{k}_min": min(v) for k, v in ratios.items()},
                     **{f"ratio_{k}_max": max(v) for k, v in ratios.items()},
                     "per_round": {**{f"{k}_img_s": v for k, v in rates.items()}}})
    return {"backbone": args.backbone, "n": args.n, "batch": BATCH, "rounds": args.rounds, "rows": rows,
            "threads": torch.get_num_threads(), "source": portable(source),
            "workers": default_workers(),
            "cpu": cpu_model(), "cpu_flags": [f for f in FLAGS if f in cpu_flags()], "torch": torch.__version__,
            "bf16_native": bf16_supported("cpu"), "load_average_start": args.load, "load_average_end": os.getloadavg()}


def load(res: dict) -> str:
    """The 1-minute load average at the start (before the benchmark's own load) and at the end."""
    start = res.get("load_average_start")
    first = "not recorded" if start is None else f"{start[0]:.2f}"
    return f"1-minute load average {first} at the start, {res['load_average_end'][0]:.2f} at the end"


def markdown(res: dict) -> str:
    rounds = "" if res["rounds"] == 5 else f" --rounds {res['rounds']}"
    lines = [f"# embed vs a plain timm forward ({res['backbone']}, {res['n']} images, batch {res['batch']})", "",
             f"Command: `python benchmarks/speed/embed_speed.py --save{rounds}`", "",
             f"{res['cpu']} ({', '.join(res['cpu_flags'])}), torch {res['torch']}, {res['threads']} threads, "
             f"worker processes: {res['workers']}, {load(res)}; "
             f"median of {res['rounds']} rounds (min-max). Ratio = embed's rate / the plain forward's in the same "
             "round (goal: at least 0.95).", "",
             "| precision | plain forward img/s | embed, images in memory | ratio | embed, PNG folder | ratio |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['precision']} | {r['plain_img_s']:.1f} | {r['memory_img_s']:.1f} | "
                     f"{r['ratio_memory']:.3f} ({r['ratio_memory_min']:.3f}-{r['ratio_memory_max']:.3f}) | "
                     f"{r['folder_img_s']:.1f} | {r['ratio_folder']:.3f} "
                     f"({r['ratio_folder_min']:.3f}-{r['ratio_folder_max']:.3f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    keep_freed_memory()  # as the oodflow command does; the plain forward, in this process, gets it too
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/embed_speed.{json,md}")
    args = p.parse_args()
    args.load = os.getloadavg()
    res = run(args)
    if args.save:
        write_pair("embed_speed", res, markdown(res))
    print(json.dumps(res, indent=2) if args.json else markdown(res))


if __name__ == "__main__":
    main()
