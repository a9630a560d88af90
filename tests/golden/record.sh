#!/usr/bin/env bash
# The numbers of small CPU searches of every MixedOp type and step kind (bilevel, joint,
# warm-up, second order, a killed-and-resumed run), as a redesign must keep them: each run's
# log.jsonl without wall-clock time and allocator peak, its genotype, and the SHA-256 of its
# checkpoint tensors' bytes. Prints one JSON object per run. Compare a recording made before a
# change with one made after it on the same machine (bit-for-bit floating point depends on the
# CPU and BLAS build, so this is a development check, not a CI test):
#   tests/golden/record.sh build/samples/darts_search/darts_search build/samples/darts_train/darts_train > before.jsonl
#   ... change ...
#   tests/golden/record.sh ... > after.jsonl
#   diff before.jsonl after.jsonl && echo unchanged
# (darts_train is optional: with it, retraining runs are recorded too.)
set -euo pipefail
search=$1 train=${2:-} work=${3:-$(mktemp -d)}
rm -rf "$work" && mkdir -p "$work"
base=(--device cpu --subset 96 --test-subset 32 --batch-size 16 --channels 2 --cells 3 --epochs 2
      --quiet --seed 11)
run() {  # run TAG args...
  local tag=$1; shift
  "$search" --out "$work/$tag" "${base[@]}" "$@" > /dev/null
  digest "$tag"
}
digest() {
  python3 - "$work/$1" "$1" <<'PY'
import hashlib, json, struct, sys
d, tag = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(d + "/log.jsonl")]
for r in rows:
    r.pop("seconds", None); r.pop("peak_bytes", None)
b = open(d + "/checkpoint.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]
header = json.loads(b[8:8 + n])
data = b[8 + n:]
h = hashlib.sha256()
for name in sorted(k for k in header if k != "__metadata__"):
    o = header[name]["data_offsets"]
    h.update(name.encode()); h.update(data[o[0]:o[1]])
print(json.dumps({"run": tag, "log": rows, "genotype": json.load(open(d + "/genotype.json")),
                  "tensors_sha256": h.hexdigest()}, sort_keys=True))
PY
}
for type in continuous binary masked proxyless moving-average; do
  run "$type" --mixed-op "$type" --num-eval 3
  run "$type-joint" --mixed-op "$type" --num-eval 3 --joint
done
run continuous-warmup --warmup-epochs 1
run continuous-second-order --second-order
run proxyless-reference --mixed-op proxyless --num-eval 3 --proxyless-reference
# Killed at step 5 of epoch 1 (checkpoints every 2 steps), resumed to the end.
for type in continuous moving-average; do
  "$search" --out "$work/$type-resumed" "${base[@]}" --mixed-op "$type" --num-eval 3 \
    --checkpoint-every 2 --max-steps 5 > /dev/null
  "$search" --out "$work/$type-resumed" "${base[@]}" --mixed-op "$type" --num-eval 3 \
    --checkpoint-every 2 --resume > /dev/null
  digest "$type-resumed"
done
if [ -n "$train" ]; then
  cat > "$work/genotype.json" <<'G'
{"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["dil_conv_3x3", 2], ["max_pool_3x3", 0], ["sep_conv_5x5", 1], ["avg_pool_3x3", 0], ["dil_conv_5x5", 3], ["skip_connect", 2]], "normal_concat": [2, 3, 4, 5], "reduce": [["max_pool_3x3", 0], ["avg_pool_3x3", 1], ["skip_connect", 2], ["sep_conv_5x5", 1], ["dil_conv_3x3", 0], ["sep_conv_3x3", 2], ["max_pool_3x3", 1], ["skip_connect", 3]], "reduce_concat": [2, 3, 4, 5]}
G
  targs=(--device cpu --subset 96 --test-subset 32 --batch-size 16 --channels 4 --cells 3 --epochs 2
         --quiet --seed 11 --genotype "$work/genotype.json")
  "$train" --out "$work/train" "${targs[@]}" > /dev/null
  digest train
  "$train" --out "$work/train-graph" "${targs[@]}" --cuda-graph > /dev/null
  digest train-graph
  "$train" --out "$work/train-resumed" "${targs[@]}" --checkpoint-every 2 --max-steps 7 > /dev/null
  "$train" --out "$work/train-resumed" "${targs[@]}" --checkpoint-every 2 --resume > /dev/null
  digest train-resumed
fi
