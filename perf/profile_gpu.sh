#!/usr/bin/env bash
# Where a GPU search iteration spends its time: builds darts_bench (Release, sm_90), profiles
# a few eager iterations with Nsight Systems when it is installed and writes the kernel summary
# (time per kernel name, top 40) to $OUT/kernels.txt; also times PyTorch on the same iteration
# (torch_darts.py bench). Arguments go to darts_bench (e.g. --batch-size 64 --channels 16).
# Run from the repository root on the GPU machine with .deps carried.
set -uo pipefail
OUT=${OUT:-$PWD/profile-out}
mkdir -p "$OUT"
DEPS=()
if [ -d .deps/root ]; then
  DEPS=(-DCMAKE_PREFIX_PATH="$PWD/.deps/root/usr")
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$PWD/.deps/root/lib/x86_64-linux-gnu"
fi
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCUDARTS_CUDA=ON \
  "${DEPS[@]}" > "$OUT/configure.log" 2>&1 && cmake --build build-gpu -j"$(nproc)" --target darts_bench \
  > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-not found}" | tee "$OUT/kernels.txt"
if [ -n "$NSYS" ]; then
  timeout 150 "$NSYS" profile -t cuda,nvtx -o /tmp/cudarts_prof --force-overwrite true \
    build-gpu/perf/darts_bench --device cuda --iters 2 --warmup 1 --graph 0 "$@" > "$OUT/nsys.log" 2>&1
  timeout 90 "$NSYS" stats --report cuda_gpu_kern_sum --format csv /tmp/cudarts_prof.nsys-rep \
    2>> "$OUT/nsys.log" | head -45 >> "$OUT/kernels.txt"
  timeout 60 "$NSYS" stats --report cuda_api_sum --format csv /tmp/cudarts_prof.nsys-rep \
    2>> "$OUT/nsys.log" | head -15 >> "$OUT/kernels.txt"
fi
timeout 90 python3 perf/torch_darts.py bench --iters 5 > "$OUT/torch_bench.json" 2>&1
tail -1 "$OUT/torch_bench.json"
cut -c1-200 "$OUT/kernels.txt" | head -60
