#!/usr/bin/env bash
# Every OOD score of oodflow in one evaluate table (FashionMNIST in, MNIST and notMNIST out):
# log-likelihood (Kirichenko et al. 2020), input complexity (Serra et al. 2020), likelihood ratio
# with a background flow trained on perturbed images (Ren et al. 2019), batch-norm train mode
# (Song et al. 2019), WAIC over an ensemble of flows trained with different seeds (Choi et al. 2018),
# and the batch typicality test (Nalisnick et al. 2019).
#
# Trains ENSEMBLE pixel RealNVPs (seeds 0..ENSEMBLE-1; seed 0 is the flow of
# examples/embedding_vs_pixels.sh and examples/negative_training.sh when given the same settings)
# and one background flow (--perturb), then scores each test set with every method at once.
#
# Usage:
#   OODFLOW_DATA_DIR=/path/to/data examples/scores_compared.sh [OUT_DIR]
# Knobs (environment): N_TRAIN (10000), N_TEST (2000), PIXEL_STEPS (1000), PIXEL_ARGS, ENSEMBLE (3),
#   PERTURB (0.2), TYPICALITY_M (10).
# Steps whose output exists are skipped, so an interrupted run continues where it stopped.
set -euo pipefail

OUT=${1:-oodflow-scores}
: "${OODFLOW_DATA_DIR:?set OODFLOW_DATA_DIR to the data root (FashionMNIST/, MNIST/, notMNIST/)}"
export OODFLOW_DATA_DIR
N_TRAIN=${N_TRAIN:-10000}
N_TEST=${N_TEST:-2000}
PIXEL_STEPS=${PIXEL_STEPS:-1000}
PIXEL_ARGS=${PIXEL_ARGS:---channels 16 --blocks 1 --lr 1e-3 --batch-size 64}
ENSEMBLE=${ENSEMBLE:-3}
PERTURB=${PERTURB:-0.2}
TYPICALITY_M=${TYPICALITY_M:-10}
mkdir -p "$OUT"

# shellcheck source=examples/once.sh
source "$(dirname "$0")/once.sh"

models=()
for ((seed = 0; seed < ENSEMBLE; seed++)); do
  # shellcheck disable=SC2086  # PIXEL_ARGS is a list of options
  once "$OUT/flow-seed$seed.pt" train --data fashionmnist:train --limit "$N_TRAIN" --model realnvp \
    --out "$OUT/flow-seed$seed.pt" $PIXEL_ARGS --epochs 1000 --max-steps "$PIXEL_STEPS" --seed "$seed" --quiet
  models+=(--model "$OUT/flow-seed$seed.pt")
done
# shellcheck disable=SC2086
once "$OUT/background.pt" train --data fashionmnist:train --limit "$N_TRAIN" --model realnvp --perturb "$PERTURB" \
  --out "$OUT/background.pt" $PIXEL_ARGS --epochs 1000 --max-steps "$PIXEL_STEPS" --seed 0 --quiet

methods=(--method likelihood --method complexity --method likelihood-ratio --background-model "$OUT/background.pt"
         --method bn-train --method waic)
# The training split's scores estimate the model's entropy for the typicality test.
for spec in fashionmnist:train fashionmnist:test mnist:test notmnist:test; do
  name=${spec/:/-}
  echo "\$ oodflow score $spec --limit $N_TEST ${models[*]} ${methods[*]} --out $OUT/scores.h5 --name $name --overwrite --quiet" >&2
  oodflow score "$spec" --limit "$N_TEST" "${models[@]}" "${methods[@]}" --out "$OUT/scores.h5" --name "$name" \
    --overwrite --quiet
done
echo "\$ oodflow evaluate $OUT/scores.h5 --in fashionmnist-test --ood mnist-test --ood notmnist-test --all-scores --typicality --batch-size $TYPICALITY_M --reference-group fashionmnist-train" >&2
oodflow evaluate "$OUT/scores.h5" --in fashionmnist-test --ood mnist-test --ood notmnist-test --all-scores \
  --typicality --batch-size "$TYPICALITY_M" --reference-group fashionmnist-train
