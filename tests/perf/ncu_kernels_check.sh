#!/usr/bin/env bash
# perf/ncu_kernels.sh's own logic (paths, the two parts, the per-kernel loop, the time budget)
# with a stand-in for ncu that writes a report per run and prints tests/perf/ncu_raw_sample.csv
# on import, and a stand-in darts_bench: the tables must come out, every kernel of the list be
# tried, and a budget too small for part 2 must stop it with a note.
set -euo pipefail
root=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/build/perf"
cat > "$work/bin/ncu" << 'FAKE'
#!/usr/bin/env bash
out=""; import=""; page=""; prog=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    --import) import=$2; shift 2 ;;
    --page) page=$2; shift 2 ;;
    --metrics | --section | -k | -c | --clock-control | --cache-control | --print-units) shift 2 ;;
    --csv | --force-overwrite) shift ;;
    *) prog=("$@"); break ;;
  esac
done
if [ -n "$import" ]; then
  [ -f "$import" ] || exit 1
  if [ "$page" = raw ]; then cat "$FAKE_CSV"; else echo "details of $import"; fi
  exit 0
fi
"${prog[@]}" > /dev/null
echo report > "$out.ncu-rep"
FAKE
printf '#!/bin/sh\nexit 0\n' > "$work/build/perf/darts_bench"
chmod +x "$work/bin/ncu" "$work/build/perf/darts_bench"
export PATH="$work/bin:$PATH" FAKE_CSV="$root/tests/perf/ncu_raw_sample.csv"
fail() { echo "ncu_kernels_check: $*" >&2; exit 1; }

"$root/perf/ncu_kernels.sh" "$work/build" "$work/out" 150 > "$work/log" 2>&1 || fail "rc $?"
grep -q "^ncu part 1 (every kernel, one pass): rc=0" "$work/log" || fail "part 1"
grep -q "^4 kernel launches profiled" "$work/out/ncu_kernels.txt" || fail "part 1 table"
n=$(ls "$work/out"/ncu_*_kernel.csv "$work/out"/ncu_bn_*.csv 2> /dev/null | wc -l)
[ "$n" -eq 11 ] || fail "part 2 ran $n of 11 kernels"
grep -q "^44 kernel launches profiled" "$work/out/ncu_sections_table.txt" || fail "part 2 table"
[ -z "$(ls "$work/out"/*.ncu-rep 2> /dev/null)" ] || fail "reports left behind"

# a budget below part 2's 20-s floor: part 1 runs, part 2 stops before its first kernel
"$root/perf/ncu_kernels.sh" "$work/build" "$work/out2" 15 > "$work/log2" 2>&1 || fail "rc $?"
grep -q "out of time before pointwise_packed_map_kernel" "$work/out2/ncu_sections.txt" ||
  fail "no stop note"
grep -q "no section run finished" "$work/out2/ncu_sections_table.txt" || fail "part 2 table"
echo "ncu_kernels_check: ok"
