#!/bin/bash
# Drives training runs on a lent GPU machine across several device calls (each at most 10 min):
#   start SECS  decodes the data, launches every run in gpu_train/runs.txt in the background
#               (setsid: they outlive this call while the machine stays held), watches SECS seconds
#   watch SECS  watches SECS seconds
#   finish SECS waits until every run has written its final checkpoint, or SECS seconds
# At the end of each call the runs' logs, progress and latest weights are copied to $OUT.
# Expects .gpu/data (videos), .gpu/init.npz, and the model config in runtime/checkpoints/small.
mode=$1; secs=$2
work=/tmp/elfvc_gpu
export PYTHONUNBUFFERED=1
if [ "$mode" = start ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cv2', cv2.__version__, 'numpy', numpy.__version__)"
  mkdir -p $work
  while IFS='|' read -r name flags; do
    [ -z "$name" ] && continue
    case "$name" in \#*) continue;; esac
    mkdir -p $work/$name
    setsid nohup python3 -m gpu_train.train --config=runtime/checkpoints/small/config.json --init=.gpu/init.npz \
      --data=.gpu/data --cache_dir=$work/cache_$name --out_dir=$work/$name $flags > $work/$name/log.txt 2>&1 < /dev/null &
    echo "launched $name: $flags"
  done < gpu_train/runs.txt
fi
if [ "$mode" != start ] && ! ls -d $work/*/log.txt >/dev/null 2>&1; then
  # A fresh machine (the last one was given back): nothing to watch, so do not spend device time.
  echo "error: no runs under $work on this machine (it was started fresh); nothing to $mode" >&2; exit 1
fi
end=$(( $(date +%s) + secs ))
while [ $(date +%s) -lt $end ]; do
  sleep 20
  if [ "$mode" = finish ]; then
    done_all=1
    for d in $work/*/; do
      case "$d" in */cache_*) continue;; esac
      grep -q '"final": true' $d/progress.json 2>/dev/null || done_all=0
    done
    [ $done_all = 1 ] && break
  fi
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
for d in $work/*/; do
  case "$d" in */cache_*) continue;; esac
  name=$(basename $d)
  echo "== $name"; tail -4 $d/log.txt
  cp $d/log.txt $OUT/$name.log 2>/dev/null; cp $d/progress.json $OUT/$name.json 2>/dev/null
  cp $d/latest.npz $OUT/$name.npz 2>/dev/null
done
