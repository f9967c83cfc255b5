#!/usr/bin/env bash
# An after-the-fact bound, not a choice: every feature-flow variant that select_flow.sh trained (and the default),
# scored on the test sets, its AUROC beside the Gaussian's. select_flow.sh chooses on validation bits/dim alone;
# this asks whether *any* of the variants, even one picked by looking at the OOD sets (which issue 15 forbids),
# would have reached the Gaussian. Nothing is retrained. Run in table.sh's output folder after select_flow.sh.
#
# Usage: cd OUT_DIR && bash benchmarks/detector/hindsight.sh TAG IN_SET OOD_SET...
#   e.g. hindsight.sh fm fmnist_test mnist_test notmnist_test
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
tag=$1; shift
for v in tabular tabular-h128 tabular-h256 tabular-lr3e-4 tabular-n0.03 tabular-n0.1 tabular-n0.3; do
  [ -f "$tag-$v.pt" ] || { echo "$tag-$v.pt missing: run select_flow.sh first" >&2; exit 1; }
  [ -f "$tag-$v-scores.h5" ] || for s in "$@"; do
    oodflow score "$s.h5" --model "$tag-$v.pt" --out "$tag-$v-scores.h5" --name "$s" --overwrite --quiet
  done
done
python "$HERE/hindsight_table.py" "$tag" "$@"
