#!/usr/bin/env bash
# A search killed with SIGKILL at random moments (during steps, checkpoint writes, evaluation,
# log and genotype writes) and resumed each time ends with exactly the numbers of an
# uninterrupted run: log.jsonl (all but seconds and peak_bytes) and genotype.json, on the CPU.
# Runs that finish before enough kills landed are compared too, and a new one is started,
# until KILLS kills have landed.
# Usage: killed_runs.sh DARTS_SEARCH WORKDIR [KILLS]
set -uo pipefail
search=$1 work=$2 kills=${3:-20}
rm -rf "$work" && mkdir -p "$work"
args=(--device cpu --subset 96 --test-subset 32 --batch-size 16 --channels 2 --cells 3 --epochs 3
      --checkpoint-every 1 --quiet --seed 5)
start=$(date +%s%N)
"$search" --out "$work/full" "${args[@]}" || { echo "FAIL: the uninterrupted run failed"; exit 1; }
full_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "uninterrupted run: ${full_ms} ms"
compare() {  # compare DIR: its log and genotype equal the uninterrupted run's
  python3 - "$work/full" "$1" <<'PY'
import json, sys
a, b = sys.argv[1], sys.argv[2]
def log(d):
    rows = [json.loads(l) for l in open(d + "/log.jsonl")]
    for r in rows:
        r.pop("seconds"); r.pop("peak_bytes")
    return rows
la, lb = log(a), log(b)
assert len(la) == len(lb) == 3, (len(la), len(lb))
for i, (x, y) in enumerate(zip(la, lb)):
    assert x == y, f"epoch {i + 1} differs:\n{x}\n{y}"
assert open(a + "/genotype.json").read() == open(b + "/genotype.json").read(), "genotypes differ"
PY
}
RANDOM=7  # reproducible kill moments
killed=0 runs=0 cut="$work/cut0"
for ((attempt = 0; attempt < 20 * kills; ++attempt)); do
  resume=(); [ -d "$cut" ] && resume=(--resume)
  "$search" --out "$cut" "${args[@]}" "${resume[@]}" > "$work/last.log" 2>&1 &
  pid=$!
  if (( killed < kills )); then
    # A moment in the first third of a whole run's time: start-up, steps, checkpoint writes,
    # evaluation and the epoch-end writes all get hit over the kills.
    delay_ms=$(( RANDOM % (full_ms / 3 + 1) ))
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    if kill -9 "$pid" 2> /dev/null; then killed=$((killed + 1)); fi
  fi
  wait "$pid" 2> /dev/null; rc=$?
  if [ $rc -eq 0 ]; then
    compare "$cut" || { echo "FAIL: run $cut differs from the uninterrupted run"; exit 1; }
    runs=$((runs + 1))
    (( killed >= kills )) && break
    cut="$work/cut$runs"  # not enough kills yet: another run from the start
  elif [ $rc -ne 137 ]; then
    echo "FAIL: a resume exited $rc"; cat "$work/last.log"; exit 1
  fi
done
(( killed >= kills )) || { echo "FAIL: only $killed kills landed"; exit 1; }
echo "killed_runs: $killed kills over $runs runs; every resumed run logged the uninterrupted run's numbers and genotype"
