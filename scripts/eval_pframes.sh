#!/usr/bin/env bash
# Everything the card decision needs after a P-path run (docs/TRAINING.md, "`base` on this
# CPU"; docs/BENCHMARKS.md, "`base`'s P-frames"), in one command:
#   1. scripts/after_campaign.sh RUN 8: 8-frame level sweeps, new vs shipped, I+P vs all-intra;
#   2. the same on bikes.mp4 (the demo clip), GOP 16 and GOP 1;
#   3. whole clips as a user codes them (bench_rd, scene-cut check on) at GOP 16: street (21
#      frames), bedroom (100), bikes' first 48, each against x264 and against the all-intra curve
#      of the same I-frame codec (bench_rd --gop=1, run once per I-frame codec: cached under
#      out/rd_allintra_<hash of the iframe weights>_<clip>). The caches know the weights, not the
#      encoder: after a change to the encoder's bits (as the one-tile layout of session 17 for
#      bikes.mp4) move them away, or the comparison mixes two encoders.
#   4. the GOP drift on street's 21 frames (level_sweep's drift column), new vs shipped, and the
#      BD-rate of those 21-frame sweeps (the 8-frame sweeps of step 1 do not reach a GOP's end).
# The card moves to GOP 16 when I+P beats all-intra on all three clips (step 3's first column).
#
# usage: [P_OFFSET=X] scripts/eval_pframes.sh RUN_DIR     (~17 min on 2 cores; ~27 the first time for an I-frame codec)
#   P_OFFSET: the GOP 16 runs code P-frames at level + X (--p_level_offset: a number or a pattern a,b,c; default: the shipped card's, base -1.5,-1.5,-1.5,-0.5)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${EVAL:-../shared/data/eval/video}
run=${1:?usage: scripts/eval_pframes.sh RUN_DIR}
B=$("$PY" -c "from model.samples import require_bikes_path; print(require_bikes_path())")
read -r step iframe_hash < <("$PY" -c "
import sys
from gpu_train.weights import iframe_digest, read_arrays
a = read_arrays(sys.argv[1])
print(int(a['step']), iframe_digest(a))" "$run")
# The shipped card's P-frame offset unless P_OFFSET says (a run's model folder has no card, so the
# sweeps pass the offset explicitly, to both models alike)
# (one number, or a pattern "a,b,c" cycled over each GOP's P-frames; model/level_offsets.py)
po=$("$PY" -c "import sys; from model.bundle import given_or_card_p_level_offset as po; print(po(sys.argv[1]))" \
    "${P_OFFSET:-}")  # one spelling: -1.0 and -1 name the same files
g16=gop16
[[ $po == 0 ]] || g16=gop16_po$po
P_OFFSET=$po scripts/after_campaign.sh "$run" 8
model=runs/campaign_s$step
out=out/after_campaign_s$step
bdf=$out/bd${g16#gop16}.txt  # after_campaign.sh's, appended to
# bikes' all-intra sweep depends on the I-frame codec only: swept once per codec, like the whole clips below.
for spec in 16:$out/sweep_bikes_new_$g16.json 1:out/sweep_bikes_allintra_$iframe_hash.json; do
    gop=${spec%%:*}
    f=${spec#*:}
    [[ -f $f ]] || "$PY" -m benchmarks.level_sweep --model="$model" --clip="$B" --step=1 --frames=8 --gop=$gop \
        --p_level_offset="$po" --out="$f" | tail -n 1
done
echo "bikes new $g16 vs all-intra: $("$PY" -m benchmarks.level_sweep --load="$out/sweep_bikes_new_$g16.json" \
    --anchor="out/sweep_bikes_allintra_$iframe_hash.json" 2>&1 | grep -i 'BD-rate\|overlap' || true)" | tee -a "$bdf"
rd() {  # rd OUT_DIR GOP CLIP [MAX_FRAMES]
    [[ -f $1/results.json ]] && return
    "$PY" -m benchmarks.bench_rd --models=base="$model" --clips="$3" ${4:+--max_frames=$4} --anchors=x264 \
        --x264_crf=18,23,28,33,38,43,48,51 --novmaf --gop="$2" --p_level_offset="$po" --out_dir="$1" > "$1.log" 2>&1
}
for spec in street:$E/street_320x180_21f.y4m: bedroom:$E/bedroom_480x270_100f.y4m: bikes48:$B:48; do
    IFS=: read -r name clip frames <<< "$spec"
    rd "out/rd_s${step}_${g16}_$name" 16 "$clip" "$frames"
    rd "out/rd_allintra_${iframe_hash}_$name" 1 "$clip" "$frames"
    "$PY" - "out/rd_s${step}_${g16}_$name/results.json" "out/rd_allintra_${iframe_hash}_$name/results.json" "$name" "$g16" <<'EOF' | tee -a "$bdf"
import json, sys
from benchmarks.bdrate import bd_rate
def curve(path, codec):
    pts = sorted((p for p in json.load(open(path))["points"] if p["codec"] == codec), key=lambda p: p["bpp"])
    return [p["bpp"] for p in pts], [p["metrics"]["psnr_rgb"] for p in pts]
ip, intra, x264 = curve(sys.argv[1], "elfvc"), curve(sys.argv[2], "elfvc"), curve(sys.argv[1], "x264")
print(f"{sys.argv[3]} whole clip, PSNR-RGB BD-rate: I+P ({sys.argv[4]}) vs all-intra {bd_rate(*intra, *ip):+.1f}%; "
      f"vs x264: I+P {bd_rate(*x264, *ip):+.1f}%, all-intra {bd_rate(*x264, *intra):+.1f}%")
EOF
done
# 4. The GOP drift on street's 21 frames (benchmarks.level_sweep's drift column: a GOP's first
#    three P-frames against its last three), new against the shipped model, GOP 16.
S=$E/street_320x180_21f.y4m
for spec in new:$model shipped:runtime/checkpoints/base; do
    f=$out/drift_street_${spec%%:*}_$g16.json
    [[ -f $f ]] || "$PY" -m benchmarks.level_sweep --model="${spec#*:}" --clip="$S" --step=1 --frames=21 --gop=16 \
        --p_level_offset="$po" --out="$f" > /dev/null
done
"$PY" - "$out/drift_street_new_$g16.json" "$out/drift_street_shipped_$g16.json" <<'EOF2' | tee -a "$bdf"
import json, sys
from benchmarks.level_sweep import bd_rate_against, gop_drift
new, shipped = (json.load(open(p)) for p in sys.argv[1:3])
def mean(rows):
    return sum(gop_drift(r) for r in rows) / len(rows)
print(f"street 21 frames, GOP drift (dB, mean over levels 0..7): new {mean(new):.2f}, shipped {mean(shipped):.2f}; "
      f"BD-rate new vs shipped {bd_rate_against(shipped, new):+.1f}%")
EOF2
