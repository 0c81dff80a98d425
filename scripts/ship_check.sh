#!/usr/bin/env bash
# The ship decision for new `base` weights (docs/TRAINING.md, "`base`'s P path on this CPU"):
# whole clips as a user codes them (bench_rd: the card's GOP and P-frame offset pattern, scene-cut
# check on, real files), street (21 frames), bedroom (100) and bikes.mp4's first 48, the new
# weights against the shipped model and x264 (BD-rate PSNR-RGB and MS-SSIM, benchmarks.bd_compare).
# Ship when the new weights need fewer bits on all three (docs/GPU.md, "After the call").
#
# Every model's curve is labelled by its model step (sSTEP), so runs join across sessions: the
# shipped model's curves and x264's are coded once, by the run that measured the shipped weights
# as new (out/ship_check/sSHIPPED_*), and reused while out/ holds them; else they are coded here
# too (about twice the time). The reused curves come from the FP32 folder the shipped compact FP16
# copy was made from (the two code within ~0.1% in bpp).
#
# usage: [P_OFFSET=X] scripts/ship_check.sh RUN_DIR   (~15 min on 2 cores reusing, ~30 without)
#   RUN_DIR: weight shards of gpu_train.train / the GPU campaign (or an .npz)
#   P_OFFSET: a number or a pattern a,b,c (default: the shipped card's)
# Writes runs/campaign_sSTEP/ (the model folder, pinned), out/ship_check/sSTEP_{eval,bikes48}/ and
# out/ship_check/sSTEP.txt (the tables); ships nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${EVAL:-../shared/data/eval/video}
weights=${1:?usage: scripts/ship_check.sh RUN_DIR}
B=$("$PY" -c "from model.samples import require_bikes_path; print(require_bikes_path())")
po=$("$PY" -c "import sys; from model.bundle import given_or_card_p_level_offset as po; print(po(sys.argv[1]))" \
    "${P_OFFSET:-}")
step=$("$PY" -c "import sys; from gpu_train.weights import read_arrays; print(int(read_arrays(sys.argv[1])['step']))" "$weights")
shipped=$("$PY" -c "import json; print(json.load(open('runtime/checkpoints/base/training.json'))['model_step'])")
[[ $step != "$shipped" ]] || { echo "ship_check: $weights is the shipped model step $shipped" >&2; exit 1; }
model=runs/campaign_s$step
root=out/ship_check
mkdir -p "$root/s${step}_config"
if [[ ! -d $model ]]; then
    config=$("$PY" -c "
import pathlib, sys
from gpu_train.campaign import weights_config
print(weights_config(sys.argv[1], pathlib.Path(sys.argv[2])) or 'runtime/checkpoints/base/config.json')" "$weights" "$root/s${step}_config")
    "$PY" -m gpu_train.weights from_npz --npz="$weights" --config="$config" --out="$model"
    "$PY" -m runtime.bundle pin "$model"
fi
report=$root/s$step.txt
: > "$report"
echo "s$step ($weights) against the shipped s$shipped, P-frames at level $po" | tee -a "$report"
for spec in eval:$E/street_320x180_21f.y4m,$E/bedroom_480x270_100f.y4m: bikes48:$B:48; do
    IFS=: read -r set clips frames <<< "$spec"
    new=$root/s${step}_$set
    saved=("$root"/s*_"$set"/results.json)  # every saved run of this set: curves join by label
    if [[ ! -f $new/results.json ]]; then
        # Do the saved runs hold the shipped model's curve and x264's? Then code the new model alone.
        if [[ -f ${saved[0]} ]] && "$PY" -m benchmarks.bd_compare "${saved[@]}" --curves="s$shipped" > /dev/null 2>&1; then
            models=s$step=$model anchors=(--anchors=)
        else
            models=s$shipped=base,s$step=$model anchors=(--anchors=x264 --x264_crf=18,23,28,33,38,43,48,51)
        fi
        echo "bench_rd $set: $models (log: $new.log)"
        # GOP 16: the card's (a run's model folder has no card, so GOP and offset are given to both)
        "$PY" -m benchmarks.bench_rd --models="$models" --clips="$clips" ${frames:+--max_frames=$frames} \
            "${anchors[@]}" --novmaf --gop=16 --p_level_offset="$po" --out_dir="$new" > "$new.log" 2>&1
    fi
    files=("$root"/s*_"$set"/results.json)
    for pair in "s$shipped:s$step,x264" "x264:s$step,s$shipped"; do  # reference:curves
        echo "== $set" | tee -a "$report"
        "$PY" -m benchmarks.bd_compare "${files[@]}" --reference="${pair%%:*}" --curves="${pair#*:}" | tee -a "$report"
    done
done
echo "tables: $report"
