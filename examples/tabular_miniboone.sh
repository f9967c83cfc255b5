#!/usr/bin/env bash
# A likelihood sanity check of the tabular RealNVP (paper, Appendix K) on real MiniBooNE data.
#
# The shared data root holds only MAF's validation and test splits (3,284 and 3,648 rows, 43 features,
# already standardised, no class labels), so there is no OOD set here: the flow is trained on the
# validation split and scored on the test split, and the mean log-likelihood per event is compared
# with the 43-dimensional standard normal (about -61.0 nats), which standardization alone would give.
# With MAF's data.npy under ROOT/miniboone/ the same commands train on the full training split.
#
# Usage:
#   OODFLOW_DATA_DIR=/path/to/data examples/tabular_miniboone.sh [OUT_DIR]
# Knobs (environment): TRAIN_SPLIT (val), EPOCHS (20: where the held-out bits/dim bottom out in a 50-epoch run), SEED (0).
set -euo pipefail

OUT=${1:-oodflow-miniboone}
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root (MINIBOONE/ or miniboone/)}"
export OODFLOW_DATA_DIR
TRAIN_SPLIT=${TRAIN_SPLIT:-val}
EPOCHS=${EPOCHS:-20}
SEED=${SEED:-0}
mkdir -p "$OUT"

run() { echo "\$ oodflow $*" >&2; oodflow "$@"; }

run train --data "miniboone:$TRAIN_SPLIT" --model tabular --out "$OUT/miniboone.pt" --overwrite \
  --epochs "$EPOCHS" --seed "$SEED"
for split in "$TRAIN_SPLIT" test; do
  run score "miniboone:$split" --model "$OUT/miniboone.pt" --out "$OUT/scores.h5" --overwrite --quiet --json
done
