#!/usr/bin/env bash
# Everything recorded for a model after its sweeps: the R-D benchmark against x264, x265 and
# SVT-AV1 on the eval clips, the README's main job (bikes.mp4, 16 frames, level 4) and where
# the bits go (real stream vs the App. A estimate, per codelayer).
#
# Reconstructed: the original was runs/eval_rest.sh (runs/ is gitignored, so it was never
# committed). The three commands are exactly the ones WORKSPACE recorded for the shipped model
# (stage 8: `runs/eval_rest.sh runs/export_v8_p0.01 v8_p0.01`); the script around them is new.
#
# usage: scripts/eval_model.sh MODEL_DIR TAG
#   scripts/eval_model.sh runtime/checkpoints/small v8_p0.01
# Writes out/TAG/rd/ (results.json, results.md, plots), out/TAG/demo.log, out/TAG/measure_codec.log.
# About 9 min for the R-D benchmark on an idle 2-core machine (max RSS 1.9 GB), 1 min for the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EVAL=${EVAL:-../shared/data/eval/video}
model=${1:?usage: scripts/eval_model.sh MODEL_DIR TAG}
tag=${2:?usage: scripts/eval_model.sh MODEL_DIR TAG}
mkdir -p "out/$tag"
"$PY" -m benchmarks.bench_rd --models="$model" \
    --clips="$EVAL/bedroom_480x270_100f.y4m,$EVAL/street_320x180_21f.y4m" \
    --out_dir="out/$tag/rd" --x264_crf=18,23,28,33,38,43,48,51 --x265_crf=18,23,28,33,38,43,48,51 \
    --svtav1_qp=20,28,36,44,52,60,63
"$PY" -m runtime.demo --model="$model" 2>&1 | tee "out/$tag/demo.log"
"$PY" -m runtime.measure_codec --model="$model" \
    --videos="$EVAL/bedroom_480x270_100f.y4m,$EVAL/street_320x180_21f.y4m" \
    --frames=16 --levels=0,3.5,7 2>&1 | tee "out/$tag/measure_codec.log"
