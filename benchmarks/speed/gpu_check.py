"""The GPU check behind ``benchmarks/gpu_check.sh``: one GPU, under 8 minutes, a small JSON.

1. CUDA scores equal CPU scores: a small RealNVP trained briefly on the CPU scores the packaged
   FashionMNIST sample on both; fp32 must agree within 1e-4 bits/dim (max), bf16 within 0.01 (mean).
2. ``train --device cuda --precision bf16`` end to end (a few steps, a finite validation bits/dim).
3. Throughput of the paper's RealNVP and Glow (``create_flow`` defaults, 1x28x28) in fp32 and bf16:
   training images/s at batch 64 and scoring images/s at batch 256, medians of timed repeats.
4. A 2-GPU DDP smoke test, skipped (and said so) with one GPU or before oodflow's distributed
   training (issue 16) exists: HOOK below.

Exit status 1 when a check fails, 2 when there is no CUDA device; the JSON is written either way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from portable import portable  # noqa: E402

from ood_flow import score_source, train_flow  # noqa: E402
from ood_flow.data import SourceOptions  # noqa: E402
from ood_flow.flows import create_flow  # noqa: E402
from ood_flow.runtime import Runtime  # noqa: E402
from ood_flow.train import TrainConfig  # noqa: E402

SMALL = {"channels": 16, "blocks": 1, "scales": 2}
LIMIT = SourceOptions(limit=500)


def equal_scores(work: Path) -> dict:
    model = work / "m.pt"
    train_flow("demo-fashionmnist", TrainConfig(max_steps=30, batch_size=32, lr=1e-3), out=model,
               model_options=SMALL, device="cpu", options=SourceOptions(limit=1000))
    bpd = {(dev, prec): score_source("demo-fashionmnist", model, device=dev, precision=prec,
                                     options=LIMIT).arrays["bits_per_dim"]
           for dev, prec in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16"))}
    fp32 = float(np.abs(bpd["cuda", "fp32"] - bpd["cpu", "fp32"]).max())
    bf16 = float(np.abs(bpd["cuda", "bf16"] - bpd["cpu", "fp32"]).mean())
    return {"max_abs_diff_bits_per_dim_fp32": fp32, "mean_abs_diff_bits_per_dim_bf16": bf16,
            "ok": fp32 <= 1e-4 and bf16 <= 0.01}


def cuda_training(work: Path) -> dict:
    result = train_flow("demo-fashionmnist", TrainConfig(max_steps=20, batch_size=32, lr=1e-3, precision="bf16"),
                        out=work / "cuda.pt", model_options=SMALL, device="cuda", options=SourceOptions(limit=1000))
    val = result.history[-1]["val_bpd"]
    return {"steps": result.steps, "val_bits_per_dim": val, "ok": result.steps == 20 and bool(np.isfinite(val))}


def _median_rate(fn, images: int, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return images / statistics.median(times)


def throughput(name: str, precision: str) -> dict:
    torch.manual_seed(0)
    rt = Runtime(device="cuda", st=precision)
    flow = rt.prepare(create_flow(name, (1, 28, 28)))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-5)
    x, xs = torch.rand(64, 1, 28, 28, device="cuda"), torch.rand(256, 1, 28, 28, device="cuda")

    def step():
        flow.train()
        with rt.st_networks():
            loss = -flow.log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def score():
        flow.eval()
        with torch.inference_mode(), rt.st_networks():
            return flow.log_prob(xs)

    out = {"params": sum(p.numel() for p in flow.parameters()), "train_images_per_s": _median_rate(step, 64),
           "score_images_per_s": _median_rate(score, 256), "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20}
    torch.cuda.reset_peak_memory_stats()
    return out


def ddp_smoke(work: Path) -> dict:
    if torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s); the DDP smoke test needs 2", "ok": True}
    try:  # HOOK (issue 16): oodflow's torchrun/DDP training lives in ood_flow.distributed once it lands
        import ood_flow.distributed  # noqa: F401
    except ImportError:
        return {"skipped": "ood_flow.distributed (issue 16) has not landed; nothing to smoke-test", "ok": True}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "ood_flow", "train", "--data",
           "demo-fashionmnist", "--limit", "1000", "--max-steps", "5", "--channels", "16", "--blocks", "1",
           "--device", "cuda", "--out", str(work / "ddp.pt"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return {"command": portable(" ".join(cmd)), "returncode": proc.returncode,
            "stderr_tail": portable(proc.stderr[-2000:]), "ok": proc.returncode == 0 and (work / "ddp.pt").exists()}


def checks(work: Path) -> dict:
    out: dict = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__}
    steps = {"cuda_equals_cpu": lambda: equal_scores(work), "cuda_training_bf16": lambda: cuda_training(work),
             **{f"throughput_{n}_{p}": (lambda n=n, p=p: throughput(n, p))
                for n in ("realnvp", "glow") for p in ("fp32", "bf16")},
             "ddp_smoke": lambda: ddp_smoke(work)}
    for name, fn in steps.items():
        t0 = time.time()
        try:
            out[name] = fn()
        except Exception:  # noqa: BLE001 - one failed check must not hide the others
            out[name] = {"ok": False, "error": traceback.format_exc(limit=3)}
        out[name]["seconds"] = round(time.time() - t0, 1)
        print(f"{name}: {json.dumps(out[name])[:300]}", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        args.out.write_text(json.dumps({"skipped": "no CUDA device"}) + "\n")
        print("gpu_check: no CUDA device here", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = checks(Path(tmp))
    out["ok"] = all(v.get("ok", True) for v in out.values() if isinstance(v, dict))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
