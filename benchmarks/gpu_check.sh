#!/usr/bin/env bash
# One GPU, under 8 minutes: CUDA scores equal CPU scores (fp32, <= 1e-4 bits/dim), bf16 within 0.01,
# training and scoring throughput of the paper's RealNVP and Glow in fp32 and bf16, a 2-GPU DDP smoke
# test where there are two GPUs and oodflow's distributed training exists. Writes a small JSON.
#
#   benchmarks/gpu_check.sh [OUT.json]     (default: benchmarks/results/gpu_check.json)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/results/gpu_check.json}"
exec timeout 480 python "$here/speed/gpu_check.py" --out "$out"
