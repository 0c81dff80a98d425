#!/usr/bin/env bash
# Trains the shipped `base` model's P path on this CPU (the I-frame codec frozen), continuing from
# the newest committed weights (gpu_train/warm/base when there is one, else the shipped): the recipe
# in docs/TRAINING.md, "`base` on this CPU"; every run of it in docs/RUNS.md. Writes weight shards
# to OUT every 5 min; afterwards `scripts/ship_check.sh OUT` measures them against the shipped
# model. Batch 8 x GOP 4 x 128^2
# since session 35: at equal time it beat the batch 4 of every earlier run by about 5% on every clip
# (docs/RUNS.md, the thirty-second run); --batch=4 gives the earlier recipe. bf16 where the CPU has
# bf16 instructions (AMX, AVX512-BF16), else FP32 (--precision=auto: emulated bf16 ran 10x slower).
#
# usage: scripts/train_ppath_cpu.sh [OUT] [MINUTES] [TRAIN FLAGS...]   (default runs/cpu_ppath, 75)
#   extra flags go to gpu_train.train after these (the last one of a flag wins), e.g. --gop=8 --batch=2
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cpu_ppath}
minutes=${2:-75}
shift $(( $# < 2 ? $# : 2 ))
# The shipped card's rate weights (model_card.json lambda_range; 0.2,0.0002 since step 76435), so a
# continuation keeps the shipped levels; a later --lambda_range wins.
lam=$(python3 -c "import json; print(','.join(f'{v:g}' for v in json.load(open('runtime/checkpoints/base/model_card.json'))['lambda_range']))")
# The newest committed weights, as the GPU campaign takes them: the warm copy gpu_train/warm/base
# (training ahead of the shipped model, committed with its line of runs) when there is one.
# (gpu_train.campaign.default_init: a copy at or behind the shipped step is passed over).
init=$(python3 -c "from gpu_train.campaign import default_init; print(default_init('base'))")
PYTHONPATH=. exec .venv-torch/bin/python -m gpu_train.train --config=runtime/checkpoints/base/config.json \
  --init="$init" --data=../shared/data/train/video --cache_dir=runs/cache --downscale=2 \
  --out_dir="$out" --minutes="$minutes" --batch=8 --gop=4 --crop=128 --precision=auto --device=cpu --freeze=iframe \
  --lambda_range="$lam" --lr=2e-4 --clip_norm=1 --phase_warmup=0 --log_every=50 --save_every_secs=300 "$@"
