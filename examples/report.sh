#!/usr/bin/env bash
# One HTML page for an evaluation: a small RealNVP trained on FashionMNIST, scored on the FashionMNIST,
# MNIST and notMNIST test sets, MNIST also through a gate set on FashionMNIST's test scores, then
# `oodflow report` and a screenshot of the page in headless Chromium (docs/figures/report.png).
#
# Usage:
#   OODFLOW_DATA_DIR=/path/to/data examples/report.sh [OUT_DIR]
# Knobs (environment): N_TRAIN (5000), STEPS (300), N_GATED (1000), SCREENSHOT (OUT_DIR/report.png).
# Steps whose output exists are skipped, so an interrupted run continues where it stopped.
set -euo pipefail

OUT=${1:-oodflow-report}
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root (FashionMNIST/, MNIST/, notMNIST/)}"
export OODFLOW_DATA_DIR
N_TRAIN=${N_TRAIN:-5000}
STEPS=${STEPS:-300}
N_GATED=${N_GATED:-1000}
SCREENSHOT=${SCREENSHOT:-$OUT/report.png}
mkdir -p "$OUT"

# shellcheck source=examples/once.sh
source "$(dirname "$0")/once.sh"

once "$OUT/fmnist.pt" train --data fashionmnist --limit "$N_TRAIN" --out "$OUT/fmnist.pt" \
  --channels 16 --blocks 1 --lr 1e-3 --batch-size 64 --max-steps "$STEPS" --quiet
if [[ ! -e $OUT/scores.done ]]; then  # --overwrite: a rerun after an interruption replaces the groups made
  for source in fashionmnist:test mnist:test notmnist:test; do
    echo "\$ oodflow score $source --model $OUT/fmnist.pt --out $OUT/scores.h5 --overwrite --quiet" >&2
    oodflow score "$source" --model "$OUT/fmnist.pt" --out "$OUT/scores.h5" --overwrite --quiet
  done
  # The gate, calibrated on FashionMNIST test: fails (exit 3) on evidence that over 5% of MNIST is OOD.
  echo "\$ oodflow score mnist:test --limit $N_GATED --name mnist-gated --model $OUT/fmnist.pt --out $OUT/scores.h5" \
    "--reference $OUT/scores.h5:fashionmnist-test --max-ood-fraction 0.05 --overwrite --quiet" >&2
  oodflow score mnist:test --limit "$N_GATED" --name mnist-gated --model "$OUT/fmnist.pt" --out "$OUT/scores.h5" \
    --reference "$OUT/scores.h5:fashionmnist-test" --max-ood-fraction 0.05 --overwrite --quiet \
    || echo "# the gate failed (exit $?): evidence that more than 5% of MNIST is OOD" >&2
  touch "$OUT/scores.done"
fi
once "$OUT/report.html" report "$OUT/scores.h5" --in fashionmnist-test --ood mnist-test --ood notmnist-test \
  --out "$OUT/report.html"
# The same numbers as a table (the page's metrics equal `evaluate --ci 0.95 --json`):
if [[ ! -e $OUT/evaluate.txt ]]; then
  echo "\$ oodflow evaluate $OUT/scores.h5 --in fashionmnist-test --ood mnist-test --ood notmnist-test --ci 0.95" >&2
  oodflow evaluate "$OUT/scores.h5" --in fashionmnist-test --ood mnist-test --ood notmnist-test --ci 0.95 \
    | tee "$OUT/evaluate.txt"
fi
python "$(dirname "$0")/screenshot.py" "$OUT/report.html" "$SCREENSHOT"
