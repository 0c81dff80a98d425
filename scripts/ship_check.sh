#!/usr/bin/env bash
# The ship decision for new `base` weights (docs/TRAINING.md, "`base` on this CPU"):
# whole clips as a user codes them (bench_rd: GOP 16 and the card's P-frame offset pattern,
# scene-cut check on, real files), street (21 frames), bedroom (100) and bikes.mp4's first 48, the
# new weights against the shipped model and x264 (BD-rate PSNR-RGB and MS-SSIM,
# benchmarks.bd_compare). Ship when the new weights need fewer bits on all three (docs/GPU.md,
# "After the call"); Kodak (I-frame codec) is not run here.
#
# Every model's curve is labelled by its model step (sSTEP). Each run codes its new model and x264
# into out/ship_check/sSTEP_SET_gop16_poOFFSET/; the shipped model's curve is reused from the run
# that measured it as new (out/ship_check/sSHIPPED_..., the FP32 folder the shipped compact FP16
# copy was made from: the two code within ~0.1% in bpp), else from any earlier check that coded
# the shipped copy itself (its model id in the points; benchmarks.bd_compare.holding_curve), else
# coded here from runtime/checkpoints/base (about twice the time). Runs are keyed by model step: before measuring
# other weights that end at the same step, move runs/campaign_sSTEP and out/ship_check/sSTEP_* away.
#
# The quick screen (LEVELS=0,1,2,3 SETS=bikes48, ~2 min): a few levels of one set, no BD-rate but
# each level against the shipped model's at the same level (bd_compare --by_setting: bpp, dB,
# I-frame counts), so that a run's snapshots can be screened for the failure a full sweep found
# in the twenty-seventh run (low levels dearer and worse along 16-frame GOPs, scene cuts every
# few frames), which the training log and Kodak do not show. Its results go to
# out/ship_check/sSTEP_SET_TAG_lLEVELS/ and never count as the full check.
#
# usage: [P_OFFSET=X] [LEVELS=a,b,..] [SETS="eval bikes48"] scripts/ship_check.sh RUN_DIR
#   (~17 min on 2 cores reusing, ~30 without; with LEVELS=0,1,2,3 SETS=bikes48 ~2 min)
#   RUN_DIR: weight shards of gpu_train.train / the GPU campaign (or an .npz), or a snapshot folder
#   P_OFFSET: a number or a pattern a,b,c (default: the shipped card's)
#   LEVELS: only these levels, compared level by level (default: all, BD-rates)
#   SETS: of eval (street and bedroom) and bikes48 (default both)
# Writes runs/campaign_sSTEP/ (the model folder, pinned), out/ship_check/sSTEP_* and
# out/ship_check/sSTEP_poOFFSET.txt (the tables); ships nothing.
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
shipped_id=$("$PY" -m runtime.bundle info runtime/checkpoints/base | sed -n 's/.*model id \([0-9a-f]*\).*/\1/p')
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
tag=gop16_po$po  # runs at another offset are kept apart
levels=${LEVELS:-}
[[ $levels =~ ^[0-9.]+(,[0-9.]+)*$ || -z $levels ]] || { echo "ship_check: LEVELS must be like 0,1,2, got '$levels'" >&2; exit 2; }
sets=${SETS:-eval bikes48}
declare -A specs=([eval]="$E/street_320x180_21f.y4m,$E/bedroom_480x270_100f.y4m:" [bikes48]="$B:48")
for set in $sets; do
    [[ -n ${specs[$set]+x} ]] || { echo "ship_check: SETS: unknown set '$set' (eval, bikes48)" >&2; exit 2; }
done
report=$root/s${step}_po$po${levels:+_l$levels}.txt
: > "$report"
echo "s$step ($weights) against the shipped s$shipped, GOP 16, P-frames at level $po${levels:+, levels $levels}" \
    | tee -a "$report"
for set in $sets; do
    IFS=: read -r clips frames <<< "${specs[$set]}"
    new=$root/s${step}_${set}_$tag${levels:+_l$levels}
    # The shipped model's curve, when kept: its own check as new weights, else an earlier check of
    # other weights that coded the shipped copy beside them (same clips, frames and offsets).
    ref=$root/s${shipped}_${set}_$tag/results.json
    if [[ ! -f $ref ]]; then
        ref=$("$PY" -c "
import glob, sys
from benchmarks.bd_compare import holding_curve
root, set_, tag, new, name, model_id = sys.argv[1:]
print(holding_curve(sorted(p for p in glob.glob(f'{root}/s*_{set_}_{tag}/results.json') if not p.startswith(new + '/')), name, model_id))" \
            "$root" "$set" "$tag" "$new" "s$shipped" "$shipped_id")
    fi
    files=("new=$new/results.json")  # labelled: curves new/NAME and ref/NAME (x264 is in both)
    if [[ -n $ref && -f $ref ]]; then
        models=s$step=$model
        files+=("ref=$ref")
        old=ref/s$shipped
    else
        models=s$shipped=base,s$step=$model
        old=new/s$shipped
    fi
    if [[ ! -f $new/results.json ]]; then
        echo "bench_rd $set: $models and x264 (log: $new.log)"
        "$PY" -m benchmarks.bench_rd --models="$models" --clips="$clips" ${frames:+--max_frames=$frames} \
            --anchors=x264 --x264_crf=18,23,28,33,38,43,48,51 --novmaf --gop=16 --p_level_offset="$po" \
            ${levels:+--levels=$levels} --out_dir="$new" > "$new.log" 2>&1 \
            || { echo "ship_check: bench_rd failed; see $new.log" >&2; exit 1; }
    fi
    if [[ -n $levels ]]; then  # the quick screen: level by level
        echo "== $set" | tee -a "$report"
        "$PY" -m benchmarks.bd_compare "${files[@]}" --reference="$old" --curves="new/s$step" --by_setting | tee -a "$report"
        continue
    fi
    for pair in "$old:new/s$step,new/x264" "new/x264:new/s$step,$old"; do  # reference:curves
        echo "== $set" | tee -a "$report"
        "$PY" -m benchmarks.bd_compare "${files[@]}" --reference="${pair%%:*}" --curves="${pair#*:}" | tee -a "$report"
    done
done
echo "tables: $report"
