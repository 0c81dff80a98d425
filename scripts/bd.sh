#!/usr/bin/env bash
# BD-rate (PSNR-RGB, cubic, over the overlap) of one tag's saved sweeps against other tags',
# clip by clip, from the JSON files scripts/sweeps.sh writes. Codes nothing: seconds.
#
# Reconstructed: the original runs/bd.sh was never committed (runs/ is gitignored). It ran
# `benchmarks.level_sweep --load=out/TAG/sweep_CLIP.json --anchor=out/ANCHOR/sweep_CLIP.json`
# for each clip and each anchor tag, as below.
#
# usage: scripts/bd.sh TAG ANCHOR_TAG [ANCHOR_TAG...]
#   scripts/bd.sh v8_mr v8_p0.01          # prints "BD-rate against ..." per clip
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
tag=${1:?usage: scripts/bd.sh TAG ANCHOR_TAG [ANCHOR_TAG...]}
shift
[[ $# -gt 0 ]] || { echo "usage: scripts/bd.sh TAG ANCHOR_TAG [ANCHOR_TAG...]" >&2; exit 2; }
for anchor in "$@"; do
    for clip in street bedroom; do
        echo "== $tag vs $anchor, $clip"
        "$PY" -m benchmarks.level_sweep --load="out/$tag/sweep_$clip.json" \
            --anchor="out/$anchor/sweep_$clip.json"
    done
done
