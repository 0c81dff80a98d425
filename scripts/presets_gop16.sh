#!/usr/bin/env bash
# `slow` against `medium` and x264 with P-frames (docs/BENCHMARKS.md, "Encoder presets": "`slow` on
# the shipped `base` with P-frames"): whole street (21 frames) and bedroom's first 16 frames, GOP 16
# and the model card's P-frame offsets, each preset's curve and x264's (bench_rd, real files), then
# BD-rate PSNR-RGB and MS-SSIM between them (benchmarks.bd_compare).
#
# usage: scripts/presets_gop16.sh [MODEL]     (default: base, the shipped default)
# Writes out/presets_gop16/MODEL/{slow,medium}_{street,bedroom16}/ and .../bd.txt (a run already
# there is reused). About 40 min on 2 CPU cores (slow encodes ~0.1-0.2 frames/s here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${EVAL:-../shared/data/eval/video}
model=${1:-base}
root=out/presets_gop16/$(basename "$model")  # runs are reused per model
mkdir -p "$root"
x264=(--anchors=x264 --x264_crf=18,23,28,33,38,43,48,51 --novmaf --gop=16)
: > "$root/bd.txt"
for spec in street:$E/street_320x180_21f.y4m: bedroom16:$E/bedroom_480x270_100f.y4m:16; do
    IFS=: read -r name clip frames <<< "$spec"
    for preset in medium slow; do
        out=$root/${preset}_$name
        [[ -f $out/results.json ]] && continue
        echo "bench_rd $name, $preset (log: $out.log)"
        "$PY" -m benchmarks.bench_rd --models="$preset=$model" --clips="$clip" ${frames:+--max_frames=$frames} \
            "${x264[@]}" --preset="$preset" --out_dir="$out" > "$out.log" 2>&1 \
            || { echo "presets_gop16: bench_rd failed; see $out.log" >&2; exit 1; }
    done
    for pair in medium/medium:slow/slow,medium/x264 medium/x264:slow/slow,medium/medium; do  # reference:curves
        echo "== $name" | tee -a "$root/bd.txt"
        "$PY" -m benchmarks.bd_compare "medium=$root/medium_$name/results.json" "slow=$root/slow_$name/results.json" \
            --reference="${pair%%:*}" --curves="${pair#*:}" | tee -a "$root/bd.txt"
    done
done
echo "tables: $root/bd.txt"
