#!/usr/bin/env bash
# The unified model's staged training (UniX-style), each stage starting from the previous stage's model:
#   1. understanding (report cross-entropy; generation loss weight 0)
#   2. generation pre-training at 64 px with the understanding side frozen (velocity + small REPA loss)
#   3. generation fine-tuning at the cache's resolution, understanding side still frozen
# Usage: bash scripts/unified_stages.sh CACHE AE OUT [--set key=value ...]
#   CACHE  a `unicxr prepare` cache (e.g. 128 px phantom);  AE  a trained autoencoder run or model dir
#          (`null` for pixel space);  OUT  folder for the three runs (OUT/und, OUT/gen, OUT/ft).
#   Extra --set options go to every stage (e.g. --set train.num_threads=2); a stage already finished
#   is skipped (its run folder has model/), an interrupted one resumes from its last checkpoint.
# Default sizes on a 128 px cache: 34.5 min wall for all three stages alone on 2 cores with the default
# threads (stage 1 20.5, stage 2 9.5, stage 3 4.4 min); 54 CPU-min with one thread per stage
# (see README, "Unified model").
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CACHE AE OUT [--set key=value ...]" >&2
  exit 2
fi
CACHE=$1 AE=$2 OUT=$3
shift 3
mkdir -p "$OUT"
stage() {  # stage NAME RECIPE ARGS...
  local name=$1 recipe=$2
  shift 2
  if [ -f "$OUT/$name/summary.json" ] && [ -d "$OUT/$name/model" ]; then
    echo "== $name: done already ($OUT/$name/model)"
    return
  fi
  echo "== $name: unicxr train $recipe"
  unicxr train "$recipe" --out "$OUT/$name" --set data.cache="$CACHE" "$@"
}
stage und unified_phantom_und --set model.autoencoder="$AE" "$@"
stage gen unified_phantom_gen --set train.init_from="$OUT/und" "$@"
stage ft unified_phantom_ft --set train.init_from="$OUT/gen" "$@"
echo
echo "inference from the final model:"
echo "  unicxr report --model $OUT/ft --cache $CACHE --split test --out $OUT/reports_test.csv"
echo "  unicxr generate --model $OUT/ft --prompts $CACHE --split test --out $OUT/gen_test"
