#!/usr/bin/env bash
# Builds cudarts (Release) in build/ and runs every test with ctest.
# Environment: CUDARTS_CUDA_ARCHS (default 90) -> CMAKE_CUDA_ARCHITECTURES,
#              CUDARTS_CUDA (AUTO | ON | OFF, optional) -> -DCUDARTS_CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

jobs=$(nproc)
config=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=${CUDARTS_CUDA_ARCHS:-90}")
if [ -n "${CUDARTS_CUDA:-}" ]; then
  config+=("-DCUDARTS_CUDA=${CUDARTS_CUDA}")
fi

cmake -S . -B build "${config[@]}"
cmake --build build -j"$jobs"
# --timeout: a default limit for any test without its own TIMEOUT, so that nothing can hang CI.
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 900
