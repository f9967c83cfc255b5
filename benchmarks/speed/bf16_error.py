"""How far bf16 scoring moves a trained model's scores from fp32, end to end through ``score_source``.

For each model file, scores ``--source`` (default the first 2,000 MNIST test images) with ``--precision
fp32`` and ``bf16`` and prints the mean and largest |bits/dim(bf16) - bits/dim(fp32)|. The bound the
docs state for bf16 scoring is a mean of at most 0.01 (docs/speed.md, "Precision").

Usage::

    OODFLOW_DATA_DIR=../shared/data python benchmarks/speed/bf16_error.py m1.pt m2.pt [--source mnist:test]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ood_flow import score_source
from ood_flow.data import SourceOptions
from ood_flow.errors import OodflowError, UsageError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--source", default="mnist:test")
    ap.add_argument("--limit", type=int, default=2000)
    args = ap.parse_args(argv)
    options = SourceOptions(limit=args.limit)
    for model in args.models:
        try:
            bpd = {p: score_source(args.source, model, options=options, precision=p).arrays["bits_per_dim"]
                   for p in ("fp32", "bf16")}
        except OodflowError as exc:  # a missing or wrong model, data, or no bf16 here: one line, as oodflow says it
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, UsageError) else 1
        diff = np.abs(bpd["bf16"] - bpd["fp32"])
        print(f"{model}: {args.source} ({len(diff)} samples): mean |bf16 - fp32| {diff.mean():.4f} bits/dim, "
              f"largest {diff.max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
