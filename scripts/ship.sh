#!/usr/bin/env bash
# Ships new `base` weights as the default model, after scripts/ship_check.sh said they need fewer
# bits on every clip: the mechanical half of docs/TRAINING.md's ship procedure. It
#   1. refuses unless RUN_DIR is a finished trainer run (progress.json, final) ahead of the shipped
#      model step, its model folder runs/campaign_sSTEP (ship_check's) has the shipped config.json,
#      and runtime/checkpoints/base has no uncommitted change (git keeps what it replaces);
#   2. writes the FP16 compact copy (runtime.bundle compact) over weights.npz and integer_hyper.npz;
#   3. moves training.json on: model_step, gop_steps, image_steps, and a campaigns entry made from
#      the run's progress.json (its flags, steps, time, rollbacks) with NOTE;
#   4. codes street's first 8 frames at level 4 with the compact copy and with the FP32 folder (the
#      card's P-frame pattern both) and fails past 1% in bytes or 0.05 dB in PSNR.
# The model card's prose, the README / docs figures and the demo stay a person's work (it lists them).
#
# usage: scripts/ship.sh RUN_DIR "NOTE"   (~2 min; `git checkout runtime/checkpoints/base` undoes it)
#   RUN_DIR: gpu_train.train's --out_dir (weight shards and progress.json), already through ship_check
#   NOTE: what the run was, the command included, for training.json's campaigns entry
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
run=${1:?usage: scripts/ship.sh RUN_DIR "NOTE"}
note=${2:?usage: scripts/ship.sh RUN_DIR "NOTE" (what the run was, for training.json)}
dest=runtime/checkpoints/base
fail() { echo "ship: $*" >&2; exit 1; }
[[ -f $run/progress.json ]] || fail "$run has no progress.json (a gpu_train.train --out_dir is needed)"
[[ -z $(git status --porcelain -- "$dest") ]] || fail "$dest has uncommitted changes; commit or restore them first"
step=$("$PY" -c "import sys; from gpu_train.weights import read_arrays; print(int(read_arrays(sys.argv[1])['step']))" "$run")
shipped=$("$PY" -c "import json; print(json.load(open('$dest/training.json'))['model_step'])")
(( step > shipped )) || fail "$run ends at model step $step, not after the shipped $shipped"
model=runs/campaign_s$step
[[ -f $model/config.json ]] || fail "no $model: run scripts/ship_check.sh $run first (it builds and measures it)"
"$PY" -c "import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))" \
    "$model/config.json" "$dest/config.json" || fail "$model/config.json differs from $dest's: a config change is shipped by hand"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m runtime.bundle compact "$model" "$tmp/compact" > "$tmp/compact.log" 2>&1 || { cat "$tmp/compact.log" >&2; fail "compact failed"; }
"$PY" - "$run" "$dest/training.json" "$step" "$note" <<'EOF'
import datetime, json, pathlib, sys
run, path, step, note = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
progress = json.loads((run / "progress.json").read_text())
if not progress.get("final"):
    sys.exit(f"ship: {run}/progress.json is not final (the run was cut): ship_check its last shards by hand")
training = json.loads(path.read_text())
args = progress["args"]
entry = {
    "date": datetime.date.today().isoformat(),
    "device": "CPU (PyTorch bf16 autocast)" if args["device"] == "cpu" else f"{args['device']} ({args['precision']})",
    "freeze": args.get("freeze") or None, "batch": args["batch"], "gop": args["gop"], "crop": args["crop"],
    "lr": args["lr"], "clip_norm": args["clip_norm"], "rollbacks": len(progress.get("rollbacks", [])),
    "block_motion_upsample": progress["config"].get("block_motion_upsample"),
    "gop_steps": progress["gop_steps"], "image_steps": progress["image_steps"],
    "minutes": round(progress["elapsed_s"] / 60, 1), "seed": args["seed"],
    "rollout": args.get("rollout", 0), "rollout_frac": args.get("rollout_frac"),
    "note": f"{note}; model step {step}",
}
training["campaigns"].append({k: v for k, v in entry.items() if v is not None})
training["model_step"] = step
training["gop_steps"] += progress["gop_steps"]
training["image_steps"] += progress["image_steps"]
path.write_text(json.dumps(training, indent=1) + "\n")
EOF
cp "$tmp/compact/weights.npz" "$tmp/compact/integer_hyper.npz" "$dest/"
clip=../shared/data/eval/video/street_320x180_21f.y4m
po=$("$PY" -c "from model.bundle import given_or_card_p_level_offset as po; print(po(''))")
for which in "$dest" "$model"; do
    .venv/bin/elfvc encode "$clip" "$tmp/$(basename "$which").elfvc" --model="$which" --level=4 --frames=8 \
        --p_level_offset="$po" 2>/dev/null | tail -1 | tee "$tmp/$(basename "$which").txt"
done
"$PY" - "$tmp/base.txt" "$tmp/campaign_s$step.txt" <<'EOF'
import re, sys
def read(path):
    text = open(path).read()
    return float(re.search(r"([\d.]+) bpp", text).group(1)), float(re.search(r"PSNR ([\d.]+) dB", text).group(1))
(b16, p16), (b32, p32) = read(sys.argv[1]), read(sys.argv[2])
print(f"compact FP16 against FP32: {b16 / b32 - 1:+.2%} bits, {p16 - p32:+.3f} dB")
if abs(b16 / b32 - 1) > 0.01 or abs(p16 - p32) > 0.05:
    sys.exit("ship: the compact copy codes too far from the FP32 weights; `git checkout runtime/checkpoints/base` undoes this")
EOF
echo "shipped model step $step into $dest. By hand: model_card.json's description (its figures), README /
WORKSPACE / docs/BENCHMARKS.md / TRAINING.md / HISTORY.md, \`python -m runtime.demo\`, then the suite."
