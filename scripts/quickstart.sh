#!/usr/bin/env bash
# The most complete unicxr pipeline that exists today, on embedded phantom data, CPU only (~5 min):
# simulate -> label reports -> cache -> train the evaluation encoder -> evaluate it -> image metrics.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
OUT=${1:-runs/quickstart}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/6 simulate 1200 phantom radiographs with reports and ground-truth labels"
unicxr phantom --n 1200 --size 128 --seed 0 --out "$OUT/phantom" --preview "$OUT/phantom_preview.png"

step "2/6 label the reports with the rule labeler (compare with the ground-truth columns)"
unicxr label "$OUT/phantom/metadata.csv" --text-column report --out "$OUT/labels.csv"

step "3/6 decode, clean and cache"
unicxr prepare --format phantom --root "$OUT/phantom" --out "$OUT/cache" --size 128

step "4/6 train the evaluation encoder (short schedule)"
unicxr train eval_encoder_phantom --out "$OUT/encoder" --set data.cache="$OUT/cache" \
  --set model.image_size=128 --set train.max_steps=300 --set train.eval_every=0 --set train.ckpt_every=100

step "5/6 per-finding AUROC of the encoder on the test split"
unicxr eval classifier --model "$OUT/encoder" --cache "$OUT/cache" --split test > "$OUT/encoder_test.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('macro AUROC', round(d['macro_auroc'], 3))" "$OUT/encoder_test.json"

step "6/6 image metrics, real vs real (validate vs test): the floor any generator is compared with"
unicxr eval images --real "$OUT/cache" --fake "$OUT/cache" --fake-split validate \
  --features "own:$OUT/encoder" --n-boot 50 --out "$OUT/eval_images"

printf '\nDone. Open %s/eval_images/report.html and %s/phantom_preview.png\n' "$OUT" "$OUT"
