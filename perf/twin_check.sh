#!/usr/bin/env bash
# Exports one DARTS search step from cudarts (CPU) and checks it against PyTorch autograd.
# Usage: twin_check.sh DARTS_EXPORT TORCH_DARTS_PY WORKDIR [DEVICE]. Exit 77 = skipped.
set -euo pipefail
export_bin=$1 script=$2 work=$3 device=${4:-cpu}
py=${CUDARTS_TORCH_PYTHON:-python3}
if ! "$py" -c "import torch, safetensors" 2> /dev/null; then
  echo "torch_twin: skipped: '$py' cannot import torch and safetensors (set CUDARTS_TORCH_PYTHON)"
  exit 77
fi
mkdir -p "$work"
"$export_bin" --device "$device" --out "$work/twin_small.safetensors" --channels 4 --cells 5 \
  --size 16 --batch-size 8 --seed 1
"$py" "$script" check "$work/twin_small.safetensors"
"$export_bin" --device "$device" --out "$work/twin_full.safetensors" --channels 16 --cells 8 \
  --size 32 --batch-size 8 --seed 3
"$py" "$script" check "$work/twin_full.safetensors"
