#!/usr/bin/env bash
# Level sweeps of one model on the two eval clips, every half level (15 points, one 16-frame GOP
# plus the rest of street's 21 frames), and optionally their BD-rate against a saved sweep.
#
# Reconstructed: the original runs/sweeps.sh was never committed (runs/ is gitignored). This
# is what docs/BENCHMARKS.md and docs/HISTORY.md say it did: `benchmarks.level_sweep --step=0.5`
# on street (21 frames) and bedroom (16 frames), the JSON kept as out/TAG/sweep_CLIP.json, then
# `level_sweep --load=... --anchor=...` for the BD-rate (PSNR-RGB, over the overlap). Early uses
# wrote out/CLIP_TAG.json instead; the numbers do not depend on the file name.
#
# usage: scripts/sweeps.sh MODEL_DIR TAG [ANCHOR_TAG] [-- LEVEL_SWEEP_FLAGS...]
#   scripts/sweeps.sh runtime/checkpoints/small v8_p0.01                        # the shipped model
#   scripts/sweeps.sh runtime/checkpoints/small v8_mr v8_p0.01 -- --motion_refine
# Writes out/TAG/sweep_street.json and out/TAG/sweep_bedroom.json (about 5 min per clip on
# 2 CPU cores; about 2x that with --motion_refine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EVAL=${EVAL:-../shared/data/eval/video}
model=${1:?usage: scripts/sweeps.sh MODEL_DIR TAG [ANCHOR_TAG] [-- FLAGS...]}
tag=${2:?usage: scripts/sweeps.sh MODEL_DIR TAG [ANCHOR_TAG] [-- FLAGS...]}
shift 2
anchor=""
if [[ $# -gt 0 && $1 != "--" ]]; then anchor=$1; shift; fi
if [[ $# -gt 0 && $1 == "--" ]]; then shift; fi
mkdir -p "out/$tag"
for spec in street:street_320x180_21f.y4m:21 bedroom:bedroom_480x270_100f.y4m:16; do
    IFS=: read -r name file frames <<<"$spec"
    "$PY" -m benchmarks.level_sweep --model="$model" --clip="$EVAL/$file" --step=0.5 \
        --frames="$frames" --out="out/$tag/sweep_$name.json" "$@"
done
if [[ -n $anchor ]]; then
    scripts/bd.sh "$tag" "$anchor"
fi
