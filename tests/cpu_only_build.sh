#!/usr/bin/env bash
# Builds the CPU-only configuration (CUDARTS_CUDA=OFF, built-in GEMM instead of OpenBLAS) and
# runs its op tests, so that machines without CUDA or OpenBLAS keep working.
# Usage: cpu_only_build.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
cmake -S "$src" -B "$work" -DCUDARTS_CUDA=OFF -DCUDARTS_BLAS=builtin -DCUDARTS_BUILD_SAMPLES=OFF \
  -DCUDARTS_BUILD_PERF=OFF -DCMAKE_BUILD_TYPE=Release > "$work.configure.log" 2>&1 ||
  { cat "$work.configure.log"; exit 1; }
grep -q "built-in GEMM" "$work.configure.log"
cmake --build "$work" -j"$(nproc)" --target test_cpu_ops test_core test_gradcheck > "$work.build.log" 2>&1 ||
  { tail -30 "$work.build.log"; exit 1; }
for t in test_cpu_ops test_core test_gradcheck; do
  OMP_NUM_THREADS=2 "$work/tests/$t" --gtest_brief=1
done
