#!/usr/bin/env bash
# The encoder presets' all-intra table (docs/BENCHMARKS.md, "Encoder presets"): for one model, the
# level sweep (levels 0..7, FRAMES frames of each clip, every frame an I-frame: --gop=1, whatever the
# model card says; scripts/presets_gop16.sh has the table with P-frames) of each preset on the two
# eval clips and bikes.mp4, the BD-rate (PSNR-RGB) of fast, slow and veryslow against medium, and the
# encode FPS of each preset on bikes.mp4 (the stream sizes too).
#
# usage: scripts/presets.sh [MODEL] [FRAMES]      (default: the shipped default model, 4 frames)
# Writes out/presets/MODEL/{sweep_CLIP_PRESET.json, bd.txt, speed.txt, speed/}. About 15 min for base
# with 4 frames on 2 CPU cores (slow is ~50 gradient steps per I-frame, veryslow per frame).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EVAL=${EVAL:-../shared/data/eval/video}
model=${1:-base}
frames=${2:-4}
out=out/presets/$model
mkdir -p "$out"
bikes=$("$PY" -c "from model.samples import bikes_path; print(bikes_path())")
: > "$out/bd.txt"
for spec in street:$EVAL/street_320x180_21f.y4m bedroom:$EVAL/bedroom_480x270_100f.y4m bikes:$bikes; do
    name=${spec%%:*}
    clip=${spec#*:}
    for preset in medium fast slow veryslow; do
        "$PY" -m benchmarks.level_sweep --model="$model" --clip="$clip" --step=1 --frames="$frames" \
            --gop=1 --preset="$preset" --out="$out/sweep_${name}_$preset.json" | tail -n 1
    done
    for preset in fast slow veryslow; do
        echo "$name $preset vs medium: $("$PY" -m benchmarks.level_sweep --load="$out/sweep_${name}_$preset.json" \
            --anchor="$out/sweep_${name}_medium.json" | grep -i 'BD-rate')" | tee -a "$out/bd.txt"
    done
done
# Encode speed on bikes.mp4 at level 4, in one process (benchmarks/preset_speed.py): each preset
# warmed up on 2 frames (graph tracing excluded), then timed on 16 frames (veryslow: 4); the stream
# sizes say the bits.
"$PY" -m benchmarks.preset_speed --model="$model" --clip="$bikes" --presets=medium,fast,slow,veryslow \
    --frames=16 --veryslow_frames=4 --level=4 --gop=1 --out_dir="$out/speed" | tee "$out/speed.txt"
