"""The fused scoring path against the plain modules, on every image model and st-network, in float32.

Usage: ``python benchmarks/check_fused.py`` — prints one line per model and exits 1 if the fused
path's log-likelihoods are further from a float64 reference than float rounding allows (twice the
plain float32 path's own error, plus 1e-6 relative), differ between ``no_grad`` and
``inference_mode``, or the fused kernel is missing. Weights and batch-norm statistics are random,
so no layer is the identity.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ood_flow.flows import create_flow, fused  # noqa: E402
from ood_flow.flows.layers import ActNorm  # noqa: E402

SMALL = {"channels": 16, "blocks": 2}
CASES = [
    ("realnvp", (1, 28, 28), {}),
    ("realnvp", (1, 28, 28), {"batchnorm": False, **SMALL}),
    ("realnvp", (3, 32, 32), {"mask": "cycle", "bottleneck": 8, **SMALL}),
    ("realnvp", (1, 28, 28), {"mask": "horizontal", "couplings": 3, **SMALL}),
    ("glow", (1, 28, 28), {"net": "glow", "batchnorm": False, "channels": 64, "couplings": 2}),
    ("glow", (1, 28, 28), {"net": "glow", "batchnorm": True, "channels": 32, "couplings": 2}),
    ("glow", (3, 32, 32), {"net": "glow", "channels": 32, "couplings": 2, "bottleneck": 6}),
    ("glow", (1, 28, 28), {"channels": 32, "couplings": 2}),  # highway: runs its own modules
]


@torch.no_grad()
def randomize(flow: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in flow.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.01)
    for m in flow.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    return flow.eval()


def check(name: str, shape: tuple[int, ...], opts: dict) -> tuple[float, float, bool]:
    """Largest relative error of the fused and the plain float32 paths against float64, and the verdict."""
    torch.manual_seed(0)
    flow = randomize(create_flow(name, shape, **opts))
    x = torch.rand(8, *shape)
    with torch.inference_mode():
        fast = flow.log_prob(x)
        with fused.disabled():
            plain = flow.log_prob(x)
        ref = copy.deepcopy(flow).double().log_prob(x.double())
    with torch.no_grad():
        fast_no_grad = flow.log_prob(x)
    err_fast = ((fast.double() - ref).abs() / ref.abs()).max().item()
    err_plain = ((plain.double() - ref).abs() / ref.abs()).max().item()
    ok = err_fast <= 2 * err_plain + 1e-6 and torch.equal(fast, fast_no_grad) and bool(torch.isfinite(fast).all())
    return err_fast, err_plain, ok


def main() -> int:
    failed = 0
    for name, shape, opts in CASES:
        err_fast, err_plain, ok = check(name, shape, opts)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name} {shape} {opts}: relative error vs float64 "
              f"fused {err_fast:.1e}, plain {err_plain:.1e}")
    if fused._kernel() is None:
        print("FAIL: the fused kernel is not available in this torch build (the plain path was compared with itself)")
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
