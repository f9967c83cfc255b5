#!/usr/bin/env bash
# The detector table of docs/detector.md at the budget of issue 15: tf_efficientnet_lite0 features (fp32, 224 px)
# of FashionMNIST (first 10,000 training images) and of the CIFAR-10 4,000-image training sample; a flow
# (Appendix K.1 defaults: nothing changed) and the Gaussian baseline on each; the first 1,000 test images of
# each set scored and evaluated; pixel RealNVPs beside them. About 1.5 hours on 2 CPU cores.
#
# Usage: OODFLOW_DATA_DIR=../shared/data benchmarks/detector/table.sh [OUT_DIR] [PIXEL_FMNIST_MODEL]
#   PIXEL_FMNIST_MODEL: a pixel flow trained on FashionMNIST, e.g. the reproduction's realnvp-fashionmnist.pt (which
#   docs/detector.md used; default: train one with --preset cpu --max-steps 420
#   on the first 6,000 training images, quicker and not converged).
# Steps whose output exists are skipped, so an interrupted run continues.
set -euo pipefail
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root}"
export OODFLOW_DATA_DIR
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-oodflow-detector}
PIXEL_FM=${2:-}
mkdir -p "$OUT" && cd "$OUT"
B=tf_efficientnet_lite0
embed() { [ -f "$3" ] || oodflow embed "$1" --backbone $B --limit "$2" --out "$3" --quiet; }
embed fashionmnist:train 10000 fmnist_train10k.h5
embed cifar10:train 4000 cifar_train4k.h5
for s in fashionmnist mnist notmnist; do embed $s:test 1000 ${s/fashionmnist/fmnist}_test.h5; done
embed cifar10:test 1000 cifar_test.h5

table() {  # tag, training features, in-distribution set, OOD sets...
  local tag=$1 train=$2; shift 2
  for m in gaussian tabular; do
    [ -f "$tag-$m.pt" ] || oodflow train --data "$train.h5" --features $B --model $m --out "$tag-$m.pt" --json \
      > "$tag-$m.train.json"
    for s in "$@"; do
      oodflow score "$s.h5" --model "$tag-$m.pt" --out "$tag-$m-scores.h5" --name "$s" --overwrite --quiet
    done
    ood=(); for s in "${@:2}"; do ood+=(--ood "$s"); done
    oodflow evaluate "$tag-$m-scores.h5" --in "$1" "${ood[@]}" --ci 0.95
    python "$HERE/bits_sanity.py" "$tag-$m-scores.h5" "$1"
  done
  python "$HERE/paired_auroc.py" "$tag" "$@"
}
table fm fmnist_train10k fmnist_test mnist_test notmnist_test
table c cifar_train4k cifar_test mnist_test notmnist_test fmnist_test

if [ -z "$PIXEL_FM" ]; then
  PIXEL_FM=fm-pixel.pt
  [ -f $PIXEL_FM ] || oodflow train --data fashionmnist:train --limit 6000 --model realnvp --mask checkerboard --scales 1 --couplings 8 \
    --preset cpu --max-steps 420 --out $PIXEL_FM --quiet
fi
for s in fashionmnist mnist notmnist; do
  oodflow score $s:test --limit 1000 --model "$PIXEL_FM" --out fm-pixel-scores.h5 --overwrite --quiet
done
oodflow evaluate fm-pixel-scores.h5 --in fashionmnist-test --ood mnist-test --ood notmnist-test
[ -f c-pixel.pt ] || oodflow train --data cifar10:train --limit 4000 --model realnvp --preset cpu --max-steps 300 \
  --out c-pixel.pt --quiet
oodflow score cifar10:test --limit 1000 --model c-pixel.pt --out c-pixel-scores.h5 --overwrite --quiet
for s in mnist notmnist fashionmnist; do
  oodflow score $s:test --limit 1000 --model c-pixel.pt --out c-pixel-scores.h5 --resize --rgb --overwrite --quiet
done
oodflow evaluate c-pixel-scores.h5 --in cifar10-test --ood mnist-test --ood notmnist-test --ood fashionmnist-test
