#!/usr/bin/env bash
# A regularised feature flow for docs/detector.md, chosen on in-distribution validation bits/dim only:
# the Appendix K.1 flow (3 hidden layers of 512) against narrower st-networks (256, 128 units), trained on the
# same features with the same defaults. (AdamW's decoupled weight decay shrinks weights by lr * wd = 1e-6 per
# step, so wd is no lever at 300 steps.) Only the one with the lowest best validation bits/dim is scored on the
# test sets, then evaluated against the Gaussian with a paired bootstrap. Run in table.sh's output folder.
#
# Usage: cd OUT_DIR && bash benchmarks/detector/select_width.sh TAG TRAIN_FEATURES IN_SET OOD_SET...
#   e.g. select_width.sh fm fmnist_train10k fmnist_test mnist_test notmnist_test
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
tag=$1 train=$2; shift 2
B=tf_efficientnet_lite0
for h in 256 128; do
  [ -f "$tag-tabular-h$h.pt" ] || oodflow train --data "$train.h5" --features $B --model tabular --hidden $h \
    --out "$tag-tabular-h$h.pt" --json --quiet > "$tag-tabular-h$h.train.json"
done
best=$(python - "$tag" <<'PY'
import json, sys
tag = sys.argv[1]
runs = {"tabular": f"{tag}-tabular.pt", "tabular-h256": f"{tag}-tabular-h256.pt", "tabular-h128": f"{tag}-tabular-h128.pt"}
val = {}
for name, model in runs.items():
    info = json.load(open(model.replace(".pt", ".train.json")))
    val[name] = info.get("best_val_bpd")
    if val[name] is None:  # a train.json written before best_val_bpd was reported: the kept epoch's, from history
        from ood_flow import load_checkpoint
        extra = load_checkpoint(model)[1]
        val[name] = next(h["val_bpd"] for h in extra["history"] if h["epoch"] == extra["best_epoch"])
    print(f"{name}: best validation bits/dim {val[name]:.4f}", file=sys.stderr)
print(min(val, key=val.get))
PY
)
echo "chosen on validation bits/dim: $best" >&2
for s in "$@"; do
  oodflow score "$s.h5" --model "$tag-$best.pt" --out "$tag-$best-scores.h5" --name "$s" --overwrite --quiet
done
ood=(); for s in "${@:2}"; do ood+=(--ood "$s"); done
oodflow evaluate "$tag-$best-scores.h5" --in "$1" "${ood[@]}" --ci 0.95
python "$HERE/paired_auroc.py" "$tag" "$@" --flow "$best"
