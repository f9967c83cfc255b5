#!/usr/bin/env bash
# How much of the flow-vs-Gaussian comparison in docs/detector.md is the training seed: the default feature
# flow and the Gaussian retrained with other --seed values (the seed fixes the flow's initial weights, the
# validation split and so the Gaussian's 95% of the data), every other setting a default, each scored on the
# same test features and compared with a paired bootstrap (paired_auroc.py). Seed 0 is table.sh's pair.
# Run in table.sh's output folder.
#
# Usage: cd OUT_DIR && bash benchmarks/detector/seeds.sh "SEEDS" TAG TRAIN_FEATURES IN_SET OOD_SET...
#   e.g. seeds.sh "1 2" fm fmnist_train10k fmnist_test mnist_test notmnist_test
# A variant of the flow instead of the default: FLOW=tabular-n0.1 FLOW_OPTIONS="--noise 0.1" seeds.sh ...
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
seeds=$1 tag=$2 train=$3; shift 3
B=tf_efficientnet_lite0
FLOW=${FLOW:-tabular} FLOW_OPTIONS=${FLOW_OPTIONS:-}
for s in $seeds; do
  for m in "$FLOW" gaussian; do
    opts=(); [ "$m" = gaussian ] || read -ra opts <<< "$FLOW_OPTIONS"
    [ -f "$tag-$m-s$s.pt" ] || oodflow train --data "$train.h5" --features $B --model "${m%%-*}" --seed "$s" \
      "${opts[@]}" --out "$tag-$m-s$s.pt" --json --quiet > "$tag-$m-s$s.train.json"
    for set in "$@"; do
      oodflow score "$set.h5" --model "$tag-$m-s$s.pt" --out "$tag-$m-s$s-scores.h5" --name "$set" --overwrite --quiet
    done
  done
  echo "seed $s:"
  python "$HERE/paired_auroc.py" "$tag" "$@" --flow "$FLOW-s$s" --gaussian "gaussian-s$s"
done
