#!/usr/bin/env bash
# Bad command lines: each must exit non-zero and print the usage or a message naming the
# problem. Usage: cli_errors.sh DARTS_SEARCH DARTS_TRAIN WORKDIR
set -uo pipefail
search=$1 train=$2 work=$3
mkdir -p "$work"
failures=0
expect_error() {  # expect_error "pattern" command...
  local pattern=$1; shift
  local out rc
  # A bad command line fails at once; one that is wrongly accepted would start a whole search,
  # so each gets 60 s (exit 124 from timeout counts as a failure below).
  out=$(timeout 60 "$@" 2>&1); rc=$?
  if [ $rc -eq 124 ]; then
    echo "FAIL (still running after 60 s: accepted?): $*"; failures=$((failures + 1))
  elif [ $rc -eq 0 ]; then
    echo "FAIL (exit 0): $*"; failures=$((failures + 1))
  elif ! grep -qE -- "$pattern" <<< "$out"; then
    echo "FAIL (no '$pattern' in output): $*"; echo "$out" | head -5; failures=$((failures + 1))
  else
    echo "ok (exit $rc): $*"
  fi
}
expect_error "mixed-op.*(nope|not in)|Usage" "$search" --out "$work/a" --mixed-op nope
expect_error "epochs|Usage" "$search" --out "$work/b" --epochs -1
expect_error "dataset|Usage" "$search" --out "$work/c" --dataset mnist
expect_error "--out.*required|Usage" "$search" --epochs 1
expect_error "data_batch_1.bin" "$search" --out "$work/d" --dataset cifar10 --data "$work/nowhere" --device cpu
expect_error "--genotype.*required|Usage" "$train" --out "$work/e"
expect_error "cannot open genotype" "$train" --out "$work/f" --genotype "$work/missing.json" --device cpu
expect_error "Usage" "$search" --no-such-flag
# An export into a folder that does not exist is refused before training starts.
echo '{"normal": [["skip_connect", 0], ["skip_connect", 1]], "normal_concat": [2], "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]}' > "$work/g.json"
expect_error "export_onnx.*does not exist" "$train" --out "$work/g" --genotype "$work/g.json" \
  --device cpu --export-onnx "$work/no/such/folder/m.onnx"
[ -e "$work/g/log.jsonl" ] && { echo "FAIL: the refused export still trained"; failures=$((failures + 1)); }
[ $failures -eq 0 ]
