"""Reading image folders with and without a DataLoader worker process, side by side: what sets the default.

Usage::

    python benchmarks/speed/workers_ab.py --save        # 3 rounds (after a warm-up), the sizes below
    python benchmarks/speed/workers_ab.py --rounds 1 --png 128 --jpeg 64 --score 128   # a quick check

Three workloads, each read with 0 and with 1 worker process (``Source.batches(workers=...)``), in this
one process with freed memory kept for reuse (as the ``oodflow`` command runs), the order flipping every
round:

- ``embed`` of ``--png`` FashionMNIST test images saved as 28x28 PNGs (random ones where
  ``../shared/data`` is absent) with ``tf_efficientnet_lite0`` in fp32, as a rate relative to a plain
  timm forward of the same images already resized and normalised, timed in the same round (see
  ``embed_speed.py``);
- the same for ``--jpeg`` 500x375 JPEG photos (``stream_memory.py``'s), where decoding and resizing
  are a larger share of the work;
- scoring ``--score`` of those photos with the small RealNVP on 3x32x32 of ``stream_memory.py``
  (resized to its input), where the model is cheap and decoding is most of the work: images/s.

Quoted: median (min-max) over rounds. Results go to ``benchmarks/results/workers_ab.{json,md}`` with
``--save``; the machine and its number of cores are recorded, since the answer depends on them.
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

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE), str(HERE.parent)]

from embed_speed import BATCH, images, plain_forward, write_folder  # noqa: E402
from portable import portable  # noqa: E402
from speed_report import write_pair  # noqa: E402
from speed_machine import FLAGS, cpu_model  # noqa: E402
from stream_memory import MODEL_ARGS, write_photos  # noqa: E402

from ood_flow.allocator import keep_freed_memory  # noqa: E402
from ood_flow.data import open_source  # noqa: E402
from ood_flow.data.conform import conform_source  # noqa: E402
from ood_flow.device import cpu_flags  # noqa: E402
from ood_flow.embed import create_backbone, transform_for  # noqa: E402
from ood_flow.embed.extract import embed_stream  # noqa: E402
from ood_flow.flows import create_flow  # noqa: E402
from ood_flow.score.likelihood import score_likelihood  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"
WORKERS = (0, 1)


def embed_seconds(folder: str, workers: int) -> float:
    model = create_backbone(BACKBONE, pretrained=False)
    src = open_source(folder)
    start = time.perf_counter()
    embed_stream(model, src, transform_for(model), batch_size=BATCH, workers=workers)
    return time.perf_counter() - start


def score_seconds(folder: str, flow, workers: int) -> float:
    src, transform = conform_source(open_source(folder), flow.input_shape, resize=True)
    start = time.perf_counter()
    for batch in src.batches(256, transform, workers=workers):
        score_likelihood(flow, batch.x, batch_size=256)
    return time.perf_counter() - start


def measure(rounds: int, runs: dict) -> dict:
    """``runs``: name -> callable returning seconds. Every round runs each once, the order flipping."""
    seconds = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds + 1):  # round 0 warms up
        for name in names if r % 2 else names[::-1]:
            s = runs[name]()
            if r:
                seconds[name].append(s)
    return seconds


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="workers-ab-"))
    source, x = images(args.png)
    png = write_folder(x)
    try:
        jpeg = str(write_photos(work / "photos", max(args.jpeg, args.score), (500, 375)))
        jpeg_embed = work / "photos-embed"
        jpeg_embed.mkdir()
        for p in sorted(Path(jpeg).glob("*.jpg"))[: args.jpeg]:
            os.link(p, jpeg_embed / p.name)
        model = create_backbone(BACKBONE, pretrained=False)
        t = transform_for(model)
        rows = {}
        for name, folder in (("png", png), ("jpeg", str(jpeg_embed))):
            inputs = torch.cat([b.x for b in open_source(folder).batches(BATCH, t, workers=0)])
            runs = {"plain": lambda inputs=inputs: plain_forward(BACKBONE, inputs, "fp32")}
            runs |= {f"workers={w}": (lambda w=w, folder=folder: embed_seconds(folder, w)) for w in WORKERS}
            sec = measure(args.rounds, runs)
            rows[f"embed_{name}"] = {
                "n": len(inputs),
                **{k: summary([p / s for p, s in zip(sec["plain"], v)]) for k, v in sec.items() if k != "plain"},
                "plain_img_s": summary([len(inputs) / s for s in sec["plain"]])}
        torch.manual_seed(0)
        flow = create_flow("realnvp", (3, 32, 32), **MODEL_ARGS).eval()
        scoring = work / "photos-score"
        scoring.mkdir()
        for p in sorted(Path(jpeg).glob("*.jpg"))[: args.score]:
            os.link(p, scoring / p.name)
        runs = {f"workers={w}": (lambda w=w: score_seconds(str(scoring), flow, w)) for w in WORKERS}
        sec = measure(args.rounds, runs)
        rows["score_jpeg"] = {"n": args.score, **{k: summary([args.score / s for s in v]) for k, v in sec.items()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(png, ignore_errors=True)
    return {"rows": rows, "rounds": args.rounds, "source": portable(source), "cores": len(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "cpu_flags": [f for f in FLAGS if f in cpu_flags()],
            "torch": torch.__version__, "load_average_start": args.load}


def markdown(res: dict) -> str:
    def cell(s: dict, fmt: str) -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    r = res["rows"]
    rounds = "" if res["rounds"] == 3 else f" --rounds {res['rounds']}"
    lines = ["# Reading folders with 0 or 1 DataLoader worker process", "",
             f"Command: `python benchmarks/speed/workers_ab.py --save{rounds}`", "",
             f"{res['cpu']} ({', '.join(res['cpu_flags'])}), {res['cores']} cores, torch {res['torch']}, "
             f"{res['threads']} threads, load average at the start {res['load_average_start']:.2f}; median (min-max) "
             f"of {res['rounds']} rounds, order alternating.", "",
             "| workload | images | 0 workers | 1 worker |", "|---|---|---|---|"]
    for key, what in (("embed_png", "Lite0 embed, 28x28 PNG folder: rate / plain forward's"),
                      ("embed_jpeg", "Lite0 embed, 500x375 JPEG folder: rate / plain forward's")):
        lines.append(f"| {what} | {r[key]['n']} | {cell(r[key]['workers=0'], '.3f')} | "
                     f"{cell(r[key]['workers=1'], '.3f')} |")
    s = r["score_jpeg"]
    lines.append(f"| RealNVP 3x32x32 score, 500x375 JPEG folder: img/s | {s['n']} | {cell(s['workers=0'], '.1f')} | "
                 f"{cell(s['workers=1'], '.1f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    keep_freed_memory()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--png", type=int, default=640)
    p.add_argument("--jpeg", type=int, default=320)
    p.add_argument("--score", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/workers_ab.{json,md}")
    args = p.parse_args()
    args.load = os.getloadavg()[0]
    res = run(args)
    if args.save:
        write_pair("workers_ab", res, markdown(res))
    print(json.dumps(res, indent=2) if args.json else markdown(res))


if __name__ == "__main__":
    main()
