#!/usr/bin/env bash
# The main job: builds cudarts (Release) and runs the minimal_train sample, one epoch of a
# small CNN on Fashion-MNIST. Arguments go to the program (see: scripts/demo.sh --help).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

config=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=${CUDARTS_CUDA_ARCHS:-90}")
if [ -n "${CUDARTS_CUDA:-}" ]; then
  config+=("-DCUDARTS_CUDA=${CUDARTS_CUDA}")
fi
cmake -S . -B build "${config[@]}" > /dev/null
cmake --build build -j"$(nproc)" --target minimal_train

exec build/samples/minimal_train/minimal_train "$@"
