#!/usr/bin/env bash
# Builds the CPU-only configuration (CUDARTS_CUDA=OFF, built-in GEMM instead of OpenBLAS) with
# AddressSanitizer and UndefinedBehaviorSanitizer, and runs the op, core, gradient-check and
# StepGraph tests in it: machines without CUDA or OpenBLAS keep working, and memory errors
# (out-of-bounds, use-after-free, leaks) or undefined behaviour in the library fail the test.
# Usage: cpu_only_build.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$src" -B "$work" -DCUDARTS_CUDA=OFF -DCUDARTS_BLAS=builtin -DCUDARTS_BUILD_SAMPLES=OFF \
  -DCUDARTS_BUILD_PERF=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" > "$work.configure.log" 2>&1 ||
  { cat "$work.configure.log"; exit 1; }
grep -q "built-in GEMM" "$work.configure.log"
tests=(test_cpu_ops test_core test_gradcheck test_step_graph)
cmake --build "$work" -j"$(nproc)" --target "${tests[@]}" > "$work.build.log" 2>&1 ||
  { tail -30 "$work.build.log"; exit 1; }
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
for t in "${tests[@]}"; do
  OMP_NUM_THREADS=2 "$work/tests/$t" --gtest_brief=1
done
