"""Streaming image folders: peak memory and throughput of ``oodflow score`` on 2,000 vs 20,000 photos.

Usage::

    python benchmarks/speed/stream_memory.py --save         # 2,000 and 20,000 JPEGs of 500x375 (about 2 GB of disk)
    python benchmarks/speed/stream_memory.py --sizes 200 2000 # a quick check that the script works
    python benchmarks/speed/stream_memory.py --json

For each size it writes that many JPEG photos (smooth random colour fields with noise, 500x375 by
default, cached under ``--work``), then measures in a fresh process each:

- ``oodflow score FOLDER --model m.pt --resize --out s.h5`` with a small RealNVP on 3x32x32, the
  photos read once beforehand so that they come from the page cache: wall
  time (images/s) and the peak resident memory of the process and its DataLoader workers together
  (proportional set size, sampled from ``/proc`` every 20 ms);
- for contrast, reading the folder whole into memory (``load_source``), which is what scoring did
  before it streamed;
- the share of time spent decoding: seconds to decode and resize every image in one process,
  against that plus the seconds the model needs for the same number of 32x32 images.

Peak memory of the streaming score must not grow with the folder by more than a few batches' worth.
Results go to ``benchmarks/results/stream_memory.json`` and ``.md`` with ``--save``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

from ood_flow.data.stream import default_workers  # noqa: E402
from speed_report import write_pair  # noqa: E402
from speed_machine import cpu_model  # noqa: E402

MODEL_ARGS = {"channels": 16, "blocks": 1}


def write_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``n`` JPEGs of ``size`` (width, height) in ``folder``, unless already there."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:06d}.jpg", quality=85)
    return folder


def warm_cache(folder: Path) -> None:
    """Read every file once, so that the timed score reads them from the page cache whatever ran before (reading
    20,000 photos whole takes most of the memory and evicts them from the cache)."""
    for path in sorted(folder.glob("*.jpg")):
        path.read_bytes()


def tree_pss(pid: int) -> int:
    """Proportional set size (shared pages split between the processes that share them) of ``pid`` and
    all its descendants, in bytes: forked DataLoader workers share the parent's pages."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _pss(p)
        todo += children.get(p, [])
    return total


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def peak_of(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (seconds, peak MiB of its process tree)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().strip()[-500:]}")
    return seconds, peak / 2**20


def decode_share(folder: Path, model_path: Path, n: int) -> dict:
    """Seconds to decode and resize every image (one process), and for the model on as many inputs."""
    from ood_flow.data import open_source
    from ood_flow.data.conform import conform_source
    from ood_flow.flows import load_model
    from ood_flow.score.likelihood import score_likelihood

    flow = load_model(model_path)
    src, transform = conform_source(open_source(str(folder)), flow.input_shape, resize=True)
    start = time.perf_counter()
    x = torch.cat([b.x for b in src.batches(256, transform, workers=0)])
    decode = time.perf_counter() - start
    start = time.perf_counter()
    score_likelihood(flow, x, batch_size=256)
    model = time.perf_counter() - start
    return {"decode_s": decode, "model_s": model, "decode_share": decode / (decode + model), "n": n}


def run(args) -> dict:
    from ood_flow.flows import create_flow, save_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "m.pt"
    torch.manual_seed(0)
    save_model(create_flow("realnvp", (3, 32, 32), **MODEL_ARGS), model_path, overwrite=True)
    rows = []
    for n in args.sizes:
        folder = write_photos(work / f"photos-{n}", n, tuple(args.size))
        out = work / f"scores-{n}.h5"
        out.unlink(missing_ok=True)
        warm_cache(folder)
        seconds, peak = peak_of([sys.executable, "-c", "from ood_flow.cli.main import main; main()", "score",
                                 str(folder), "--model", str(model_path), "--resize", "--out", str(out), "--quiet"])
        whole_s, whole_peak = peak_of([sys.executable, "-c", "import sys; from ood_flow.data import load_source; "
                                       "print(load_source(sys.argv[1]).x.shape)", str(folder)])
        rows.append({"n": n, "score_s": seconds, "img_s": n / seconds, "peak_mib": peak,
                     "load_whole_s": whole_s, "load_whole_peak_mib": whole_peak})
    share = decode_share(work / f"photos-{args.sizes[0]}", model_path, args.sizes[0])
    return {"size": list(args.size), "rows": rows, "decode": share, "model": {"realnvp": MODEL_ARGS},
            "threads": torch.get_num_threads(), "torch": torch.__version__, "workers": default_workers(),
            "cores": len(os.sched_getaffinity(0)), "cpu": cpu_model()}


def markdown(res: dict) -> str:
    w, h = res["size"]
    lines = [f"# Streaming: `oodflow score FOLDER --resize` on {w}x{h} JPEGs", "",
             "Command: `python benchmarks/speed/stream_memory.py --save`", "",
             f"{res['cpu']}, {res['cores']} cores, {res['workers']} DataLoader worker processes (the default here), "
             f"torch {res['torch']}, the `oodflow` command with freed memory kept for reuse (`ood_flow/allocator.py`); "
             "rates include the command's start-up (about 5 s), the photos read from the page cache.", "",
             "| images | score: img/s | score: peak MiB (workers included) | reading the folder whole: peak MiB |",
             "|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['n']:,} | {r['img_s']:.1f} | {r['peak_mib']:.0f} | {r['load_whole_peak_mib']:.0f} |")
    d = res["decode"]
    lines += ["", f"Decoding and resizing {d['n']:,} images took {d['decode_s']:.1f} s in one process, the model "
              f"{d['model_s']:.1f} s on the same number of 3x32x32 inputs: decoding is {d['decode_share']:.0%} of "
              "the work."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"))
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "oodflow-stream-bench"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/stream_memory.{json,md}")
    args = p.parse_args()
    res = run(args)
    if args.save:
        write_pair("stream_memory", res, markdown(res))
    print(json.dumps(res, indent=2) if args.json else markdown(res))


if __name__ == "__main__":
    main()
