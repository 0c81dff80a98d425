#!/usr/bin/env bash
# Exports (and pins) one intermediate checkpoint of a train dir as a shipped-model folder, so
# that checkpoints can be compared by their sweeps (model.train --export_to takes the latest).
#
# Reconstructed: the original runs/export_ckpt.sh was never committed (runs/ is gitignored).
# This version points a scratch train dir's checkpoint index at ckpt-N and exports that.
#
# usage: scripts/export_checkpoint.sh TRAIN_DIR N OUT_DIR
#   scripts/export_checkpoint.sh runs/small_v8 942 runs/export_v8_s942
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
train=${1:?usage: scripts/export_checkpoint.sh TRAIN_DIR N OUT_DIR}
n=${2:?usage: scripts/export_checkpoint.sh TRAIN_DIR N OUT_DIR}
out=${3:?usage: scripts/export_checkpoint.sh TRAIN_DIR N OUT_DIR}
[[ -e "$train/ckpt/ckpt-$n.index" ]] || { echo "no $train/ckpt/ckpt-$n" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/ckpt"
for f in "$train"/*.json; do cp "$f" "$scratch/"; done
for f in "$train/ckpt/ckpt-$n".*; do ln -s "$(realpath "$f")" "$scratch/ckpt/"; done
printf 'model_checkpoint_path: "ckpt-%s"\nall_model_checkpoint_paths: "ckpt-%s"\n' "$n" "$n" \
    >"$scratch/ckpt/checkpoint"
"$PY" -m model.train --train_dir="$scratch" --export_to="$out"
"$PY" -m runtime.bundle pin "$out"
