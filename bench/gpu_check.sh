#!/usr/bin/env bash
# GPU check (bench/gpu_check.py): ResNet50 (weights none) on a 200-class synth at 224 px, bf16 +
# channels_last on CUDA; prints images/s of training and extraction, the solver's time on the
# device and peak GPU memory, then the same training with train.nproc=2 where 2 GPUs exist.
# Sized for < 8 minutes on one H200 (synth generation, single-threaded, is about half of it).
#
#   bench/gpu_check.sh [OUT_DIR] [gpu_check.py options, e.g. --toy --device cpu]
#
# The figures land in OUT_DIR/gpu_check.json (default: ${TMPDIR:-/tmp}/qsenn_gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
out=${1:-${TMPDIR:-/tmp}/qsenn_gpu_check}
shift || true
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$python" bench/gpu_check.py --out "$out" "$@"
