#!/usr/bin/env bash
# The GPU check of the own depthwise convolution kernels (cuda/depthwise*.cu*), one call on the
# lent machine, well under 10 minutes: builds only what it needs (Release, sm_90), then
#   1. test_depthwise_emulation (the kernels as host code, as on the CPU machine),
#   2. test_op_parity: every CUDA case (the depthwise ones on the own kernels), the depthwise
#      determinism / cuDNN A/B test, the TF32 test,
#   3. compute-sanitizer memcheck, racecheck and synccheck over the depthwise op-parity cases,
#   4. depthwise_bench (validation of every variant, then timings against cuDNN; JSON),
#   5. darts_bench with --own-depthwise true and false (the whole search iteration, A/B),
#   6. test_gpu_network (whole-network parity on the GPU) if time is left.
# summary.txt grows after each step; logs are packed into logs.tgz. Run from the repository
# root with .deps carried (scripts/device_deps.sh): perf/depthwise_check.sh
set -uo pipefail
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
RESULTS=$OUT
OUT=$(mktemp -d)
finish() {
  for f in summary.txt machine.txt depthwise_bench.json depthwise_bench.txt; do
    [ -f "$OUT/$f" ] && cp "$OUT/$f" "$RESULTS/"
  done
  tar czf "$RESULTS/logs.tgz" -C "$OUT" . 2> /dev/null
}
trap finish EXIT
ROOT=$PWD
JOBS=$(nproc)
T0=$(date +%s)
LIMIT=${DEPTHWISE_CHECK_LIMIT:-480}
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
t() {
  local want=$1 left
  shift
  left=$(( LIMIT - $(elapsed) ))
  if [ "$left" -lt 15 ]; then summary "skipped (time): $*"; return 125; fi
  timeout $(( want < left ? want : left )) "$@"
}
errors() { grep -oE "(ERROR SUMMARY|RACECHECK SUMMARY): [0-9]+" "$1" 2>/dev/null | tail -1 | grep -oE "[0-9]+$"; }
gtest() { grep -E "^\[  (PASSED|FAILED|SKIPPED) +\]" "$1" | tr '\n' ' '; }

{
  echo "== machine"; date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -2
} > "$OUT/machine.txt" 2>&1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
CUDNN=${CUDNN_ROOT:-}
for d in /usr/local/cuda /usr $(python3 -c "import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))" 2>/dev/null); do
  if [ -z "$CUDNN" ] && { [ -f "$d/include/cudnn.h" ] || [ -f "$d/include/x86_64-linux-gnu/cudnn.h" ]; }; then CUDNN=$d; fi
done
echo "cuDNN: ${CUDNN:-not found}" >> "$OUT/machine.txt"
DEPS=()
if [ -d "$ROOT/.deps/root" ]; then
  DEPS=(-DCMAKE_PREFIX_PATH="$ROOT/.deps/root/usr")
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$ROOT/.deps/root/lib/x86_64-linux-gnu"
fi
if [ -n "$CUDNN" ] && [ -d "$CUDNN/lib" ]; then export LD_LIBRARY_PATH="$CUDNN/lib:$LD_LIBRARY_PATH"; fi
cat "$OUT/machine.txt"

echo "== build ($(elapsed) s)"
B=build-gpu
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCUDARTS_CUDA=ON \
  -DCUDARTS_BUILD_SAMPLES=OFF ${CUDNN:+-DCUDNN_ROOT=$CUDNN} "${DEPS[@]}" > "$OUT/configure.log" 2>&1 &&
  cmake --build $B -j"$JOBS" --target cudarts test_op_parity test_depthwise_emulation \
    test_gpu_network depthwise_bench darts_bench > "$OUT/build.log" 2>&1
BUILD=$?
tail -3 "$OUT/build.log" 2>/dev/null
if [ $BUILD -ne 0 ]; then
  summary "depthwise_check: build rc=$BUILD on $GPU after $(elapsed) s (configure.log, build.log)"
  grep -m10 -E "error" "$OUT/configure.log" "$OUT/build.log" | tee -a "$OUT/summary.txt"
  exit 1
fi
summary "depthwise_check $(date -u +%Y-%m-%dT%H:%MZ) on ${GPU:-no GPU} ($(git rev-parse --short HEAD 2>/dev/null)), built in $(elapsed) s"
FAILED=0

echo "== tests ($(elapsed) s)"
t 60 $B/tests/test_depthwise_emulation > "$OUT/emulation.log" 2>&1 || FAILED=1
summary "emulation: $(gtest "$OUT/emulation.log")"
t 120 $B/tests/test_op_parity --gtest_filter='*cuda_*:OpParityDepthwise.*:OpParityTf32.*' \
  --gtest_brief=1 > "$OUT/op_parity.log" 2>&1 || FAILED=1
summary "op parity (cuda cases, depthwise A/B, TF32): $(gtest "$OUT/op_parity.log")"
grep -E "Failure|FAILED|error" "$OUT/op_parity.log" | head -20 >> "$OUT/summary.txt"

echo "== compute-sanitizer ($(elapsed) s)"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
  /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
DWF='*cuda_conv2d*dw*'
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck synccheck; do
    t 90 "$SAN" --tool $tool --error-exitcode 9 $B/tests/test_op_parity --gtest_filter="$DWF" \
      --gtest_brief=1 > "$OUT/$tool.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 125 ] && FAILED=1
    summary "$tool over the depthwise cases: rc=$rc, $(errors "$OUT/$tool.log") errors/hazards"
  done
else
  summary "compute-sanitizer: not found"
fi

echo "== depthwise_bench ($(elapsed) s)"
t 120 $B/perf/depthwise_bench --json "$OUT/depthwise_bench.json" > "$OUT/depthwise_bench.txt" 2>&1
rc=$?
[ $rc -ne 0 ] && FAILED=1
summary "depthwise_bench: rc=$rc, $(tail -1 "$OUT/depthwise_bench.txt")"

echo "== darts_bench A/B ($(elapsed) s)"
for own in true false; do
  t 90 $B/perf/darts_bench --device cuda --iters 10 --own-depthwise $own \
    > "$OUT/darts_bench_$own.json" 2>&1
  summary "darts_bench own_depthwise=$own: $(tail -1 "$OUT/darts_bench_$own.json")"
done

echo "== whole network ($(elapsed) s)"
t 120 $B/tests/test_gpu_network --gtest_brief=1 > "$OUT/gpu_network.log" 2>&1 || FAILED=1
summary "test_gpu_network: $(gtest "$OUT/gpu_network.log")"

summary "total $(elapsed) s, failed=$FAILED"
[ "$FAILED" = 0 ]
