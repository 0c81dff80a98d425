#!/usr/bin/env bash
# `slow` and `veryslow` against `medium` and x264 with P-frames (docs/BENCHMARKS.md, "Encoder presets":
# "The presets with P-frames"): whole street (21 frames) and bedroom's first 16 frames, GOP 16
# and the model card's P-frame offsets, each preset's curve and x264's (bench_rd, real files), then
# BD-rate PSNR-RGB and MS-SSIM between them (benchmarks.bd_compare).
#
# usage: scripts/presets_gop16.sh [MODEL]     (default: base, the shipped default)
# Then each preset's encode speed in one process (bedroom's first 16 frames, level 4, GOP 16, after
# a 2-frame warm-up that traces the graphs). Writes out/presets_gop16/NAME-ID/{medium,slow,veryslow}_
# {street,bedroom16}/, .../bd.txt and .../speed.txt, ID the model id's first 12 hex digits (a bench_rd
# run already there is reused: the same weights; a retrained model of the same name gets its own). About
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
"$PY" - "$model" "$E/bedroom_480x270_100f.y4m" "$root" <<'PYEOF' | tee "$root/speed.txt"
import pathlib, sys, time
from model.bundle import load_bundle
from runtime import video_io
from runtime.backends import get_backend
from runtime.ratecontrol import ConstantLevel
from runtime.stream import encode_video
model, clip, root = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
bundle = load_bundle(model)
frames, info = video_io.read_video(clip, 18)
with get_backend("tf", bundle) as backend:
    for preset in ("medium", "slow", "veryslow"):
        kw = dict(fps=info.fps, gop=16, controller=ConstantLevel(4.0), backend=backend, bundle=bundle, preset=preset)
        encode_video(frames[:2], root / "warmup.elfvc", **kw)
        start = time.perf_counter()
        summary = encode_video(frames[2:18], root / f"bedroom_{preset}.elfvc", **kw)
        seconds = time.perf_counter() - start
        print(f"{preset}: 16 frames {frames.shape[2]}x{frames.shape[1]}, GOP 16, level 4: {summary.bpp:.4f} bpp, "
              f"{summary.mean_psnr:.2f} dB, encode {16 / seconds:.2f} fps")
    (root / "warmup.elfvc").unlink()
PYEOF
echo "tables: $root/bd.txt, $root/speed.txt"
