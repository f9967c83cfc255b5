#!/usr/bin/env bash
# bf16's effect on the detector's AUROC (docs/detector.md): the FashionMNIST, MNIST and notMNIST test sets
# embedded again under bf16 autocast, scored by the fp32-trained FashionMNIST detectors of table.sh, and evaluated;
# plus how far the bf16 features are from the fp32 ones. Run in table.sh's output folder (~5 minutes on 1 core).
#
# Usage: cd OUT_DIR && OODFLOW_DATA_DIR=../shared/data bash benchmarks/detector/bf16_effect.sh
set -euo pipefail
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root}"
B=tf_efficientnet_lite0
for s in fashionmnist mnist notmnist; do
  f=${s/fashionmnist/fmnist}_test_bf16.h5
  [ -f $f ] || oodflow embed $s:test --backbone $B --limit 1000 --precision bf16 --out $f --quiet
done
for m in tabular gaussian; do
  for s in fmnist mnist notmnist; do
    oodflow score ${s}_test_bf16.h5 --model fm-$m.pt --out fm-$m-bf16-scores.h5 --name ${s}_test --overwrite --quiet
  done
  oodflow evaluate fm-$m-bf16-scores.h5 --in fmnist_test --ood mnist_test --ood notmnist_test --ci 0.95
done
python - <<'PY'
import h5py
import numpy as np

for s in ("fmnist", "mnist", "notmnist"):
    with h5py.File(f"{s}_test.h5") as f32, h5py.File(f"{s}_test_bf16.h5") as b16:
        a, b = f32["features"][()], b16["features"][()]
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    print(f"{s}: relative L2 distance of each image's bf16 features from its fp32 ones: median {np.median(rel):.4f}, "
          f"max {rel.max():.4f}")
PY
