#!/usr/bin/env bash
# A short follow-up on the lent GPU machine, for the time left after a perf/device_check.sh run
# (about 2 minutes, 4-5 with the Nsight Compute step): builds only the targets it needs, runs
# the op-parity cases that match QUICK_PARITY (a gtest filter) and the GPU whole-network cases,
# memcheck and racecheck over the same op-parity cases, the kernel benchmarks (pointwise_bench;
# depthwise_bench with QUICK_DEPTHWISE=1), the search step (darts_bench with the model and the
# op profile, and its A/B QUICK_AB, darts_bench flags) and Nsight Compute's per-kernel table
# (perf/ncu_kernels.sh; QUICK_NCU=0 leaves it out, QUICK_NCU_BUDGET its seconds, default 150).
# summary.txt grows after each step; logs in $OUT/logs.tgz.
# Run from the repository root with .deps carried (scripts/device_deps.sh):
#   QUICK_PARITY='*cuda_conv2d*pw_*' perf/device_quick.sh
set -uo pipefail
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
RESULTS=$OUT
OUT=$(mktemp -d)
trap 'cp "$OUT"/summary.txt "$RESULTS/" 2> /dev/null; tar czf "$RESULTS/logs.tgz" -C "$OUT" .' EXIT
T0=$(date +%s)
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
PARITY=${QUICK_PARITY:-*cuda_conv2d*:*cuda_mix_norm*:*cuda_depthwise_group*:*cuda_batchnorm*}
SANITIZE=${QUICK_SANITIZE:-$PARITY}  # the op-parity cases memcheck and racecheck run
AB=${QUICK_AB:---own-pointwise false}

DEPS=()
if [ -d .deps/root ]; then
  DEPS=(-DCMAKE_PREFIX_PATH="$PWD/.deps/root/usr")
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$PWD/.deps/root/lib/x86_64-linux-gnu"
fi
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCUDARTS_CUDA=ON \
  "${DEPS[@]}" > "$OUT/configure.log" 2>&1 &&
  cmake --build build-gpu -j"$(nproc)" --target test_op_parity test_gpu_network test_step_graph \
    darts_bench pointwise_bench $([ "${QUICK_DEPTHWISE:-0}" = 1 ] && echo depthwise_bench) \
    > "$OUT/build.log" 2>&1
BUILD=$?
summary "device_quick $(date -u +%Y-%m-%dT%H:%MZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) ($(git rev-parse --short HEAD 2>/dev/null)): build rc=$BUILD in $(elapsed) s"
if [ $BUILD -ne 0 ]; then grep -m10 -E "error" "$OUT/build.log"; exit 1; fi

timeout 90 build-gpu/tests/test_op_parity --gtest_filter="$PARITY:OpParityPointwise.*:OpParityDepthwise.*" \
  --gtest_brief=1 > "$OUT/parity.log" 2>&1
summary "op parity ($PARITY): rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/parity.log" | tr '\n' ' ') at $(elapsed) s"
timeout 60 build-gpu/tests/test_gpu_network --gtest_brief=1 > "$OUT/gpu_network.log" 2>&1
summary "GpuNetwork: rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/gpu_network.log" | tr '\n' ' ')"
timeout 60 build-gpu/tests/test_step_graph --gtest_filter='StepGraph.Gpu*' --gtest_brief=1 \
  > "$OUT/step_graph.log" 2>&1
summary "StepGraph.Gpu*: rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/step_graph.log" | tr '\n' ' ')"
grep -B2 -A3 "Failure" "$OUT/parity.log" "$OUT/gpu_network.log" "$OUT/step_graph.log" | head -40

timeout 60 build-gpu/perf/pointwise_bench --json "$OUT/pointwise_bench.json" > "$OUT/pointwise_bench.txt" 2>&1
summary "pointwise_bench: $(tail -1 "$OUT/pointwise_bench.txt") at $(elapsed) s"
cat "$OUT/pointwise_bench.txt"
timeout 60 build-gpu/perf/darts_bench --device cuda --iters 10 --model --op-times 25 \
  > "$OUT/darts_bench.json" 2> "$OUT/darts_bench_model.txt"
summary "darts_bench: $(tail -1 "$OUT/darts_bench.json")"
head -27 "$OUT/darts_bench_model.txt"
# shellcheck disable=SC2086
timeout 45 build-gpu/perf/darts_bench --device cuda --iters 3 --warmup 2 $AB > "$OUT/darts_bench_ab.json" 2>&1
summary "darts_bench ($AB): $(tail -1 "$OUT/darts_bench_ab.json")"
if [ "${QUICK_DEPTHWISE:-0}" = 1 ]; then
  timeout 60 build-gpu/perf/depthwise_bench > "$OUT/depthwise_bench.txt" 2>&1
  summary "depthwise_bench: $(tail -1 "$OUT/depthwise_bench.txt")"
fi

if [ "${QUICK_NCU:-1}" = 1 ]; then  # Nsight Compute: per-kernel times and why (perf/ncu_kernels.sh)
  perf/ncu_kernels.sh build-gpu "$OUT/ncu" "${QUICK_NCU_BUDGET:-150}" > "$OUT/ncu.log" 2>&1
  summary "ncu: $(head -1 "$OUT/ncu.log"); $(head -1 "$OUT/ncu/ncu_kernels.txt" 2> /dev/null) at $(elapsed) s"
  head -60 "$OUT/ncu.log"
fi

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2> /dev/null | head -1)
if [ -n "$SAN" ]; then
  timeout 60 "$SAN" --tool memcheck --error-exitcode 9 build-gpu/tests/test_op_parity \
    --gtest_filter="$SANITIZE" --gtest_brief=1 > "$OUT/memcheck.log" 2>&1
  timeout 60 "$SAN" --tool racecheck build-gpu/tests/test_op_parity --gtest_filter="$SANITIZE" \
    --gtest_brief=1 > "$OUT/racecheck.log" 2>&1
  summary "compute-sanitizer ($SANITIZE): $(grep -hE "(ERROR|RACECHECK) SUMMARY" "$OUT/memcheck.log" "$OUT/racecheck.log" | tr '\n' ' ')"
fi
summary "total $(elapsed) s"
