#!/usr/bin/env bash
# The models and per-sample scores the gate is measured on (benchmarks/gate/measure.py, docs/gate.md):
#   (a) a pixel RealNVP at the cpu preset, (b) the tf_efficientnet_lite0 Gaussian detector, (c) the Lite0 flow
#   detector (Appendix K.1 defaults), all trained on the first 10,000 FashionMNIST training images; each writes its
#   own calibration split (5 %, 500 images) into its model file as train does by default.
# Then the three full test sets (FashionMNIST, MNIST, notMNIST: 10,000 images each) are scored with each model.
# The test sets play no part in training, in any choice, or in the model files' calibration; measure.py draws its
# calibration sets and batches from them. About 40 minutes on 2 CPU cores (most of it embedding 40,000 images).
#
# Usage: OODFLOW_DATA_DIR=../shared/data benchmarks/gate/prepare.sh [OUT_DIR]   (default: oodflow-gate)
# Steps whose output exists are skipped, so an interrupted run continues.
set -euo pipefail
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root}"
export OODFLOW_DATA_DIR
OUT=${1:-oodflow-gate}
mkdir -p "$OUT" && cd "$OUT"
B=tf_efficientnet_lite0
SETS=(fashionmnist mnist notmnist)

# (a) pixels: the cpu preset (early stopping on the validation split), at most 1,500 steps
[ -f pixel.pt ] || oodflow train --data fashionmnist:train --limit 10000 --preset cpu --max-steps 1500 \
  --out pixel.pt --json > pixel.train.json
for s in "${SETS[@]}"; do
  oodflow score "$s:test" --model pixel.pt --out pixel-scores.h5 --name "$s" --overwrite --quiet
done

# (b), (c) detectors on Lite0 features (fp32, 224 px), embedded once
[ -f fm_train.h5 ] || oodflow embed fashionmnist:train --limit 10000 --backbone $B --out fm_train.h5 --quiet
for s in "${SETS[@]}"; do
  [ -f "$s.h5" ] || oodflow embed "$s:test" --backbone $B --out "$s.h5" --quiet
done
for m in gaussian tabular; do
  [ -f "det-$m.pt" ] || oodflow train --data fm_train.h5 --features $B --model $m --out "det-$m.pt" --json \
    > "det-$m.train.json"
  for s in "${SETS[@]}"; do
    oodflow score "$s.h5" --model "det-$m.pt" --out "det-$m-scores.h5" --name "$s" --overwrite --quiet
  done
done
echo "done: run python benchmarks/gate/measure.py $OUT --save"
