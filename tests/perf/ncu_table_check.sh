#!/usr/bin/env bash
# perf/ncu_table.py on a hand-written raw ncu CSV (tests/perf/ncu_raw_sample.csv: ncu's own
# message lines, the units row, thousands separators, namespaces and an anonymous namespace in
# the names, an empty metric): the groups, their sums and order, computed by hand.
set -euo pipefail
root=$1
out=$(python3 "$root/perf/ncu_table.py" "$root/tests/perf/ncu_raw_sample.csv")
echo "$out"
fail() { echo "ncu_table_check: $*" >&2; exit 1; }
grep -q "^4 kernel launches profiled, 0.045 ms of kernel time" <<< "$out" || fail "header"
# the first group: mix_norm_sums (30 us of 45: 66.7 %), its top stall barrier 6.0
line=$(sed -n '/^by kernel, grid and block/{n;n;p}' <<< "$out")
grep -qE "^mix_norm_sums_kernel<float> +\(16,16,1\) +\(256,1,1\) +1 +30\.0 +30\.00 +66\.7 +118 +20\.0 +barrier 6\.0" <<< "$line" \
  || fail "first group: $line"
# the two forward launches in one group: 14 us, mean 7, occupancy (40.5 + 39.5) / 2 = 40.0,
# long_scoreboard (3.5 + 4.5) / 2 = 4.0
grep -qE "^pointwise_packed_map_kernel<float, false, 16> +\(256,1,1\) +\(256,1,1\) +2 +14\.0 +7\.00 +31\.1 +64 +40\.0 +long_scoreboard 4\.0" <<< "$out" \
  || fail "forward group"
# by name: the pointwise kernels together, 15 us, the most registers (64), the means over the
# launches that report a value
grep -qE "^pointwise_packed_map_kernel +3 +15\.0 +5\.00 +33\.3 +64 +40\.0 +long_scoreboard 4\.0" <<< "$out" || fail "by name"
# bad input: a missing file and a CSV that is not an ncu raw page get exit 2 and a message
# naming the file and what was expected, no traceback
set +e
err=$(python3 "$root/perf/ncu_table.py" /nonexistent/report.csv 2>&1); rc=$?
[ "$rc" = 2 ] && grep -q "cannot read /nonexistent/report.csv" <<< "$err" || fail "missing file: $rc $err"
bad=$(mktemp)
printf '"a","b"\n"1","2"\n' > "$bad"
err=$(python3 "$root/perf/ncu_table.py" "$bad" 2>&1); rc=$?
rm -f "$bad"
set -e
[ "$rc" = 2 ] && grep -q "is not an ncu raw page" <<< "$err" && ! grep -q Traceback <<< "$err" ||
  fail "not a report: $rc $err"
echo "ncu_table_check: ok"
