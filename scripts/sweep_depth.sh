#!/usr/bin/env bash
# How deep to cut the backbone: for each depth, prepare the backbone, train heads on the
# calibration split (streamproc train starts its embedding server) and print the heads'
# cross-validated and out-of-fold figures. The test split is not read.
#   scripts/sweep_depth.sh VLLM_PYTHON MODEL "10 15 20 25 30" [REVIEW_RECALL]
set -euo pipefail
python="$1" model="$2" depths="$3" recall="${4:-0.85}"
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.sweep"
mkdir -p "$out"
for depth in $depths; do
  dir=$(bash "$root/scripts/prepare_model.sh" backbone "$model" "$depth")
  "$root/.venv/bin/streamproc" train --policy "$root/policies/listings.yaml" --policy "$root/policies/videos.yaml" \
    --data "$root/datasets/moderation-v1/calibration.jsonl" --out "$out/l$depth" --review-recall "$recall" \
    --vllm-python "$python" --embedding-model-dir "$dir" > "$out/l$depth.txt"
  echo "== depth $depth of $model"
  grep -E "^\| \(any violation\)|out of fold" "$out/l$depth.txt"
done
