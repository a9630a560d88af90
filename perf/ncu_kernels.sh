#!/usr/bin/env bash
# Why the search step's kernels take their time: Nsight Compute (ncu) on the lent GPU, for
# perf/device_quick.sh (QUICK_NCU=1, the default) or by hand. Two parts, each under a timeout:
#  1. every kernel of one eager first-order iteration (darts_bench, the default network) in one
#     pass: time, grid, block, registers -> ncu_all.csv and the table ncu_kernels.txt
#     (perf/ncu_table.py: by kernel and shape, by kernel name, by total time);
#  2. the first launches of the kernels that led the last op profile, with the SpeedOfLight,
#     Occupancy, LaunchStats and WarpStateStats sections -> ncu_sections.txt (the details page)
#     and ncu_sections_table.txt (achieved occupancy, DRAM throughput, top warp stall).
# Clocks and caches are left alone (--clock-control none --cache-control none: METHOD.md).
# Part 2 stops starting runs after BUDGET seconds (default 150) from the start.
# Usage: perf/ncu_kernels.sh BUILD_DIR OUT_DIR [BUDGET]
set -uo pipefail
B=${1:-build-gpu}
OUT=${2:-ncu-out}
BUDGET=${3:-150}
T0=$(date +%s)
mkdir -p "$OUT"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | head -1)
if [ -z "$NCU" ]; then
  echo "ncu: not found"
  exit 0
fi
HERE=$(cd "$(dirname "$0")" && pwd)
step=("$B/perf/darts_bench" --device cuda --iters 1 --warmup 0 --graph 0)
common=(--clock-control none --cache-control none --force-overwrite)

part1=$(( BUDGET - 10 < 90 ? BUDGET - 10 : 90 ))
[ "$part1" -lt 10 ] && part1=10
timeout "$part1" "$NCU" "${common[@]}" --metrics gpu__time_duration.sum,launch__registers_per_thread \
  -o "$OUT/ncu_all" "${step[@]}" > "$OUT/ncu_all.log" 2>&1
echo "ncu part 1 (every kernel, one pass): rc=$?"
"$NCU" --import "$OUT/ncu_all.ncu-rep" --csv --page raw --print-units base > "$OUT/ncu_all.csv" 2>> "$OUT/ncu_all.log"
python3 "$HERE/ncu_table.py" "$OUT/ncu_all.csv" --top 45 > "$OUT/ncu_kernels.txt" 2>&1
head -52 "$OUT/ncu_kernels.txt"

# The kernels behind the op profile's leaders (2026-12-04): the 1x1 map kernels, the group
# backward data, the normalised-mix backward passes, the depthwise kernels, pooling, cuDNN's
# BatchNorm; two launches each (the first ones: the first cell's shapes in the forward, the
# last cell's in the backward).
kernels='pointwise_packed_map_kernel|pointwise_bwd_filter_kernel|depthwise_group_bwd_data_kernel|mix_norm_sums_kernel|mix_norm_apply_kernel|depthwise_bwd_data_kernel|depthwise_group_fwd_kernel|pool_bwd_kernel|pool_argmax_kernel|bn_bw|bn_fw'
: > "$OUT/ncu_sections.txt"
csvs=()
IFS='|' read -ra names <<< "$kernels"
for k in "${names[@]}"; do
  left=$(( BUDGET - ($(date +%s) - T0) ))
  if [ "$left" -lt 20 ]; then
    echo "ncu part 2: out of time before $k" >> "$OUT/ncu_sections.txt"
    break
  fi
  timeout $(( left < 30 ? left : 30 )) "$NCU" "${common[@]}" --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats -k "regex:$k" -c 2 -o "$OUT/ncu_$k" "${step[@]}" > "$OUT/ncu_$k.log" 2>&1 || continue
  "$NCU" --import "$OUT/ncu_$k.ncu-rep" --page details >> "$OUT/ncu_sections.txt" 2>&1
  "$NCU" --import "$OUT/ncu_$k.ncu-rep" --csv --page raw --print-units base > "$OUT/ncu_$k.csv" 2>> "$OUT/ncu_$k.log"
  csvs+=("$OUT/ncu_$k.csv")
done
if [ ${#csvs[@]} -gt 0 ]; then
  python3 "$HERE/ncu_table.py" "${csvs[@]}" > "$OUT/ncu_sections_table.txt" 2>&1
else
  echo "no section run finished" > "$OUT/ncu_sections_table.txt"
fi
echo "ncu part 2 (sections):"
cat "$OUT/ncu_sections_table.txt"
rm -f "$OUT"/*.ncu-rep
