#!/usr/bin/env bash
# `slow` and `veryslow` against `medium` and x264 with P-frames (docs/BENCHMARKS.md, "Encoder presets":
# "The presets with P-frames"): whole street (21 frames) and bedroom's first 16 frames, GOP 16
# and the model card's P-frame offsets, each preset's curve and x264's (bench_rd, real files), then
# BD-rate PSNR-RGB and MS-SSIM between them (benchmarks.bd_compare).
#
# usage: scripts/presets_gop16.sh [MODEL]     (default: base, the shipped default)
# Then each preset's encode speed in one process (benchmarks/preset_speed.py: bedroom's first 16
# frames, level 4, GOP 16, after a 2-frame warm-up that traces the graphs). Writes
# out/presets_gop16/NAME-ID/{medium,slow,veryslow}_{street,bedroom16}/, .../bd.txt, .../speed.txt and
# .../speed/ (the timed streams), ID the model id's first 12 hex digits (a bench_rd run already there
# is reused: the same weights; a retrained model of the same name gets its own). About
# 55 min on 2 CPU cores (veryslow encodes ~0.1-0.2 frames/s here, slow ~1-2, medium ~3-8).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${EVAL:-../shared/data/eval/video}
model=${1:-base}
# runs are reused per model, named by its weights (the model id), not only its folder's name
id=$("$PY" -m runtime.bundle info "$("$PY" -c "import sys; from model.bundle import resolve_model; print(resolve_model(sys.argv[1]))" "$model")" \
    | sed -n 's/.*model id \([0-9a-f]\{12\}\).*/\1/p')
[[ -n $id ]] || { echo "presets_gop16: no model id for $model" >&2; exit 1; }
root=out/presets_gop16/$(basename "$model")-$id
mkdir -p "$root"
x264=(--anchors=x264 --x264_crf=18,23,28,33,38,43,48,51 --novmaf --gop=16)
: > "$root/bd.txt"
for spec in street:$E/street_320x180_21f.y4m: bedroom16:$E/bedroom_480x270_100f.y4m:16; do
    IFS=: read -r name clip frames <<< "$spec"
    for preset in medium slow veryslow; do
        out=$root/${preset}_$name
        [[ -f $out/results.json ]] && continue
        echo "bench_rd $name, $preset (log: $out.log)"
        "$PY" -m benchmarks.bench_rd --models="$preset=$model" --clips="$clip" ${frames:+--max_frames=$frames} \
            "${x264[@]}" --preset="$preset" --out_dir="$out" > "$out.log" 2>&1 \
            || { echo "presets_gop16: bench_rd failed; see $out.log" >&2; exit 1; }
    done
    for pair in medium/medium:slow/slow,veryslow/veryslow,medium/x264 medium/x264:medium/medium,slow/slow,veryslow/veryslow; do  # reference:curves
        echo "== $name" | tee -a "$root/bd.txt"
        "$PY" -m benchmarks.bd_compare "medium=$root/medium_$name/results.json" "slow=$root/slow_$name/results.json" \
            "veryslow=$root/veryslow_$name/results.json" --reference="${pair%%:*}" --curves="${pair#*:}" | tee -a "$root/bd.txt"
    done
done
"$PY" -m benchmarks.preset_speed --model="$model" --clip="$E/bedroom_480x270_100f.y4m" --presets=medium,slow,veryslow \
    --frames=16 --gop=16 --level=4 --out_dir="$root/speed" | tee "$root/speed.txt"
echo "tables: $root/bd.txt, $root/speed.txt"
