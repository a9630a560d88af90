#!/usr/bin/env bash
# Builds the libFuzzer harnesses of cudarts' readers (safetensors, IDX/gzip, CIFAR-10, genotype,
# the run files of a resume) with clang, AddressSanitizer and UBSan, replays the regression
# inputs (tests/fuzz/regressions/<harness>/: every crash ever found), then fuzzes each harness
# from its seeds (tests/fuzz/seeds/<harness>/) for SECONDS seconds, or RUNS inputs when RUNS is
# set. Exit 0 when nothing was found; skips (77) without clang's libFuzzer.
# Usage: run_fuzz.sh SOURCE_DIR WORK_DIR [SECONDS]   (environment: RUNS=N for N inputs each)
set -euo pipefail
src=$1 work=$2 seconds=${3:-5}
command -v clang++ > /dev/null || { echo "run_fuzz: no clang++, skipped"; exit 77; }
mkdir -p "$work"
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$work.probe.cpp"
clang++ -fsanitize=fuzzer "$work.probe.cpp" -o "$work.probe" 2> /dev/null ||
  { echo "run_fuzz: clang has no libFuzzer (libclang-rt-14-dev), skipped"; exit 77; }
san="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S "$src" -B "$work" -DCMAKE_CXX_COMPILER=clang++ \
  -DCUDARTS_CUDA=OFF -DCUDARTS_BLAS=builtin -DCUDARTS_BUILD_TESTS=OFF -DCUDARTS_BUILD_SAMPLES=OFF \
  -DCUDARTS_BUILD_PERF=OFF -DCUDARTS_BUILD_FUZZ=ON -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$san" > "$work.configure.log" 2>&1 ||
  { cat "$work.configure.log"; exit 1; }
harnesses=(fuzz_safetensors fuzz_idx fuzz_cifar10 fuzz_genotype fuzz_run_files)
cmake --build "$work" -j"$(nproc)" --target "${harnesses[@]}" > "$work.build.log" 2>&1 ||
  { tail -30 "$work.build.log"; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1
status=0
for h in "${harnesses[@]}"; do
  bin="$work/tests/fuzz/$h"
  regressions="$src/tests/fuzz/regressions/$h"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    "$bin" -runs=0 "$regressions"/* > "$work.$h.regressions.log" 2>&1 ||
      { echo "run_fuzz: $h fails a regression input"; tail -20 "$work.$h.regressions.log"; status=1; }
  fi
  corpus="$work/corpus/$h"
  mkdir -p "$corpus"
  budget=(-max_total_time="$seconds")
  [ -n "${RUNS:-}" ] && budget=(-runs="$RUNS")
  if "$bin" "${budget[@]}" -max_len=65536 -rss_limit_mb=2048 -artifact_prefix="$work/$h-" \
      -print_final_stats=1 "$corpus" "$src/tests/fuzz/seeds/$h" > "$work.$h.log" 2>&1; then
    echo "run_fuzz: $h $(grep -oE 'stat::number_of_executed_units: [0-9]+' "$work.$h.log" |
      grep -oE '[0-9]+') inputs, nothing found"
  else
    echo "run_fuzz: $h FOUND a problem (artifact $work/$h-*):"; tail -30 "$work.$h.log"; status=1
  fi
done
exit $status
