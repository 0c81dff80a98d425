#!/usr/bin/env bash
# Training throughput of `base` on this machine, every trainer and precision back to back on the
# same clips and the same GOP step (docs/TRAINING.md, "Training throughput: each path"):
#   keras fp32   python -m model.train (TF 2.14, the reference trainer)
#   keras bf16   python -m model.train --precision=bf16 (bf16 convolutions, FP32 weights)
#   torch fp32   python -m gpu_train.train --precision=fp32 (the PyTorch mirror)
#   torch bf16   python -m gpu_train.train --precision=bf16 (autocast; what trains base on a CPU with AMX
#                or AVX512-BF16; --precision=auto takes fp32 on one without: emulated bf16 ran 10x slower)
# All from the same weights (the shipped base, or MODEL), everything trained (no frozen part),
# batch 4 x GOP 4 x 128^2 crops of 4 clips of ../shared/data/train/video at half size.
# Each Keras run traces its step first (about a minute, excluded, as the trainer's own speed
# excludes it); the torch runs warm up for STEPS/4 steps (excluded too).
#
# usage: [STEPS=40] [MODEL=DIR] [OUT=runs/throughput] scripts/train_throughput.sh [PATHS...]
#   PATHS: any of keras-fp32 keras-bf16 torch-fp32 torch-bf16 (default: all four)
# Prints one line per path: steps/s and frames/s over the timed steps; logs in OUT/PATH.log.
# Run it on an idle machine: the four paths share the same 2 cores otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-40}
out=${OUT:-runs/throughput}
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(keras-fp32 keras-bf16 torch-fp32 torch-bf16)
for p in "${paths[@]}"; do
  case "$p" in keras-fp32|keras-bf16|torch-fp32|torch-bf16) ;; *)
    echo "train_throughput.sh: unknown path $p (valid: keras-fp32 keras-bf16 torch-fp32 torch-bf16)" >&2; exit 2;;
  esac
done
mkdir -p "$out"
data="$out/clips"
if [ ! -d "$data" ]; then
  mkdir -p "$data"
  for clip in demo__data__gallery__01_dog demo__data__gallery__03_blocks demo__data__gallery__04_coffee images__cockatoo_yuv420; do
    ln -s "$(realpath ../shared/data/train/video/$clip.mp4)" "$data/$clip.mp4"
  done
fi
model=${MODEL:-$out/base_fp32}
if [ -z "${MODEL:-}" ] && [ ! -f "$model/model.index" ]; then  # a TF folder of the shipped weights for Keras
  rm -rf "$model"
  .venv/bin/python -m gpu_train.weights from_npz --npz=runtime/checkpoints/base/weights.npz \
    --config=runtime/checkpoints/base/config.json --out="$model" >/dev/null
fi
config="$model/config.json"
init="$out/init.npz"  # the same FP32 values for the torch runs (made only when one is asked for)
if [[ " ${paths[*]} " == *" torch-"* ]]; then
  rm -f "$init" && .venv/bin/python -m gpu_train.weights to_npz --model="$model" --out="$init" >/dev/null
fi
common_gop=(--gop=4 --batch=4 --crop=128 --downscale=2 --lr=1e-4 --clip_norm=1)
for p in "${paths[@]}"; do
  log="$out/$p.log"
  case "$p" in
    keras-*)
      rm -rf "$out/$p.run"
      .venv/bin/python -m model.train --config=base --block_motion_upsample=bilinear --init_from="$model" \
        --data="$data" --cache_dir="$out/keras_cache" --train_dir="$out/$p.run" "${common_gop[@]}" \
        --lambda_range=0.2,0.001 --steps="$steps" --log_every=$((steps / 4)) --checkpoint_every_secs=0 \
        --precision="${p#keras-}" >"$log" 2>&1
      # the trainer's speed over its last window (the tracing step is outside every window)
      rate=$(grep -o '| [0-9.]* step/s' "$log" | tail -1 | grep -o '[0-9.]*')
      ;;
    torch-*)
      rm -rf "$out/$p.run"
      PYTHONPATH=. .venv-torch/bin/python -m gpu_train.train --config="$config" --init="$init" \
        --data="$data" --cache_dir="$out/torch_cache" --out_dir="$out/$p.run" --minutes=60 \
        --max_steps=$((steps + steps / 4)) "${common_gop[@]}" --lambda_range=0.2,0.001 --phase_warmup=0 \
        --device=cpu --precision="${p#torch-}" --log_every=$((steps / 4)) --save_every_secs=100000 >"$log" 2>&1
      rate=$(grep -o '[0-9.]* steps/s' "$log" | tail -1 | grep -o '^[0-9.]*')
      ;;
  esac
  awk -v p="$p" -v r="$rate" 'BEGIN { printf "%-11s %6.2f steps/s  %6.1f frames/s  (batch 4 x GOP 4 x 128^2)\n", p, r, r * 16 }'
done
