#!/usr/bin/env bash
# The programs' boundary: every failure is one clear line and a distinct exit status, never
# `terminate called` (2 usage, 3 bad input file, 4 diverged run), and nothing already written
# is lost. Uses a tiny CPU search on the first 64 Fashion-MNIST images.
# Usage: program_exits.sh DARTS_SEARCH DARTS_TRAIN MINIMAL_TRAIN WORKDIR
set -uo pipefail
search=$1 train=$2 minimal=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
failures=0
tiny=(--device cpu --subset 64 --test-subset 32 --batch-size 16 --channels 2 --cells 3 --quiet)
expect() {  # expect STATUS "pattern" command...
  local want=$1 pattern=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL (exit $rc, expected $want): $*"; echo "$out" | tail -3; failures=$((failures + 1))
  elif ! grep -qE -- "$pattern" <<< "$out"; then
    echo "FAIL (no '$pattern'): $*"; echo "$out" | tail -3; failures=$((failures + 1))
  elif grep -q "terminate called" <<< "$out"; then
    echo "FAIL (terminate called): $*"; failures=$((failures + 1))
  else
    echo "ok (exit $rc): $*"
  fi
}
same() {  # same FILE SAVED_COPY: the file is unchanged
  if ! cmp -s "$1" "$2"; then echo "FAIL: $1 changed"; failures=$((failures + 1)); fi
}

# Usage errors: 2.
expect 2 "no-such-flag|not expected" "$search" --no-such-flag
expect 2 "epochs" "$search" --out "$work/u1" --epochs -1
expect 2 "--second-order" "$search" --out "$work/u2" --second-order --joint "${tiny[@]}"

# A finished 1-epoch search, then damage to its checkpoint: 3, files untouched.
run="$work/run"
"$search" --out "$run" --epochs 2 --max-steps 2 "${tiny[@]}" > /dev/null 2>&1
"$search" --out "$run" --epochs 2 --resume --max-steps 2 "${tiny[@]}" > /dev/null 2>&1
[ -f "$run/checkpoint.safetensors" ] && [ -f "$run/log.jsonl" ] || { echo "FAIL: no run"; exit 1; }
cp "$run/checkpoint.safetensors" "$work/ck.clean"; cp "$run/log.jsonl" "$work/log.saved"
cp "$run/genotype.json" "$work/genotype.saved"
flip() {  # flip PYTHON_EXPRESSION_ON_b: damages the checkpoint copy in place
  python3 - "$run/checkpoint.safetensors" "$1" <<'PY'
import sys
path, expr = sys.argv[1], sys.argv[2]
b = bytearray(open(path, 'rb').read())
exec(expr)
open(path, 'wb').write(b)
PY
}
for damage in "b[-40] ^= 0xff" \
              "i = b.index(b'\"cudarts\":\"{'); b[i + 11] = ord('[')" \
              "i = b.index(b'\\\\\"epoch\\\\\"'); b[i + 6] = ord('i')" \
              "del b[len(b) // 2:]"; do
  cp "$work/ck.clean" "$run/checkpoint.safetensors"
  flip "$damage"
  cp "$run/checkpoint.safetensors" "$work/ck.damaged"
  expect 3 "checkpoint.safetensors" "$search" --out "$run" --epochs 2 --resume "${tiny[@]}"
  same "$run/checkpoint.safetensors" "$work/ck.damaged"
  same "$run/log.jsonl" "$work/log.saved"
  same "$run/genotype.json" "$work/genotype.saved"
done
cp "$work/ck.clean" "$run/checkpoint.safetensors"
expect 2 "different configuration" "$search" --out "$run" --epochs 2 --resume --lr 0.5 "${tiny[@]}"
same "$run/log.jsonl" "$work/log.saved"
expect 3 "cannot open genotype|genotype" "$train" --out "$work/t1" --genotype "$work/missing.json" \
  --device cpu

# Diverged runs: 4, and nothing from the diverged steps written.
expect 4 "not finite|non-finite" "$search" --out "$work/d1" --lr 1e9 --checkpoint-every 1 "${tiny[@]}"
[ -f "$work/d1/log.jsonl" ] && { echo "FAIL: a diverged search wrote log.jsonl"; failures=$((failures + 1)); }
[ -f "$work/d1/genotype.json" ] && { echo "FAIL: a diverged search wrote genotype.json"; failures=$((failures + 1)); }
expect 4 "not finite|non-finite" "$train" --out "$work/d2" --genotype "$run/genotype.json" --lr 1e9 \
  --epochs 1 --subset 64 --test-subset 32 --batch-size 16 --channels 4 --cells 3 --device cpu --quiet
[ -f "$work/d2/log.jsonl" ] && { echo "FAIL: a diverged retraining wrote log.jsonl"; failures=$((failures + 1)); }
expect 4 "not finite" "$minimal" --device cpu --limit 256 --lr 1e9

# The clean checkpoint still resumes to the end.
expect 0 "" "$search" --out "$run" --epochs 2 --resume "${tiny[@]}"
[ $failures -eq 0 ]
