#!/usr/bin/env bash
# Two-GPU DDP smoke test of oodflow (NCCL): train a few steps with --sync-bn under torchrun, score the
# model sharded over both GPUs and on one, and check the rows agree. Skipped (exit 0, says why) where
# fewer than two CUDA devices exist. Run from the repository root with the package installed:
#     bash benchmarks/ddp_gpu_smoke.sh
set -euo pipefail
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -lt 2 ]; then
    echo "ddp smoke test skipped: $gpus CUDA device(s), need 2"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run="python -m torch.distributed.run --standalone --nproc_per_node 2 -m ood_flow"
$run train --data demo-fashionmnist --out "$work/m.pt" --device cuda --sync-bn --channels 16 --blocks 1 \
    --batch-size 64 --max-steps 20 --lr 1e-3 --quiet --json > "$work/train.json"
$run score demo-mnist --model "$work/m.pt" --device cuda --out "$work/two.h5" --quiet
python -m ood_flow score demo-mnist --model "$work/m.pt" --device cuda --out "$work/one.h5" --quiet
python - "$work" <<'PY'
import sys, h5py, numpy as np
w = sys.argv[1]
with h5py.File(f"{w}/one.h5") as a, h5py.File(f"{w}/two.h5") as b:
    g = list(a)[0]
    one, two = a[g]["log_likelihood"][()], b[g]["log_likelihood"][()]
    assert [*a[g]["id"][()]] == [*b[g]["id"][()]], "rows out of order"
    print(f"ddp smoke test: 2 GPUs trained 20 steps; sharded scores of {len(one)} samples, "
          f"max |difference| to one GPU {np.abs(one - two).max():.3g} nats")
PY
