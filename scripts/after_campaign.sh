#!/usr/bin/env bash
# After a GPU campaign call (docs/GPU.md): turn the weights it returned into a model folder and
# measure it against the shipped `base` the way the shipping rule reads (docs/BENCHMARKS.md, "The
# default model `base`"): both eval clips with every frame an I-frame (GOP 1) and with I+P (GOP
# 16), BD-rate PSNR-RGB against the shipped model's same sweep, and Kodak's I-frame codec.
#
# usage: [P_OFFSET=X] scripts/after_campaign.sh WEIGHTS_DIR [FRAMES]
#   scripts/after_campaign.sh /work/.device/1          # FRAMES: frames per clip (default 8)
#   P_OFFSET=-1 scripts/after_campaign.sh RUN          # P-frames at level - 1 in both models' GOP 16 sweeps
#                                                      # (--p_level_offset: a number or a pattern a,b,c; default: the shipped card's, base -1.5,-1.5,-1.5,-0.5)
# Writes runs/campaign_sSTEP/ (the model folder, pinned), out/after_campaign_sSTEP/ (level sweeps
# 0..7 of both models at GOP 1 and GOP 16, and bd.txt) and prints the BD-rates (negative: the new
# weights need fewer bits), and the new I+P (GOP 16) against the shipped all-intra; ships
# nothing (docs/GPU.md says how, when it is better on both clips).
# About 10 min with 8 frames on 2 CPU cores (less when the shipped model's sweeps are reused, below).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EVAL=${EVAL:-../shared/data/eval/video}
weights=${1:?usage: scripts/after_campaign.sh WEIGHTS_DIR [FRAMES]}
frames=${2:-8}
# The shipped card's P-frame offset unless P_OFFSET says (a run's model folder has no card, so the
# sweeps pass the offset explicitly, to both models alike)
# (one number, or a pattern "a,b,c" cycled over each GOP's P-frames; model/level_offsets.py)
po=$("$PY" -c "import sys; from model.bundle import given_or_card_p_level_offset as po; print(po(sys.argv[1]))" \
    "${P_OFFSET:-}")  # one spelling: -1.0 and -1 name the same files
g16=gop16
[[ $po == 0 ]] || g16=gop16_po$po  # sweeps at another P-frame offset are kept apart
# The model step, and whether the I-frame codec is bit for bit the shipped one (a run with
# --freeze=iframe): then the new model's GOP 1 sweeps are the shipped model's and are not re-run.
read -r step same_iframe < <("$PY" -c "
import sys
from gpu_train.weights import iframe_digest, read_arrays
new = read_arrays(sys.argv[1])
print(int(new['step']), int(iframe_digest(new) == iframe_digest(read_arrays('runtime/checkpoints/base/weights.npz'))))" "$weights")
model=runs/campaign_s$step
out=out/after_campaign_s$step
mkdir -p "$out"
# The shipped model's sweeps, when an earlier run of this script measured the weights it shipped
# as "new" (out/after_campaign_sSHIPPEDSTEP; that run's FP32 folder, which the compact FP16 copy
# codes within ~0.1% in bpp), are reused instead of sweeping the shipped model again.
shipped_step=$("$PY" -c "import json; print(json.load(open('runtime/checkpoints/base/training.json'))['model_step'])")
if [[ $shipped_step != "$step" && -d out/after_campaign_s$shipped_step ]]; then
    for f in out/after_campaign_s$shipped_step/sweep_*_new_gop*.json; do
        [[ -f $f && $f != *_rd.json && $f != *sweep_bikes_* ]] || continue  # the sweeps this script compares
        name=$(basename "$f")
        cp -n "$f" "$out/${name/_new_/_shipped_}"
    done
fi
bd() {  # BD-rate of sweep $1 against sweep $2 (or why there is none)
    "$PY" -m benchmarks.level_sweep --load="$1" --anchor="$2" 2>&1 | grep -i 'BD-rate\|overlap' || true
}
# The config the weights were trained with (gpu_train.train.config_beside: a config.json beside
# them, the config the run recorded in progress.json, or the --config file an older run named),
# else the shipped one.
config=$("$PY" -c "
import pathlib, sys
from gpu_train.campaign import weights_config
print(weights_config(sys.argv[1], pathlib.Path(sys.argv[2])) or 'runtime/checkpoints/base/config.json')" "$weights" "$out")
if [[ ! -d $model ]]; then
    echo "model folder $model from $weights with $config"
    "$PY" -m gpu_train.weights from_npz --npz="$weights" --config="$config" --out="$model"
    "$PY" -m runtime.bundle pin "$model"
fi
bdf=$out/bd${g16#gop16}.txt  # bd.txt, or bd_po-1.txt for P_OFFSET=-1
: > "$bdf"
for spec in street:$EVAL/street_320x180_21f.y4m bedroom:$EVAL/bedroom_480x270_100f.y4m; do
    name=${spec%%:*}
    clip=${spec#*:}
    for g in gop1 "$g16"; do
        for who in shipped:base new:$model; do
            tag=${who%%:*}
            path=${who#*:}
            if [[ $g == gop1 && $tag == new && $same_iframe == 1 && -f $out/sweep_${name}_shipped_gop1.json ]]; then
                cp "$out/sweep_${name}_shipped_gop1.json" "$out/sweep_${name}_new_gop1.json"  # same I-frame codec
            fi
            n=${g#gop}
            n=${n%%_*}  # the GOP of gop1, gop16, gop16_po-1
            if [[ ! -f $out/sweep_${name}_${tag}_$g.json ]]; then
                "$PY" -m benchmarks.level_sweep --model="$path" --clip="$clip" --step=1 --frames="$frames" \
                    --gop="$n" --p_level_offset="$po" --out="$out/sweep_${name}_${tag}_$g.json" | tail -n 1
            fi
        done
        echo "$name $g, new vs shipped base: $(bd "$out/sweep_${name}_new_$g.json" \
            "$out/sweep_${name}_shipped_$g.json")" | tee -a "$bdf"
    done
    # Do the P-frames earn their place? (The card's GOP: 16 only if this is negative on both clips.)
    echo "$name new $g16 vs shipped GOP 1: $(bd "$out/sweep_${name}_new_$g16.json" \
        "$out/sweep_${name}_shipped_gop1.json")" | tee -a "$bdf"
    # And with the encoder's R-D frame-type choice (each P-frame also tried as an I-frame).
    if [[ ! -f $out/sweep_${name}_new_${g16}_rd.json ]]; then
        "$PY" -m benchmarks.level_sweep --model="$model" --clip="$clip" --step=1 --frames="$frames" --gop=16 \
            --p_level_offset="$po" --rd_frame_type --out="$out/sweep_${name}_new_${g16}_rd.json" | tail -n 1
    fi
    echo "$name new $g16 + rd_frame_type vs shipped GOP 1: $(bd "$out/sweep_${name}_new_${g16}_rd.json" \
        "$out/sweep_${name}_shipped_gop1.json")" | tee -a "$bdf"
done
echo "Kodak: $PY -m benchmarks.bench_image --model=$model --out_dir=$out/image   (10 min; not run here)"
