#!/usr/bin/env bash
# The most complete unicxr pipeline that exists today, on embedded phantom data, CPU only (~7 min):
# simulate -> label reports -> cache -> train the evaluation encoder -> evaluate it -> image metrics
# -> check that the encoder's feature space measures images (eval sanity) -> train a report generator,
# write and score test reports -> train a generator, draw one image per test report, score the images.
# The generator and reporter schedules here are minutes long: they show the pipeline, not quality.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
OUT=${1:-runs/quickstart}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/10 simulate 1200 phantom radiographs with reports and ground-truth labels"
unicxr phantom --n 1200 --size 128 --seed 0 --out "$OUT/phantom" --preview "$OUT/phantom_preview.png"

step "2/10 label the reports with the rule labeler (compare with the ground-truth columns)"
unicxr label "$OUT/phantom/metadata.csv" --text-column report --out "$OUT/labels.csv"

step "3/10 decode, clean and cache"
unicxr prepare --format phantom --root "$OUT/phantom" --out "$OUT/cache" --size 128

step "4/10 train the evaluation encoder (short schedule)"
unicxr train eval_encoder_phantom --out "$OUT/encoder" --set data.cache="$OUT/cache" \
  --set model.image_size=128 --set train.max_steps=400 --set train.eval_every=0 --set train.ckpt_every=100

step "5/10 per-finding AUROC of the encoder on the test split"
unicxr eval classifier --model "$OUT/encoder" --cache "$OUT/cache" --split test > "$OUT/encoder_test.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('macro AUROC', round(d['macro_auroc'], 3))" "$OUT/encoder_test.json"

step "6/10 image metrics, real vs real (validate vs test): the floor any generator is compared with"
unicxr eval images --real "$OUT/cache" --fake "$OUT/cache" --fake-split validate \
  --features "own:$OUT/encoder" --n-boot 50 --out "$OUT/eval_images"

step "7/10 sanity of the feature space: blur and findings move FD beyond sampling noise (exit 1 if not)"
unicxr eval sanity --data "$OUT/cache" --features "own:$OUT/encoder" --out "$OUT/sanity.json" > /dev/null

step "8/10 train a report generator (short schedule) and write reports for the test split"
unicxr train report_phantom --out "$OUT/reporter" --set data.cache="$OUT/cache" \
  --set train.max_steps=60 --set train.eval_every=0 --set train.ckpt_every=60 --no-progress
unicxr report --model "$OUT/reporter" --cache "$OUT/cache" --split test --out "$OUT/reports_test.csv" > /dev/null
unicxr eval reports --pred "$OUT/reports_test.csv" --ref "$OUT/phantom/metadata.csv" --out "$OUT/eval_reports" > /dev/null

step "9/10 train a rectified-flow generator (pixel space, short schedule) and draw one image per test report"
unicxr train rf_dit_phantom --out "$OUT/generator" --set data.cache="$OUT/cache" --set model.autoencoder=null \
  --set model.patch=8 --set model.dim=64 --set model.depth=2 --set model.heads=4 \
  --set train.max_steps=60 --set train.eval_every=0 --set train.ckpt_every=60 --set data.media_n=4 --no-progress
unicxr generate --model "$OUT/generator" --prompts "$OUT/cache" --split test --steps 10 --out "$OUT/generated" --no-progress > /dev/null

step "10/10 image metrics of the generated images against the real test split"
unicxr eval images --real "$OUT/cache" --fake "$OUT/generated" --features "own:$OUT/encoder" --n-boot 50 \
  --out "$OUT/eval_generated"

printf '\nDone. Open %s/eval_images/report.html, %s/eval_generated/report.html and %s/phantom_preview.png\n' "$OUT" "$OUT" "$OUT"
