#!/usr/bin/env bash
# The most complete unicxr pipeline that exists today, on embedded phantom data, CPU only (~5 min):
# simulate -> label reports -> cache -> train the evaluation encoder -> evaluate it -> image metrics
# -> check that the encoder's feature space measures images (eval sanity).
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
OUT=${1:-runs/quickstart}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/7 simulate 1200 phantom radiographs with reports and ground-truth labels"
unicxr phantom --n 1200 --size 128 --seed 0 --out "$OUT/phantom" --preview "$OUT/phantom_preview.png"

step "2/7 label the reports with the rule labeler (compare with the ground-truth columns)"
unicxr label "$OUT/phantom/metadata.csv" --text-column report --out "$OUT/labels.csv"

step "3/7 decode, clean and cache"
unicxr prepare --format phantom --root "$OUT/phantom" --out "$OUT/cache" --size 128

step "4/7 train the evaluation encoder (short schedule)"
unicxr train eval_encoder_phantom --out "$OUT/encoder" --set data.cache="$OUT/cache" \
  --set model.image_size=128 --set train.max_steps=300 --set train.eval_every=0 --set train.ckpt_every=100

step "5/7 per-finding AUROC of the encoder on the test split"
unicxr eval classifier --model "$OUT/encoder" --cache "$OUT/cache" --split test > "$OUT/encoder_test.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('macro AUROC', round(d['macro_auroc'], 3))" "$OUT/encoder_test.json"

step "6/7 image metrics, real vs real (validate vs test): the floor any generator is compared with"
unicxr eval images --real "$OUT/cache" --fake "$OUT/cache" --fake-split validate \
  --features "own:$OUT/encoder" --n-boot 50 --out "$OUT/eval_images"

step "7/7 sanity of the feature space: blur and findings move FD beyond sampling noise (exit 1 if not)"
unicxr eval sanity --data "$OUT/cache" --features "own:$OUT/encoder" --out "$OUT/sanity.json" > /dev/null

printf '\nDone. Open %s/eval_images/report.html and %s/phantom_preview.png\n' "$OUT" "$OUT"
