#!/usr/bin/env bash
# A regularised feature flow for docs/detector.md, chosen on in-distribution validation bits/dim only:
# the Appendix K.1 flow (table.sh's `tabular`) against variants that fight its over-fitting of a few thousand
# vectors: narrower st-networks (256, 128 hidden units), a lower learning rate (3e-4; early stopping still
# ends it) and Gaussian noise on the training vectors (`--noise`, 0.03, 0.1 and 0.3 of each column's std).
# (AdamW's decoupled weight decay shrinks weights by lr * wd = 1e-6 per step: no lever at a few hundred steps.)
# Each is trained on the same features with every other setting a default; only the one with the lowest best
# validation bits/dim is scored on the test sets, then evaluated against the Gaussian with a paired bootstrap.
# The OOD sets play no part in the choice. Run in table.sh's output folder (it reuses models already there).
#
# Usage: cd OUT_DIR && bash benchmarks/detector/select_flow.sh TAG TRAIN_FEATURES IN_SET OOD_SET...
#   e.g. select_flow.sh fm fmnist_train10k fmnist_test mnist_test notmnist_test
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
tag=$1 train=$2; shift 2
B=tf_efficientnet_lite0
declare -A VARIANT=([h256]="--hidden 256" [h128]="--hidden 128" [lr3e-4]="--lr 3e-4" [n0.03]="--noise 0.03"
                    [n0.1]="--noise 0.1" [n0.3]="--noise 0.3")
for v in "${!VARIANT[@]}"; do
  # shellcheck disable=SC2086
  [ -f "$tag-tabular-$v.pt" ] || oodflow train --data "$train.h5" --features $B --model tabular ${VARIANT[$v]} \
    --out "$tag-tabular-$v.pt" --json --quiet > "$tag-tabular-$v.train.json"
done
best=$(python - "$tag" "$HERE" "${!VARIANT[@]}" <<'PY'
import sys
tag, here, variants = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, here)
from hindsight_table import best_val
val = {name: best_val(tag, name) for name in ["tabular"] + [f"tabular-{v}" for v in sorted(variants)]}
for name, bpd in val.items():
    print(f"{name}: best validation bits/dim {bpd:.4f}", file=sys.stderr)
print(min(val, key=val.get))
PY

echo "chosen on validation bits/dim: $best" >&2
for s in "$@"; do
  oodflow score "$s.h5" --model "$tag-$best.pt" --out "$tag-$best-scores.h5" --name "$s" --overwrite --quiet
done
ood=(); for s in "${@:2}"; do ood+=(--ood "$s"); done
oodflow evaluate "$tag-$best-scores.h5" --in "$1" "${ood[@]}" --ci 0.95
python "$HERE/paired_auroc.py" "$tag" "$@" --flow "$best"
