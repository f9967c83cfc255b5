"""Behaviour identity: the same commands under two versions of oodflow write the same numbers, bit for bit.

Runs a fixed set of commands through the CLI (training realnvp, glow, tabular and gaussian models in fp32
and, where this CPU runs it, bf16, with ``auto``, a ``--resume`` and negative training; scoring with every
method, a gate and a background model; a feature detector on a tiny timm backbone with saved random weights,
scoring images and a features file; ``embed``; ``calibrate``; ``visualize``) once with the code of a git
revision (a worktree of it, put on ``PYTHONPATH``) and once with this checkout, each side in its own folder,
then compares what they wrote:

- model files and checkpoints: every tensor of the state dict and of the optimiser state exactly (dtype and
  bits), and every other value they record (history, calibration scores, training configuration);
- score and features files: every dataset of every group exactly, and every attribute;
- figures (PNG): the bytes;
- each command's exit code, and its ``--json`` output where it prints one.

Times, durations, versions, hashes of whole model files (``IGNORED``), the side's own folder and the code's
(replaced by ``<DIR>`` and ``<CODE>`` in every string: the shipped demo datasets are read from the code's
folder) are left out of the comparison. Commands listed in ``CHANGES`` are the intended differences: they
are run and their outcome on both sides is shown, not compared. ``--compare-only`` compares the folders of an
earlier run again.

Needs nothing from the network: the demo datasets ship with oodflow, the backbone is timm's ``test_resnet``
with random weights saved here.

Usage::

    python benchmarks/identity/check.py --before main            # main against this checkout
    python benchmarks/identity/check.py --before HEAD~3 --after /tmp/other-checkout --work /tmp/identity

Exit code 0 when every command gave identical outputs, 1 otherwise (the differences are listed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IGNORED = {"time", "seconds", "oodflow_version", "timm_version", "created",
           "model_sha256", "background_model_sha256"}  # hashes of model files: torch.save writes the file's own
# (temporary) name into it, so two saves of the same weights differ; model_digest, of the weights, is compared
IMAGES = ["--data", "demo-fashionmnist", "--limit", "200", "--batch-size", "32", "--epochs", "2", "--quiet", "--json"]
SMALL_IMAGES = [*IMAGES, "--channels", "8", "--blocks", "1"]
GLOW = [*IMAGES, "--model", "glow", "--channels", "16", "--couplings", "2", "--scales", "2"]
TABULAR = ["--model", "tabular", "--couplings", "2", "--hidden", "16", "--epochs", "3", "--batch-size", "32",
           "--quiet", "--json"]
DETECTOR = ["--features", "test_resnet", "--image-size", "32", "--epochs", "3", "--batch-size", "32",
            "--couplings", "2", "--hidden", "16", "--val-fraction", "0.25", "--calibration-fraction", "0.25",
            "--quiet", "--json"]
SCORE = ["--limit", "100", "--quiet", "--json"]


def bf16_here() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def commands(inputs: Path, bf16: bool) -> list[tuple[str, list[str]]]:
    """``(name, arguments of oodflow)``, run in order in each side's folder."""
    i = {k: str(inputs / k) for k in ("in.npz", "held.npz", "ood.npz", "vec.npz", "vec-ood.npz", "w.pth")}
    precisions = ["fp32", "bf16", "auto"] if bf16 else ["fp32"]
    run = []
    for p in precisions:
        run.append((f"train realnvp {p}", ["train", "--model", "realnvp", *SMALL_IMAGES,
                                           "--precision", p, "--out", f"realnvp-{p}.pt"]))
    for p in precisions[:2]:
        run.append((f"train glow (highway) {p}", ["train", *GLOW, "--blocks", "1",
                                                  "--precision", p, "--out", f"glow-{p}.pt"]))
        run.append((f"train glow --net glow {p}", ["train", *GLOW, "--net", "glow",
                                                   "--precision", p, "--out", f"glownet-{p}.pt"]))
        run.append((f"train tabular {p}", ["train", "--data", i["vec.npz"], *TABULAR, "--precision", p,
                                           "--out", f"tabular-{p}.pt"]))
        run.append((f"train detector {p}", ["train", "--data", i["in.npz"], *DETECTOR, "--weights", i["w.pth"],
                                            "--precision", p, "--out", f"det-{p}.pt"]))
        run.append((f"embed {p}", ["embed", i["in.npz"], "--backbone", "test_resnet", "--weights", i["w.pth"],
                                   "--image-size", "32", "--precision", p, "--out", f"features-{p}.h5", "--quiet"]))
    run += [
        ("train gaussian", ["train", "--data", i["vec.npz"], "--model", "gaussian", "--quiet", "--json",
                            "--out", "gaussian.pt"]),
        ("train realnvp --net resnet-v1", ["train", "--net", "resnet-v1",
                                           *SMALL_IMAGES, "--out", "v1.pt"]),
        ("train 3 steps", ["train", *SMALL_IMAGES, "--max-steps", "3",
                           "--out", "resumed.pt"]),
        ("train --resume to 9 steps", ["train", *SMALL_IMAGES, "--max-steps", "9",
                                       "--resume", "--out", "resumed.pt"]),
        ("train negative", ["train", *SMALL_IMAGES, "--negative-data", "demo-mnist",
                            "--max-steps", "6", "--out", "negative.pt"]),
        ("train background (--perturb)", ["train", *SMALL_IMAGES, "--perturb", "0.2",
                                          "--out", "background.pt"]),
    ]
    run += scores(i, bf16)
    run += [
        ("calibrate realnvp", ["calibrate", "demo-fashionmnist:test", "--model", "realnvp-fp32.pt", "--limit", "100",
                               "--overwrite", "--quiet", "--json"]),
        ("calibrate detector", ["calibrate", i["held.npz"], "--model", "det-fp32.pt", "--overwrite", "--quiet",
                                "--json"]),
        ("score gated on the new calibration", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", *SCORE,
                                                "--max-ood-fraction", "1.0", "--out", "scores.h5",
                                                "--name", "gated-after-calibrate"]),
        ("visualize latents", ["visualize", "latents", "demo-mnist", "demo-fashionmnist", "--model", "realnvp-fp32.pt",
                               "--out", "latents.png", "--quiet"]),
        ("visualize samples", ["visualize", "samples", "--model", "glow-fp32.pt", "--out", "samples.png",
                               "--quiet"]),
        ("visualize coupling", ["visualize", "coupling", "demo-mnist", "--model", "glownet-fp32.pt",
                                "--out", "coupling.png", "--quiet"]),
        ("visualize resample", ["visualize", "resample", "demo-mnist", "--model", "v1.pt", "--out", "resample.png",
                                "--quiet"]),
    ]
    return run


def scores(i: dict, bf16: bool) -> list[tuple[str, list[str]]]:
    out = ["--out", "scores.h5"]
    run = [
        ("score likelihood, complexity, bn-train", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", *SCORE, *out,
                                                    "--name", "mnist", "--method", "likelihood", "--method",
                                                    "complexity", "--method", "bn-train"]),
        ("score in-distribution", ["score", "demo-fashionmnist", "--model", "realnvp-fp32.pt", *SCORE, *out,
                                   "--name", "fashion"]),
        ("score waic", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", "--model", "v1.pt", "--method", "waic",
                        *SCORE, *out, "--name", "waic"]),
        ("score likelihood-ratio", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", "--background-model",
                                    "background.pt", "--method", "likelihood-ratio", *SCORE, *out, "--name", "ratio"]),
        ("score 3 draws", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", "--dequant-samples", "3", *SCORE, *out,
                           "--name", "draws"]),
        ("score gated (model's calibration)", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", *SCORE, *out,
                                               "--name", "gated", "--max-ood-fraction", "1.0"]),
        ("score gated (reference)", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", *SCORE, *out, "--name",
                                     "gated-ref", "--reference", "scores.h5:fashion", "--fdr", "0.1"]),
        ("score glow", ["score", "demo-mnist", "--model", "glow-fp32.pt", *SCORE, *out, "--name", "glow"]),
        ("score glow --net glow", ["score", "demo-mnist", "--model", "glownet-fp32.pt", *SCORE, *out,
                                   "--name", "glownet"]),
        ("score resnet-v1", ["score", "demo-mnist", "--model", "v1.pt", *SCORE, *out, "--name", "v1"]),
        ("score negative", ["score", "demo-mnist", "--model", "negative.pt", *SCORE, *out, "--name", "negative"]),
        ("score resumed", ["score", "demo-mnist", "--model", "resumed.pt", *SCORE, *out, "--name", "resumed"]),
        ("score tabular", ["score", i["vec-ood.npz"], "--model", "tabular-fp32.pt", *SCORE, *out, "--name", "tab"]),
        ("score gaussian", ["score", i["vec-ood.npz"], "--model", "gaussian.pt", *SCORE, *out, "--name", "gauss"]),
        ("score detector on images", ["score", i["ood.npz"], "--model", "det-fp32.pt", *SCORE, *out,
                                      "--name", "det-img", "--batch-size", "7"]),
        ("score detector on features", ["score", "features-fp32.h5", "--model", "det-fp32.pt", *SCORE, *out,
                                        "--name", "det-feat"]),
        ("score detector gated", ["score", i["ood.npz"], "--model", "det-fp32.pt", *SCORE, *out,
                                  "--name", "det-gated", "--max-ood-fraction", "1.0"]),
    ]
    if bf16:
        run += [
            ("score bf16", ["score", "demo-mnist", "--model", "realnvp-fp32.pt", "--precision", "bf16", *SCORE, *out,
                            "--name", "mnist-bf16"]),
            ("score auto of a bf16 model", ["score", "demo-mnist", "--model", "realnvp-bf16.pt", "--precision", "auto",
                                            *SCORE, *out, "--name", "bf16-auto"]),
            ("score glow bf16", ["score", "demo-mnist", "--model", "glownet-bf16.pt", "--precision", "bf16", *SCORE,
                                 *out, "--name", "glownet-bf16"]),
            ("score tabular bf16", ["score", i["vec-ood.npz"], "--model", "tabular-bf16.pt", "--precision", "bf16",
                                    *SCORE, *out, "--name", "tab-bf16"]),
            ("score detector bf16 on images", ["score", i["ood.npz"], "--model", "det-bf16.pt", "--precision",
                                               "bf16", *SCORE, *out, "--name", "det-img-bf16"]),
            ("score detector on bf16 features", ["score", "features-bf16.h5", "--model", "det-bf16.pt", *SCORE, *out,
                                                 "--name", "det-feat-bf16"]),
        ]
    return run


# The intended differences: run on both sides, shown, never compared. Arguments as for ``commands``; the
# prefix ``NO-BF16`` runs the command as on a machine whose CPU cannot run bfloat16 (oneDNN reported absent).
CHANGED = "changes"
CHANGES = [  # run in the side's folder CHANGED, so that what they write is not compared
    ("bf16 on a CPU without it: score", ["NO-BF16", "score", "demo-mnist", "--model", "../realnvp-fp32.pt",
                                         "--precision", "bf16", "--limit", "5"]),
    ("bf16 on a CPU without it: embed", ["NO-BF16", "embed", "{in.npz}", "--backbone", "test_resnet", "--weights",
                                         "{w.pth}", "--image-size", "32", "--precision", "bf16", "--out", "x.h5"]),
    ("bf16 on a CPU without it: train", ["NO-BF16", "train", "--data", "demo-fashionmnist", "--precision", "bf16",
                                         "--out", "x.pt"]),
    ("embed --precision auto", ["embed", "{in.npz}", "--backbone", "test_resnet", "--weights", "{w.pth}",
                                "--image-size", "32", "--precision", "auto", "--out", "features-auto.h5", "--quiet"]),
]
NO_BF16 = ("import sys, runpy, torch; torch.backends.mkldnn.is_available = lambda: False; "
           "sys.argv = ['oodflow', *sys.argv[1:]]; runpy.run_module('ood_flow', run_name='__main__')")


def make_inputs(folder: Path) -> None:
    """The files every side reads: a tiny backbone's random weights, images like and unlike those it was trained
    on, and vectors."""
    import numpy as np
    import timm
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict(), folder / "w.pth")
    rng = np.random.default_rng(0)
    for name, n in (("in.npz", 80), ("held.npz", 40)):
        blobs = (rng.random((n, 20, 20)) < 0.2) * 200 + rng.integers(0, 30, (n, 20, 20))
        np.savez(folder / name, x=blobs.astype(np.uint8), y=np.arange(n) % 4)
    stripes = np.tile((np.arange(20) % 4 < 2)[None, :, None] * 255, (30, 1, 20))
    np.savez(folder / "ood.npz", x=stripes.astype(np.uint8))
    mix = rng.normal(size=(6, 6)).astype(np.float32)
    np.savez(folder / "vec.npz", x=rng.normal(size=(400, 6)).astype(np.float32) @ mix)
    np.savez(folder / "vec-ood.npz", x=rng.normal(1.0, 2.0, size=(100, 6)).astype(np.float32))


def run_side(code: Path, folder: Path, runs: list[tuple[str, list[str]]], inputs: Path) -> dict[str, dict]:
    """Run every command with the package at ``code`` in ``folder``; ``{name: {code, stdout, stderr, seconds}}``."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "COLUMNS": "200"}
    results = {}
    for name, args in runs:
        for p in inputs.iterdir():
            args = [a.replace("{" + p.name + "}", str(p)) for a in args]
        head = [sys.executable, "-c", NO_BF16] if args[0] == "NO-BF16" else [sys.executable, "-m", "ood_flow"]
        cwd = folder / CHANGED if name in dict(CHANGES) else folder
        cwd.mkdir(exist_ok=True)
        start = time.perf_counter()
        done = subprocess.run(head + [a for a in args if a != "NO-BF16"], cwd=cwd, env=env, capture_output=True,
                              text=True)
        results[name] = {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr.strip(),
                         "seconds": time.perf_counter() - start}
        print(f"  {done.returncode:>3}  {results[name]['seconds']:6.1f}s  {name}", file=sys.stderr, flush=True)
    return results


def normalised(value, places: list[tuple[str, str]]):
    """``value`` with the side's folders written by name (``places``: (path, name)) and ignored keys dropped,
    recursively."""
    import numpy as np
    import torch

    if isinstance(value, dict):
        return {k: normalised(v, places) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, (list, tuple)):
        return [normalised(v, places) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        for path, name in places:
            value = value.replace(path, name)
        return value
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), value.detach().cpu().contiguous().view(-1)
                .view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return ("array", [normalised(v, places) for v in value.tolist()])
        return ("array", str(value.dtype), value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, np.generic):
        return normalised(value.item(), places)
    return value


def read_output(path: Path, places: list[tuple[str, str]]):
    """What a file holds, as comparable plain values."""
    if path.suffix == ".pt":
        import torch

        return normalised(torch.load(path, weights_only=True, map_location="cpu"), places)
    if path.suffix == ".h5":
        import h5py

        items = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: items.update({name: {
                "attrs": normalised(dict(obj.attrs), places),
                "value": normalised(obj[()], places) if isinstance(obj, h5py.Dataset) else "group"}}))
            items["/"] = {"attrs": normalised(dict(f.attrs), places)}
        return items
    return path.read_bytes()


def differences(a, b, where: str = "") -> list[str]:
    """Where two normalised values differ (the first few places)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only on one side" for k in sorted(set(a) ^ set(b), key=str)]
        for k in sorted(set(a) & set(b), key=str):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: differs"]


def compare(sides: dict[str, tuple[Path, Path]], ran: dict[str, tuple[dict, dict]]) -> tuple[list[str], int]:
    """Every difference between the two sides' files and commands (``sides``: name -> (its folder, its code));
    and the number of files compared."""
    places = {k: [(str(folder.resolve()), "<DIR>"), (str(folder), "<DIR>"), (str(code.resolve()), "<CODE>")]
              for k, (folder, code) in sides.items()}
    before, after = sides["before"][0], sides["after"][0]
    problems = []
    for name, (b, a) in ran.items():
        if b["code"] != a["code"]:
            problems.append(f"{name}: exit {b['code']} before, {a['code']} after ({a['stderr'][-300:]})")
        elif b["code"] != 0:
            problems.append(f"{name}: failed on both sides (exit {b['code']}): {b['stderr'][-300:]}")
        elif b["stdout"].startswith(("{", "[")):
            diff = differences(normalised(json.loads(b["stdout"]), places["before"]),
                               normalised(json.loads(a["stdout"]), places["after"]))
            problems += [f"{name}: --json {d}" for d in diff[:5]]
    names = sorted({p.name for side in (before, after) for p in side.iterdir() if p.name != CHANGED})
    for file in names:
        if not (before / file).exists() or not (after / file).exists():
            problems.append(f"{file}: written on one side only")
            continue
        diff = differences(read_output(before / file, places["before"]), read_output(after / file, places["after"]))
        problems += [f"{file}{d}" for d in diff[:5]] + ([f"{file}: ... {len(diff) - 5} more"] if len(diff) > 5 else [])
    return problems, len(names)


def worktree(rev: str, where: Path) -> Path:
    """A checkout of ``rev`` at ``where`` (made with ``git worktree add --detach`` unless it is there)."""
    if not where.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                       capture_output=True)
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the reference code (e.g. main)")
    parser.add_argument("--before-tree", type=Path, help="its checkout (default: a worktree in /tmp)")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout of the code to check (default: this one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/oodflow-identity"), help="folder for the runs")
    parser.add_argument("--compare-only", action="store_true", help="compare the runs already in --work")
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True,
                         capture_output=True, text=True).stdout.strip()
    code = {"before": worktree(args.before, args.before_tree or Path(f"/tmp/oodflow-before-{rev}")),
            "after": args.after}
    inputs, bf16 = args.work / "inputs", bf16_here()
    runs = commands(inputs, bf16) + CHANGES
    sides = {}
    if args.compare_only:
        sides = {side: json.loads((args.work / f"{side}.json").read_text()) for side in code}
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        make_inputs(inputs)
        for side in code:
            print(f"{side}: {code[side]}", file=sys.stderr)
            sides[side] = run_side(code[side], args.work / side, runs, inputs)
            (args.work / f"{side}.json").write_text(json.dumps(sides[side]))
    same = {n: (sides["before"][n], sides["after"][n]) for n, _ in runs if n not in dict(CHANGES)}
    problems, files = compare({side: (args.work / side, code[side]) for side in code}, same)
    report(rev, args.after, runs, sides, problems, files, bf16)
    return 1 if problems else 0


def report(rev: str, after: Path, runs, sides: dict, problems: list[str], files: int, bf16: bool) -> None:
    after_rev = subprocess.run(["git", "-C", str(after), "rev-parse", "--short", "HEAD"], capture_output=True,
                               text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(after), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    print(f"behaviour identity: {rev} (before) vs {after_rev}{' + uncommitted changes' if dirty else ''} (after); "
          f"bf16 {'run' if bf16 else 'not run (this CPU has none)'}")
    for name, args in runs:
        if name in dict(CHANGES):
            continue
        mark = "differs" if any(p.startswith(name + ":") for p in problems) else "identical"
        print(f"  {mark:9}  oodflow {' '.join(a if '/' not in a else Path(a).name for a in args)}")
    print("intended differences (not compared):")
    for name, _ in CHANGES:
        b, a = sides["before"][name], sides["after"][name]
        print(f"  {name}: before exit {b['code']} {_last_line(b['stderr'])!r}; after exit {a['code']} "
              f"{_last_line(a['stderr'])!r}")
    verdict = "all identical" if not problems else f"{len(problems)} difference(s)"
    print(f"{len(runs) - len(CHANGES)} commands, {files} output files compared: {verdict}")
    for p in problems:
        print(f"  {p}")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


if __name__ == "__main__":
    sys.exit(main())
