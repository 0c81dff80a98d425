#!/usr/bin/env bash
# Creates .venv beside this script and installs the pinned requirements and this package into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "error: Python 3.11 is required (tensorflow-compression 2.14.1 has wheels for 3.9-3.11); set PYTHON=" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# Optional: a CPU torch environment for the PyTorch training mirror's tests (gpu_train/, used on
# lent GPU machines that have torch but no TensorFlow). torch and TF 2.14 do not share one
# environment here. Only a CPU build is taken (never PyPI's CUDA build, gigabytes); where none is
# available the step is skipped and tests/test_gpu_train.py says so. ELFVC_SKIP_TORCH=1 skips it.
if [ "${ELFVC_SKIP_TORCH:-0}" != 1 ] && ! .venv-torch/bin/python -c "import torch, imageio_ffmpeg, PIL" 2>/dev/null; then
  rm -rf .venv-torch
  if ! { "$PYTHON" -m venv .venv-torch && .venv-torch/bin/python -m pip install --quiet --disable-pip-version-check \
      --only-binary=:all: "torch==2.13.0+cpu" "numpy<2" "imageio-ffmpeg==0.8.1" "pillow==10.4.0"; }; then
    echo "warning: no CPU torch 2.13.0+cpu wheel here; skipping .venv-torch (gpu_train tests will skip)" >&2
    rm -rf .venv-torch
  fi
fi
