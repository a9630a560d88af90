#!/usr/bin/env bash
# The one script for the lent GPU machine (one call, well under 10 minutes on an H100):
# prints what the machine has, builds Release for sm_90 with every core, runs the whole ctest
# suite (GPU cases included), the speed comparison in one run (darts_bench with the cost model
# and the op profile, its cuDNN-depthwise A/B, PyTorch eager and CUDA graph, the per-shape
# depthwise table), minimal_train for one epoch on the GPU, compute-sanitizer memcheck over the
# GPU op-parity cases, the StepGraph cases and one whole DARTS step, racecheck over the
# hand-written reduction and depthwise kernels, the PyTorch twin check and, with the time left,
# Nsight Compute's per-kernel tables (perf/ncu_kernels.sh). summary.txt (a short table) grows
# after each step; steps that would pass the time limit (DEVICE_CHECK_LIMIT, default 540 s
# from the start) are skipped and listed.
# Logs go to $OUT. Run from the repository root with .deps carried (scripts/device_deps.sh):
#   perf/device_check.sh
set -uo pipefail
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
# At most 8 files come back from the device machine: the logs go to a scratch folder and are
# packed into $RESULTS/logs.tgz at exit, beside summary.txt, failed.txt, machine.txt and
# skipped.txt.
RESULTS=$OUT
OUT=$(mktemp -d)
finish() {
  for f in summary.txt failed.txt machine.txt skipped.txt; do
    [ -f "$OUT/$f" ] && cp "$OUT/$f" "$RESULTS/"
  done
  tar czf "$RESULTS/logs.tgz" -C "$OUT" --exclude='*.safetensors' . 2> /dev/null
}
trap finish EXIT
ROOT=$PWD
JOBS=$(nproc)
T0=$(date +%s)
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
elapsed() { echo $(( $(date +%s) - T0 )); }

# ---------------------------------------------------------------- the machine
{
  echo "== machine"; date -u; uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -2
  cmake --version | head -1; g++ --version | head -1
  command -v compute-sanitizer; command -v python3 && python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
} > "$OUT/machine.txt" 2>&1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# cuDNN: the toolkit, CUDNN_ROOT, or PyTorch's nvidia-cudnn wheel.
CUDNN=${CUDNN_ROOT:-}
for d in /usr/local/cuda /usr $(python3 -c "import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))" 2>/dev/null); do
  if [ -z "$CUDNN" ] && { [ -f "$d/include/cudnn.h" ] || [ -f "$d/include/x86_64-linux-gnu/cudnn.h" ]; }; then CUDNN=$d; fi
done
echo "cuDNN: ${CUDNN:-not found}" >> "$OUT/machine.txt"
DEPS=()
if [ -d "$ROOT/.deps/root" ]; then  # carried by scripts/device_deps.sh: GTest, JSON, CLI11, zlib
  DEPS=(-DCMAKE_PREFIX_PATH="$ROOT/.deps/root/usr")
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$ROOT/.deps/root/lib/x86_64-linux-gnu"
fi
DATA=/usr/share/datasets/fashion-mnist
[ -d "$ROOT/.deps/fashion-mnist" ] && DATA=$ROOT/.deps/fashion-mnist
if [ -n "$CUDNN" ] && [ -d "$CUDNN/lib" ]; then export LD_LIBRARY_PATH="$CUDNN/lib:$LD_LIBRARY_PATH"; fi
cat "$OUT/machine.txt"

# ---------------------------------------------------------------- build
echo "== build ($(elapsed) s)"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCUDARTS_CUDA=ON ${CUDNN:+-DCUDNN_ROOT=$CUDNN} "${DEPS[@]}" > "$OUT/configure.log" 2>&1
CONF=$?
BUILD=1
if [ $CONF -eq 0 ]; then
  cmake --build build-gpu -j"$JOBS" > "$OUT/build.log" 2>&1
  BUILD=$?
fi
tail -5 "$OUT/configure.log"; tail -5 "$OUT/build.log" 2>/dev/null
if [ $BUILD -ne 0 ]; then
  summary "device_check: configure rc=$CONF build rc=$BUILD on $GPU after $(elapsed) s; see configure.log/build.log"
  grep -m5 -E "error|Error" "$OUT/configure.log" "$OUT/build.log"
  exit 1
fi

# ---------------------------------------------------------------- tests
# Every later step runs under `t`: a timeout no longer than the time left before $LIMIT, and
# skipped (listed in skipped.txt) when less than 15 s are left. summary.txt grows after each
# step, so a run cut short still reports what it did.
LIMIT=${DEVICE_CHECK_LIMIT:-540}
t() {
  local want=$1 left
  shift
  left=$(( LIMIT - $(elapsed) ))
  if [ "$left" -lt 15 ]; then echo "skipped (time): $*" >> "$OUT/skipped.txt"; return 125; fi
  timeout $(( want < left ? want : left )) "$@"
}
errors() { grep -oE "(ERROR SUMMARY|RACECHECK SUMMARY): [0-9]+" "$1" 2>/dev/null | tail -1 | grep -oE "[0-9]+$"; }
summary "device_check $(date -u +%Y-%m-%dT%H:%MZ) on ${GPU:-no GPU} ($(git rev-parse --short HEAD 2>/dev/null)), built in $(elapsed) s"

echo "== ctest ($(elapsed) s)"
export FASHION_MNIST_DIR=$DATA
# Not here: the nested CPU-only/sanitizer build and the install test configure fresh trees that
# would not see the carried .deps (CI runs them), the CPU twin (the GPU twin runs below) and the
# CPU-backend MPI runs (the NCCL case runs below).
# Also left to CI: the CPU-only program tests (killed runs, exit statuses) and the fuzzing.
t 240 ctest --test-dir build-gpu -j"$JOBS" --timeout 120 --output-on-failure \
  -E "^(cpu_only_build|install_consumer|torch_twin_cpu|fuzz_short|killed_runs|program_exits|mpi)$" \
  > "$OUT/ctest.log" 2>&1
PASSED=$(grep -c " Passed " "$OUT/ctest.log"); FAILED=$(grep -cE "\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout" "$OUT/ctest.log")
SKIPPED=$(grep -c "\*\*\*Skipped" "$OUT/ctest.log")  # (the closing list repeats each name)
grep -E "\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout" "$OUT/ctest.log" | head -20 > "$OUT/failed.txt"
tail -3 "$OUT/ctest.log"
summary "tests: $PASSED passed, $FAILED failed, $SKIPPED skipped (ctest.log, failed.txt) at $(elapsed) s"

# ---------------------------------------------------------------- the speed comparison
# One run, same GPU: cudarts eager and graph replay (own depthwise kernels; --model: the cost
# model per op class beside the measured time; --op-times: the op profile), cudarts with
# cuDNN's depthwise convolutions (A/B), PyTorch eager and as a CUDA graph, the per-shape
# depthwise table against cuDNN's deterministic and fastest algorithms.
echo "== benchmarks ($(elapsed) s)"
t 120 build-gpu/perf/darts_bench --device cuda --iters 10 --model --op-times 40 \
  > "$OUT/darts_bench.json" 2> "$OUT/darts_bench_model.txt"
summary "darts_bench (own depthwise): $(tail -1 "$OUT/darts_bench.json")"
# One A/B run: 3 iterations with one switch turned, into $OUT/NAME.json, a summary line.
ab() {
  local limit=$1 name=$2 label=$3
  shift 3
  t "$limit" build-gpu/perf/darts_bench --device cuda --iters 3 --warmup 2 "$@" \
    > "$OUT/$name.json" 2>&1
  summary "darts_bench ($label): $(tail -1 "$OUT/$name.json")"
}
ab 90 darts_bench_cudnn "cuDNN depthwise" --own-depthwise false
ab 60 darts_bench_cudnn_pointwise "cuDNN 1x1 convolutions" --own-pointwise false
ab 60 darts_bench_cudnn_pool "cuDNN pooling" --own-pool false
ab 60 darts_bench_own_norm "own affine-free BatchNorm" --own-norm true
ab 60 darts_bench_unfused_relu "separate ReLU layers" --fuse-relu false
ab 60 darts_bench_unfused_norm "each candidate's own BatchNorm" --fuse-norm false
ab 60 darts_bench_unfused_lead "leading convolutions one by one" --fuse-lead false
t 150 python3 perf/torch_darts.py bench --iters 10 --cuda-graph > "$OUT/torch_bench.json" 2>&1
summary "torch bench: $(tail -1 "$OUT/torch_bench.json")"
t 90 build-gpu/perf/depthwise_bench --json "$OUT/depthwise_bench.json" > "$OUT/depthwise_bench.txt" 2>&1
summary "depthwise_bench: $(tail -1 "$OUT/depthwise_bench.txt")"
t 60 build-gpu/perf/pointwise_bench --json "$OUT/pointwise_bench.json" > "$OUT/pointwise_bench.txt" 2>&1
summary "pointwise_bench: $(tail -1 "$OUT/pointwise_bench.txt")"

# ---------------------------------------------------------------- minimal_train on the GPU
echo "== minimal_train ($(elapsed) s)"
t 120 build-gpu/samples/minimal_train/minimal_train --device cuda --data "$DATA" \
  > "$OUT/minimal_train.log" 2>&1
tail -6 "$OUT/minimal_train.log"
summary "minimal_train: $(grep -iE 'test accuracy' "$OUT/minimal_train.log" | tail -1); $(grep -E '^training:' "$OUT/minimal_train.log" | tail -1)"
t 90 build-gpu/samples/minimal_train/minimal_train --device cuda --data "$DATA" --cuda-graph \
  > "$OUT/minimal_train_graph.log" 2>&1
tail -3 "$OUT/minimal_train_graph.log"
summary "minimal_train --cuda-graph: $(grep -iE 'test accuracy' "$OUT/minimal_train_graph.log" | tail -1); $(grep -E '^training:' "$OUT/minimal_train_graph.log" | tail -1)"


# ---------------------------------------------------------------- data parallel (NCCL)
# One rank under mpirun on the GPU (NCCL communicator when the build has it) must log exactly
# what the same search logs without MPI (seconds and memory aside). Skipped where the machine
# has no mpirun (the GPU machine may not; Open MPI is not among the carried .deps).
echo "== data parallel ($(elapsed) s)"
if command -v mpirun > /dev/null; then
  # (not --quiet: the first line names the communicator, "x 1 ranks (nccl)")
  dp=(--device cuda --subset 512 --test-subset 128 --batch-size 32 --channels 8 --cells 5 --epochs 1)
  t 90 build-gpu/samples/darts_search/darts_search --out "$OUT/dp_plain" "${dp[@]}" > "$OUT/dp.log" 2>&1
  t 90 mpirun --allow-run-as-root -np 1 build-gpu/samples/darts_search/darts_search \
    --out "$OUT/dp_mpi1" "${dp[@]}" >> "$OUT/dp.log" 2>&1
  same=$(python3 - "$OUT/dp_plain/log.jsonl" "$OUT/dp_mpi1/log.jsonl" <<'PY' 2>> "$OUT/dp.log"
import json, sys
drop = {"seconds", "peak_bytes"}
a, b = ([{k: v for k, v in json.loads(l).items() if k not in drop} for l in open(p)] for p in sys.argv[1:])
print("equal" if a == b else "DIFFERENT")
PY
)
  summary "data parallel: 1-rank mpirun run vs plain run on the GPU: ${same:-not compared} (backend: $(grep -o 'ranks ([a-z]*)' "$OUT/dp.log" | head -1))"
else
  summary "data parallel: no mpirun on this machine, NCCL case not run"
fi

# ---------------------------------------------------------------- hardware-aware search
# A cost table measured on this GPU (every candidate of every edge of the default search
# network, CUDA events) and the GPU twin of the latency-prediction test (predicted against
# measured whole-network latency for random architectures; the issue aims for 15 %).
echo "== cost table ($(elapsed) s)"
t 90 build-gpu/samples/darts_search/darts_search --device cuda \
  --write-cost-table "$OUT/cost_table_gpu.json" > "$OUT/cost_table.log" 2>&1
t 60 build-gpu/tests/test_darts --gtest_filter='HardwareAware.*OnTheGpu' > "$OUT/latency.log" 2>&1
summary "cost table: $(ls -s "$OUT/cost_table_gpu.json" 2> /dev/null | cut -d' ' -f1) kB written; latency prediction: $(grep -oE 'mean prediction error [0-9.]+%, worst [0-9.]+%' "$OUT/latency.log" | tail -1)"

# ---------------------------------------------------------------- sanitizers
echo "== compute-sanitizer ($(elapsed) s)"
# compute-sanitizer: on PATH, in a toolkit's compute-sanitizer/ folder, or anywhere on the disk.
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
  /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
[ -z "$SAN" ] && SAN=$(timeout 20 find / -xdev -name compute-sanitizer -type f -perm -u+x 2>/dev/null | head -1)
echo "compute-sanitizer: ${SAN:-not found}" | tee -a "$OUT/machine.txt"
if [ -n "$SAN" ]; then
  t 150 "$SAN" --tool memcheck --error-exitcode 9 build-gpu/tests/test_op_parity \
    --gtest_filter='*cuda_*' --gtest_brief=1 > "$OUT/memcheck.log" 2>&1
  # (the DARTS-step case alone outlasts 90 s under memcheck: the two small networks)
  t 90 "$SAN" --tool memcheck --error-exitcode 9 build-gpu/tests/test_step_graph \
    --gtest_filter='StepGraph.GpuSgd*:StepGraph.GpuAdam*' --gtest_brief=1 > "$OUT/memcheck_graph.log" 2>&1
  # One whole first-order DARTS search iteration (both passes, optimizers, own depthwise
  # kernels) at a size memcheck gets through in time.
  t 120 "$SAN" --tool memcheck --error-exitcode 9 build-gpu/perf/darts_bench --device cuda \
    --channels 4 --cells 3 --batch-size 4 --size 16 --iters 1 --warmup 1 --graph 0 \
    > "$OUT/memcheck_step.log" 2>&1
  t 90 "$SAN" --tool racecheck build-gpu/tests/test_op_parity \
    --gtest_filter='*cuda_mix_scores*:*cuda_mix_norm*:*cuda_global_norm*:*cuda_softmax_xent*:*cuda_ma_update*:*cuda_batchnorm*:*cuda_conv2d*dw*:*cuda_conv2d*pw_*:*cuda_depthwise_group*:*cuda_pool2d*' \
    --gtest_brief=1 > "$OUT/racecheck.log" 2>&1
  summary "compute-sanitizer: memcheck errors $(errors "$OUT/memcheck.log") (op parity), $(errors "$OUT/memcheck_graph.log") (StepGraph), $(errors "$OUT/memcheck_step.log") (a whole DARTS step), racecheck hazards $(errors "$OUT/racecheck.log") (empty: not run or cut short)"
else
  summary "compute-sanitizer: not found"
fi

t 120 build-gpu/perf/darts_export --device cuda --out "$OUT/twin_full.safetensors" \
  --channels 16 --cells 8 --size 32 --batch-size 8 --seed 3 > "$OUT/twin.log" 2>&1
t 120 python3 perf/torch_darts.py check "$OUT/twin_full.safetensors" --device cuda >> "$OUT/twin.log" 2>&1
rm -f "$OUT/twin_full.safetensors"
summary "twin: $(grep -oE "torch_darts check: [a-zA-Z]+" "$OUT/twin.log" | tail -1)"

# Nsight Compute with the time left (perf/ncu_kernels.sh: per-kernel times of one eager
# iteration, then the leading kernels' sections), when at least 60 s are left.
left=$(( LIMIT - $(elapsed) - 10 ))
if [ "$left" -ge 60 ]; then
  perf/ncu_kernels.sh build-gpu "$OUT/ncu" "$left" > "$OUT/ncu.log" 2>&1
  summary "ncu: $(head -1 "$OUT/ncu.log"); $(head -1 "$OUT/ncu/ncu_kernels.txt" 2> /dev/null)"
else
  echo "skipped (time): perf/ncu_kernels.sh" >> "$OUT/skipped.txt"
fi

# The search-quality check at its GPU budget, last and only when asked (DEVICE_QUALITY=1): it
# needs more time than one call usually has left.
if [ "${DEVICE_QUALITY:-0}" = 1 ]; then
  t 300 scripts/quality.sh --budget gpu --random 2 --seeds 2 --out "$OUT/quality" --build build-gpu \
    > "$OUT/quality.log" 2>&1
  summary "quality (gpu budget): $(grep -E "verdict|rank" "$OUT/quality.log" | tr '\n' ' ')"
fi

[ -f "$OUT/skipped.txt" ] && summary "skipped for time: $(wc -l < "$OUT/skipped.txt") step(s) (skipped.txt)"
summary "total $(elapsed) s"
[ "$FAILED" = 0 ]
