#!/usr/bin/env bash
# The training lineage of the shipped model (runtime/checkpoints/small/, model id
# 95ca05942f513341758070955765ac58, model step 30532), stage by stage, on CPU except stage 6a.
# About 10.5 h of 2-core CPU and 12 min of one H100 in all. docs/HISTORY.md has what each
# stage gave; docs/TRAINING.md how the trainer works.
#
# Reconstructed from WORKSPACE.md's records: the original runs/small_*.sh were never committed
# (runs/ is gitignored). How exact each stage is:
#   exact (command recorded verbatim): 3, 4, 6b, 7, 7c, 8 and the exports;
#   flags recorded in words, assembled here: 1, 2, 5d, 7b (7b = 7's flags with the changes named);
#   NOT reproducible exactly: 5a-5c were stopped by hand at the step counts below, with a larger
#   --steps that was not recorded (so no lr drop happened in them); here --steps is the stop
#   step, which drops the lr at 80%/95% of it. 6a ran on a GPU through gpu_train (below).
# Where a stage warm-started from runtime/checkpoints/small (then the previous stage's model),
# it starts here from that stage's export folder, the same bytes.
# Training is not deterministic across machines; rerunning gives a model of the same kind, not
# the same bytes. Run one stage at a time.
#
# usage: scripts/train_shipped.sh STAGE   (1 2 3 4 5a 5b 5c 5d 6a 6b 7 7b 7c 8)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/train/video}
COMMON="--config=small --data=$DATA --downscale=2 --cache_dir=runs/frame_cache --crop=128 --log_every=25"
train() { "$PY" -m model.train $COMMON "$@"; }
export_pin() { "$PY" -m model.train --train_dir="$1" --export_to="$2" && "$PY" -m runtime.bundle pin "$2"; }

case ${1:?usage: scripts/train_shipped.sh STAGE (1 2 3 4 5a 5b 5c 5d 6a 6b 7 7b 7c 8)} in
1)  # I-frame codec alone, GOP 1 (7.5 min).
    train --lambda_range=low --lr=2e-4 --checkpoint_every_secs=600 \
        --train_dir=runs/small_v1_iframe --gop=1 --batch=8 --steps=2000 ;;
2)  # IPPP from stage 1's I-frame codec, P-frame heads zero-initialised (46 min under load).
    train --lambda_range=low --lr=2e-4 --checkpoint_every_secs=600 \
        --train_dir=runs/small_v1 --gop=4 --batch=4 --steps=2500 \
        --init_from=runs/small_v1_iframe --init_scope=iframe ;;
3)  # Per-level Q_w on every codelayer, spread 4 -> 0.5 (112 min).
    train --lambda_range=low --lr=2e-4 --checkpoint_every_secs=600 \
        --train_dir=runs/small_v2 --gop=4 --batch=4 --steps=11000 \
        --quant_width=4,0.5 --pframe_quant_width --init_from=runs/small_v1 --init_scope=all
    export_pin runs/small_v2 runs/export_v3 ;;
4)  # GOP 8, spread 12 -> 0.5, a costlier level 0 (87 min).
    train --lambda_range=0.08,0.0002 --lr=1e-4 --checkpoint_every_secs=600 \
        --train_dir=runs/small_v4 --gop=8 --batch=4 --steps=3600 \
        --quant_width=12,0.5 --pframe_quant_width --init_from=runs/export_v3 --init_scope=all
    export_pin runs/small_v4 runs/export_v4 ;;
5a) # The whole level range moved down: spread 32 -> 2, lambda 0.25 -> 0.0026 (stopped at 569).
    train --lambda_range=0.25,0.0026 --lr=1e-4 --train_dir=runs/small_v5 --gop=8 --batch=4 --steps=569 \
        --quant_width=32,2 --pframe_quant_width --init_from=runs/export_v4 --init_scope=all ;;
5b) # + the flow at Q_w 1 and the auxiliary motion loss (stopped at 675).
    train --lambda_range=0.25,0.0026 --lr=1e-4 --train_dir=runs/small_v5b --gop=8 --batch=4 --steps=675 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=1,1 --warp_loss=1 --warp_loss_steps=2000 \
        --init_from=runs/small_v5 --init_scope=all ;;
5c) # The same without the motion loss (stopped at 1379: the P-frame loop ran away after frame 11).
    train --lambda_range=0.25,0.0026 --lr=1e-4 --train_dir=runs/small_v5c --gop=8 --batch=4 --steps=1379 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=1,1 \
        --init_from=runs/small_v5b --init_scope=all ;;
5d) # GOP 16, batch 2 (46 min).
    train --lambda_range=0.25,0.0026 --lr=1e-4 --train_dir=runs/small_v5d --gop=16 --batch=2 --steps=1400 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=1,1 \
        --init_from=runs/small_v5c --init_scope=all
    export_pin runs/small_v5d runs/export_v5 ;;
6a) # On a GPU without TensorFlow (gpu_train; docs/GPU.md). 659 steps in 12 min on one H100
    # (the run `cont` of gpu_train/runs.txt, launched by gpu_train/device_session.sh; the device
    # was taken back before the lr drop). The torch side, then the way back:
    "$PY" -m gpu_train.weights to_npz --model=runs/export_v5 --out=.gpu/init.npz
    echo "on the GPU: python3 -m gpu_train.train --config=runs/export_v5/config.json --init=.gpu/init.npz" \
         "--data=.gpu/data --out_dir=gpu1/cont --minutes=21 --batch=16 --gop=16 --crop=128 --lr=1e-4" \
         "--lambda_range=0.25,0.0026 --seed=1"
    echo "then: $PY -m gpu_train.weights from_npz --npz=runs/gpu1/cont.npz --config=runs/export_v5/config.json" \
         "--out=runs/export_g1_cont --metadata=runs/gpu1/cont.meta.json && $PY -m runtime.bundle pin runs/export_g1_cont" ;;
6b) # The lr decay 6a never reached, on CPU (68 min).
    train --lambda_range=0.25,0.0026 --lr=2e-5 --train_dir=runs/small_v6b --gop=16 --batch=2 --steps=1800 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=1,1 \
        --init_from=runs/export_g1_cont --init_scope=all
    export_pin runs/small_v6b runs/export_v6b ;;
7)  # The encoder-side block motion search on, radius 8 (37 min).
    train --lambda_range=0.25,0.0026 --lr=5e-5 --train_dir=runs/small_v7 --gop=16 --batch=2 --steps=1250 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=1,1 --motion_search_radius=8 \
        --init_from=runs/export_v6b --init_scope=all
    export_pin runs/small_v7 runs/export_v7 ;;
7b) # Penalty 0.01, the flow's Q_w re-spread 4 -> 1 (50 min).
    train --lambda_range=0.25,0.0026 --lr=3e-5 --train_dir=runs/small_v7b --gop=16 --batch=2 --steps=1200 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=4,1 --motion_search_radius=8 \
        --motion_search_penalty=0.01 --init_from=runs/export_v7 --init_scope=all
    export_pin runs/small_v7b runs/export_v7b ;;
7c) # 2000 more steps at lr 2e-5 (61 min); shipped with the search penalty 0.03.
    train --lambda_range=0.25,0.0026 --lr=2e-5 --train_dir=runs/small_v7c --gop=16 --batch=2 --steps=2000 \
        --quant_width=32,2 --pframe_quant_width --flow_quant_width=4,1 --motion_search_radius=8 \
        --motion_search_penalty=0.01 --init_from=runs/export_v7b --init_scope=all
    "$PY" -m model.train --train_dir=runs/small_v7c --export_to=runs/export_v7c
    cp -r runs/export_v7c runs/export_v7c_p0.03
    sed -i 's/"motion_search_penalty": [0-9.e-]*/"motion_search_penalty": 0.03/' runs/export_v7c_p0.03/config.json
    "$PY" -m runtime.bundle pin runs/export_v7c_p0.03 ;;
8)  # The rate range widened: I-frame/residue Q_w 64 -> 1.4, lambda 0.6 -> 0.0011 (88 min). Shipped.
    train --lambda_range=0.6,0.0011 --lr=3e-5 --train_dir=runs/small_v8 --gop=16 --batch=2 --steps=2500 \
        --quant_width=64,1.4 --pframe_quant_width --flow_quant_width=4,1 --motion_search_radius=8 \
        --motion_search_penalty=0.01 --init_from=runs/export_v7c_p0.03 --init_scope=all
    "$PY" -m model.train --train_dir=runs/small_v8 --export_to=runs/export_v8
    cp -r runs/export_v8 runs/export_v8_p0.01 && "$PY" -m runtime.bundle pin runs/export_v8_p0.01 ;;
*)  echo "unknown stage $1" >&2; exit 2 ;;
esac
