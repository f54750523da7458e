#!/usr/bin/env bash
# Issue 5 quality numbers of the embedded prior, each against its baselines on the same images and seeds:
#   SR x4 (average pooling and bicubic kernel) on Set5 / Set14 / CBSD68: DDNM vs bicubic vs A+y
#   inpainting (25% centre box, 80% random pixels) on CBSD68: DDNM vs scikit-image biharmonic vs A+y
#   wall time of the README's first command.
# Denoising against CBM3D is bench/bench_prior.py. Usage: bash bench/bench_prior_tasks.sh [LIMIT] [OUT]
set -euo pipefail
limit=${1:-3}
out=${2:-reports/prior}
data=${DIFFRESTORE_DATA:-../shared/data/eval}
mkdir -p "$out"
for set in Set5 Set14 CBSD68; do
  for kernel in avgpool bicubic; do
    diffrestore eval --data "$data/$set" --task sr --scale 4 --kernel "$kernel" --methods ddnm,bicubic,pinv \
      --limit "$limit" --out "$out/sr4_${kernel}_$set" --resume
  done
done
diffrestore eval --protocol inpaint_box --limit "$limit" --out "$out/inpaint_box" --resume
diffrestore eval --protocol inpaint_random --limit "$limit" --out "$out/inpaint_random" --resume
/usr/bin/time -f "README first command: %e s wall, %U s user" \
  diffrestore restore examples/chelsea_lr.png "$out/chelsea_x4.png" --task sr --scale 4 --quiet
