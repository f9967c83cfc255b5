#!/usr/bin/env bash
# Negative training (Kirichenko et al. 2020, Appendix B, objective (7)): a RealNVP trained to give
# FashionMNIST high likelihood and MNIST low likelihood, compared with the same flow trained by plain
# maximum likelihood (same data, size, steps and seed). Both are scored on FashionMNIST, MNIST and
# notMNIST test images: MNIST is pushed far below, and notMNIST shows whether that generalises.
#
#   loss = 0.5 * (mean NLL(FashionMNIST batch) + mean over MNIST samples with log p > C of log p)
#
# C = -30000 nats is the paper's threshold for 28x28 images (about -38 nats per pixel).
#
# Usage:
#   OODFLOW_DATA_DIR=/path/to/data examples/negative_training.sh [OUT_DIR]
# Knobs (environment): N_TRAIN (10000; also the number of MNIST negatives), N_TEST (2000),
#   PIXEL_STEPS (1000), PIXEL_ARGS, THRESHOLD (-30000), SEED (0). The plain flow is the one
#   examples/embedding_vs_pixels.sh trains: give both scripts the same OUT_DIR to train it once.
set -euo pipefail

OUT=${1:-oodflow-negative-training}
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root (FashionMNIST/, MNIST/, notMNIST/)}"
export OODFLOW_DATA_DIR
N_TRAIN=${N_TRAIN:-10000}
N_TEST=${N_TEST:-2000}
PIXEL_STEPS=${PIXEL_STEPS:-1000}
PIXEL_ARGS=${PIXEL_ARGS:---channels 16 --blocks 1 --lr 1e-3 --batch-size 64}
THRESHOLD=${THRESHOLD:--30000}
SEED=${SEED:-0}
mkdir -p "$OUT"

# shellcheck source=examples/once.sh
source "$(dirname "$0")/once.sh"

# shellcheck disable=SC2086  # PIXEL_ARGS is a list of options
once "$OUT/pixel-flow.pt" train --data fashionmnist:train --limit "$N_TRAIN" --model realnvp \
  --out "$OUT/pixel-flow.pt" $PIXEL_ARGS --epochs 1000 --max-steps "$PIXEL_STEPS" --seed "$SEED"
# shellcheck disable=SC2086
once "$OUT/negative-flow.pt" train --data fashionmnist:train --limit "$N_TRAIN" --model realnvp \
  --negative-data mnist:train --negative-threshold "$THRESHOLD" \
  --out "$OUT/negative-flow.pt" $PIXEL_ARGS --epochs 1000 --max-steps "$PIXEL_STEPS" --seed "$SEED"

for flow in pixel negative; do
  for src in fashionmnist mnist notmnist; do
    echo "\$ oodflow score $src:test --limit $N_TEST --model $OUT/$flow-flow.pt --out $OUT/$flow-scores.h5 --name $src-test --overwrite --quiet --json" >&2
    oodflow score "$src:test" --limit "$N_TEST" --model "$OUT/$flow-flow.pt" --out "$OUT/$flow-scores.h5" \
      --name "$src-test" --overwrite --quiet --json  # mean_log_likelihood: nats per image
  done
  echo "\$ oodflow evaluate $OUT/$flow-scores.h5 --in fashionmnist-test --ood mnist-test --ood notmnist-test" >&2
  oodflow evaluate "$OUT/$flow-scores.h5" --in fashionmnist-test --ood mnist-test --ood notmnist-test
done
