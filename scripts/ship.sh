#!/usr/bin/env bash
# Ships new `base` weights as the default model, after scripts/ship_check.sh said they need fewer
# bits on every clip: the mechanical half of docs/TRAINING.md's ship procedure. It
#   1. refuses unless RUN_DIR is a trainer run (progress.json) that finished without diverging and
#      started from the shipped model step, or from a line of such runs that did (each started
#      from the weights of the one its --init names: gpu_train/lineage.py), its model folder
#      runs/campaign_sSTEP (ship_check's) holds exactly RUN_DIR's weights and the shipped config,
#      and runtime/checkpoints/base has no uncommitted change (git keeps what it replaces);
#   2. writes the FP16 compact copy (runtime.bundle compact) beside, with the shipped model card,
#      and codes street's first 8 frames at level 4 with it and with the FP32 folder (the card's
#      P-frame pattern both): past 1% in bytes or 0.05 dB in PSNR it stops, having shipped nothing;
#   3. copies weights.npz and integer_hyper.npz into runtime/checkpoints/base, and last moves
#      training.json on: model_step, gop_steps, image_steps, lambda_range, and a campaigns entry
#      per run of the line made from its progress.json (flags, steps, time, rollbacks) with NOTE;
#      a run trained at another --lambda_range than the card's moves the card's lambda_range too
#      (the encoder presets' rate weights read it) and says so;
#   4. removes the warm copy gpu_train/warm/base when it is not ahead of the shipped step.
# The model card's prose, the README / docs figures and the demo stay a person's work (it lists them).
#
# usage: [EVAL=DIR] scripts/ship.sh RUN_DIR "NOTE"   (~2 min; `git checkout runtime/checkpoints/base` undoes it)
#   RUN_DIR: gpu_train.train's --out_dir (weight shards and progress.json), already through ship_check
#   NOTE: what the run was, the command included, for training.json's campaigns entry
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${EVAL:-../shared/data/eval/video}
run=${1:?usage: scripts/ship.sh RUN_DIR "NOTE"}
note=${2:?usage: scripts/ship.sh RUN_DIR "NOTE" (what the run was, for training.json)}
dest=runtime/checkpoints/base
clip=$E/street_320x180_21f.y4m
fail() { echo "ship: $*" >&2; exit 1; }
[[ -f $run/progress.json ]] || fail "$run has no progress.json (a gpu_train.train --out_dir is needed)"
[[ -f $clip ]] || fail "no $clip (EVAL=DIR names the eval videos' folder)"
[[ -z $(git status --porcelain -- "$dest") ]] || fail "$dest has uncommitted changes; commit or restore them first"
step=$("$PY" - "$run" "$dest" <<'EOF'
import json, pathlib, sys
from gpu_train.lineage import LineageError, read_progress, run_chain
run, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
shipped = json.loads((dest / "training.json").read_text())["model_step"]
try:
    step = read_progress(run)["model_step"]
    run_chain(run, shipped)
except LineageError as e:
    sys.exit(f"ship: {e}")
model = pathlib.Path(f"runs/campaign_s{step}")
if not (model / "config.json").is_file():
    sys.exit(f"ship: no {model}: run scripts/ship_check.sh {run} first (it builds and measures it)")
if json.loads((model / "config.json").read_text()) != json.loads((dest / "config.json").read_text()):
    sys.exit(f"ship: {model}/config.json differs from {dest}'s: a config change is shipped by hand")
import numpy as np
from gpu_train.weights import keras_arrays, read_arrays
ours, theirs = read_arrays(run), keras_arrays(model)
if set(ours) != set(theirs) or any(not np.array_equal(np.asarray(ours[k], np.float32), np.asarray(theirs[k], np.float32))
                                   for k in ours if k != "step"):
    sys.exit(f"ship: {model} does not hold {run}'s weights (another run ending at step {step}?): move it away, rerun ship_check")
print(step)
EOF
)
model=runs/campaign_s$step
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m runtime.bundle compact "$model" "$tmp/compact" > "$tmp/compact.log" 2>&1 || { cat "$tmp/compact.log" >&2; fail "compact failed"; }
"$PY" - "$run" "$dest" "$tmp/compact/model_card.json" <<'EOF'  # codes as the shipped folder will
import json, pathlib, sys
from gpu_train.lineage import chain_lambda_range, run_chain
dest, compact_card = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
card = json.loads((dest / "model_card.json").read_text())
shipped = json.loads((dest / "training.json").read_text())["model_step"]
lambda_range = chain_lambda_range(run_chain(sys.argv[1], shipped))
if lambda_range is not None and lambda_range != card.get("lambda_range"):
    print(f"model card: lambda_range {card.get('lambda_range')} -> {lambda_range} (the run's --lambda_range)")
    card["lambda_range"] = lambda_range
# The shipped folder's own model id (elfvc models shows it; a wrong-model error names the shipped
# model that reads a stream).
from model.bundle import load_bundle
card["model_id"] = load_bundle(compact_card.parent).model_id.hex()
compact_card.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
print(f"model card: model id {card['model_id']}")
EOF
po=$("$PY" -c "from model.bundle import given_or_card_p_level_offset as po; print(po(''))")
for which in compact fp32; do
    folder=$tmp/compact; [[ $which == fp32 ]] && folder=$model
    "$PY" -m runtime.cli encode "$clip" "$tmp/$which.elfvc" --model="$folder" --level=4 --frames=8 \
        --p_level_offset="$po" > "$tmp/$which.txt" 2> "$tmp/$which.log" || { cat "$tmp/$which.log" >&2; fail "encoding with $folder failed"; }
    tail -1 "$tmp/$which.txt"
done
"$PY" - "$tmp/compact.txt" "$tmp/fp32.txt" <<'EOF'
import re, sys
def read(path):
    text = open(path).read()
    return float(re.search(r"([\d.]+) bpp", text).group(1)), float(re.search(r"PSNR ([\d.]+) dB", text).group(1))
(b16, p16), (b32, p32) = read(sys.argv[1]), read(sys.argv[2])
print(f"compact FP16 against FP32: {b16 / b32 - 1:+.2%} bits, {p16 - p32:+.3f} dB")
if abs(b16 / b32 - 1) > 0.01 or abs(p16 - p32) > 0.05:
    sys.exit("ship: the compact copy codes too far from the FP32 weights; nothing was shipped")
EOF
cp "$tmp/compact/weights.npz" "$tmp/compact/integer_hyper.npz" "$tmp/compact/model_card.json" "$dest/"
"$PY" - "$run" "$dest/training.json" "$note" <<'EOF'
import json, pathlib, sys
from gpu_train.lineage import record_chain, run_chain, run_name
run, path, note = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
training = json.loads(path.read_text())
chain = run_chain(run, training["model_step"])
path.write_text(json.dumps(record_chain(training, chain, note), indent=1) + "\n")
print(f"training.json: {len(chain)} run(s): {', '.join(run_name(r) for r in chain)}")
EOF
# A warm copy the shipped weights have caught up with would only travel in every GPU call
# (gpu_train.campaign.default_init passes it over): removed, to be committed with the ship.
warm=gpu_train/warm/base
if [[ -d $warm ]]; then
    wstep=$("$PY" -c "import pathlib, sys; from gpu_train.weights import warm_step; print(warm_step(pathlib.Path(sys.argv[1])))" "$warm")
    if (( wstep <= step )); then
        git rm -rq "$warm" 2>/dev/null || rm -rf "$warm"
        echo "removed the warm copy $warm (model step $wstep, not ahead of $step)"
    fi
fi
echo "shipped model step $step into $dest. By hand: model_card.json's description (its figures), README /
WORKSPACE / docs/BENCHMARKS.md / TRAINING.md / HISTORY.md, \`python -m runtime.demo\`, then the suite."
