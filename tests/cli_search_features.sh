#!/usr/bin/env bash
# The search features from the command line, as a user runs them (tiny CPU budgets): each
# anti-collapse regulariser and the Hessian monitor log their monitors; GDAS-FRC, PC-DARTS and
# NAS-Bench-201 searches run and write their genotypes; darts_train retrains DARTS_V2 from its
# published Python notation (a genotypes.py picked by name) and a NAS-Bench-201 string.
# The retrained networks are then classified by infer, which must report the run's own test
# accuracy.
# Usage: cli_search_features.sh DARTS_SEARCH DARTS_TRAIN WORKDIR INFER
set -uo pipefail
search=$1 train=$2 work=$3 infer=$4
rm -rf "$work" && mkdir -p "$work"
failures=0
tiny=(--device cpu --subset 64 --test-subset 32 --batch-size 16 --epochs 2 --quiet)
tiny1=(--device cpu --subset 64 --test-subset 32 --batch-size 16 --epochs 1 --quiet)
run() {  # run TAG KEYS command...: exit 0, and each comma-separated key in every log line
  local tag=$1 keys=$2; shift 2
  local out rc
  out=$(timeout 120 "$@" 2>&1); rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL (exit $rc): $*"; echo "$out" | tail -3; failures=$((failures + 1)); return
  fi
  if [ -n "$keys" ] && ! python3 - "$work/$tag/log.jsonl" "$keys" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
missing = [k for k in sys.argv[2].split(",") for r in rows if k not in r]
if not rows or missing:
    sys.exit("missing in log.jsonl: %s" % sorted(set(missing)))
PY
  then
    echo "FAIL (log): $*"; failures=$((failures + 1)); return
  fi
  echo "ok: $tag"
}
darts=(--channels 4 --cells 3)
run beta "parameter_free,skips,beta_decay" "$search" --out "$work/beta" "${tiny[@]}" "${darts[@]}" --beta-decay 10
run aux "parameter_free,skips,auxiliary_skip_weight" "$search" --out "$work/aux" "${tiny[@]}" \
  "${darts[@]}" --auxiliary-skip 1 --auxiliary-skip-decay cosine
run cap "parameter_free,skips" "$search" --out "$work/cap" "${tiny[@]}" "${darts[@]}" --max-skips 0
run hessian "hessian_eigenvalue" "$search" --out "$work/hessian" "${tiny[@]}" "${darts[@]}" \
  --hessian-every 1 --hessian-batches 1 --hessian-stop 1.5
run frc "alphas" "$search" --out "$work/frc" "${tiny[@]}" "${darts[@]}" --mixed-op gdas --fixed-reduction
run pc "edge_weights" "$search" --out "$work/pc" "${tiny[@]}" "${darts[@]}" --pc-darts --partial-channels 2 \
  --warmup-epochs 1
run nb "parameter_free,skips" "$search" --out "$work/nb" "${tiny[@]}" --space nb201 --channels 4 --cells 1
# Hardware-aware: a cost table written on its own, then a search penalised with it.
if timeout 120 "$search" --write-cost-table "$work/costs.json" --device cpu --subset 64 \
    --batch-size 16 "${darts[@]}" --quiet && [ -s "$work/costs.json" ]; then
  echo "ok: cost table"
else
  echo "FAIL: --write-cost-table"; failures=$((failures + 1))
fi
run cost "expected_cost,derived_cost" "$search" --out "$work/cost" "${tiny[@]}" "${darts[@]}" \
  --cost-weight 1 --cost-metric flops --cost-table "$work/costs.json"
python3 - "$work" <<'PY' || failures=$((failures + 1))
import json, sys
w = sys.argv[1]
g = json.load(open(w + "/cap/genotype.json"))
assert all(op != "skip_connect" for op, _ in g["normal"] + g["reduce"]), "cap: a skip survived"
assert json.load(open(w + "/frc/genotype.json"))["reduce_cell"] == "gdas_frc", "frc genotype"
assert open(w + "/nb/arch.txt").read().count("~") == 6, "nb201 arch.txt"
assert open(w + "/beta/genotype.py").read().startswith("genotype = Genotype(normal=["), "genotype.py"
print("ok: genotypes")
PY
cat > "$work/genotypes.py" <<'PY'
from collections import namedtuple
Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])
DARTS = DARTS_V2
PY
run v2 "valid_acc" "$train" --out "$work/v2" --genotype "$work/genotypes.py" --genotype-name DARTS_V2 \
  "${tiny1[@]}" --channels 4 --cells 3 --no-auxiliary
run nbtrain "valid_acc" "$train" --out "$work/nbtrain" --space nb201 --genotype "$work/nb/arch.txt" \
  "${tiny1[@]}" --channels 4 --cells 1
for r in v2 nbtrain; do
  out=$(timeout 120 "$infer" --run "$work/$r" --device cpu --limit 32 --batch-size 8 2>&1)
  want=$(python3 -c "import json,sys; print('%.4f' % [json.loads(l) for l in open(sys.argv[1])][-1]['valid_acc'])" "$work/$r/log.jsonl")
  if grep -q "accuracy $want," <<< "$out"; then
    echo "ok: infer $r ($want)"
  else
    echo "FAIL: infer $r: expected accuracy $want: $out"; failures=$((failures + 1))
  fi
done
[ $failures -eq 0 ]
