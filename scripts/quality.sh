#!/usr/bin/env bash
# A search-quality check anyone can run: searches a cell on Fashion-MNIST, retrains it, and
# retrains as many random architectures of the same space with the same budget and seeds,
# then prints the searched cell's test accuracy next to the random ones' (each architecture's
# mean and spread over its seeds, the searched cell's rank, and whether the difference is
# beyond the seed-to-seed noise).
#
#   scripts/quality.sh [--space darts|nb201] [--budget cpu|gpu] [--random R] [--seeds S]
#                      [--out DIR] [--build DIR]
#
# Budgets: cpu (about 15 minutes on two cores: small networks, 5,000 images, 3 retraining
# epochs) and gpu (the DARTS search network for 3 epochs on 10,000 images, retraining 10
# epochs).
# Defaults: --space darts --budget cpu --random 5 --seeds 3 --out runs/quality.
set -euo pipefail
cd "$(dirname "$0")/.."
space=darts budget=cpu random=5 seeds=3 out=runs/quality build=build
while [ $# -gt 0 ]; do
  case $1 in
    --space) space=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --random) random=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "quality: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case $space in darts|nb201) ;; *) echo "quality: --space darts or nb201, not '$space'" >&2; exit 2 ;; esac
[ "$seeds" -ge 1 ] && [ "$random" -ge 1 ] || { echo "quality: --seeds and --random must be >= 1" >&2; exit 2; }
search=$build/samples/darts_search/darts_search train=$build/samples/darts_train/darts_train
[ -x "$search" ] && [ -x "$train" ] || { echo "quality: build first (scripts/test.sh): $search" >&2; exit 2; }
[ -e "$out" ] && { echo "quality: '$out' exists; choose another --out" >&2; exit 2; }
mkdir -p "$out"

# Budgets. Fashion-MNIST (28x28): no auxiliary head (it needs 32x32 inputs).
if [ "$budget" = cpu ]; then
  common=(--device cpu --subset 5000 --test-subset 2000 --quiet)
  if [ "$space" = darts ]; then
    search_args=(--channels 4 --cells 5 --epochs 6 --batch-size 64)
    train_args=(--channels 8 --cells 5 --epochs 3 --batch-size 64 --no-auxiliary --drop-path 0)
  else
    search_args=(--channels 8 --cells 1 --epochs 3 --batch-size 64)
    train_args=(--channels 8 --cells 1 --epochs 3 --batch-size 64)
  fi
elif [ "$budget" = gpu ]; then
  common=(--device cuda --subset 10000 --quiet)
  if [ "$space" = darts ]; then  # the DARTS search network (C = 16, 8 cells), 3 epochs
    search_args=(--epochs 3 --cuda-graph)
    train_args=(--channels 16 --cells 8 --epochs 10 --no-auxiliary --cuda-graph)
  else
    search_args=(--epochs 3 --cuda-graph)
    train_args=(--epochs 10 --cuda-graph)
  fi
else
  echo "quality: --budget cpu or gpu, not '$budget'" >&2; exit 2
fi
[ "$space" = nb201 ] && train_args+=(--space nb201) && search_args+=(--space nb201)

start=$(date +%s)
echo "quality: searching ($space, $budget budget) into $out/search"
"$search" --out "$out/search" "${common[@]}" "${search_args[@]}"
searched=$out/search/genotype.json

# Random architectures of the same space, drawn with their own seeds.
python3 - "$space" "$random" "$out" <<'PY'
import json, os, random, sys
space, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
darts_ops = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5"]
nb_ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
for i in range(count):
    rng = random.Random(1000 + i)
    if space == "darts":
        def cell():
            genes = []
            for node in range(4):
                for j in rng.sample(range(node + 2), 2):
                    genes.append([rng.choice(darts_ops), j])
            return genes
        g = {"normal": cell(), "normal_concat": [2, 3, 4, 5], "reduce": cell(),
             "reduce_concat": [2, 3, 4, 5]}
    else:
        ops = [rng.choice(nb_ops) for _ in range(6)]
        g = {"nb201": "|%s~0|+|%s~0|%s~1|+|%s~0|%s~1|%s~2|" % tuple(ops)}
    os.makedirs(os.path.join(out, "random%d" % i))
    with open(os.path.join(out, "random%d" % i, "genotype.json"), "w") as f:
        json.dump(g, f, indent=2)
PY

archs=(searched)
for ((i = 0; i < random; ++i)); do archs+=("random$i"); done
for a in "${archs[@]}"; do
  g=$searched
  [ "$a" != searched ] && g=$out/$a/genotype.json
  for ((s = 1; s <= seeds; ++s)); do
    echo "quality: retraining $a, seed $s"
    "$train" --genotype "$g" --out "$out/train/$a-seed$s" --seed "$s" "${common[@]}" "${train_args[@]}"
  done
done

python3 - "$out" "$seeds" "$(($(date +%s) - start))" "${archs[@]}" <<'PY'
import json, math, sys
out, seeds, seconds, archs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def acc(a, s):
    rows = [json.loads(l) for l in open("%s/train/%s-seed%d/log.jsonl" % (out, a, s)) if l.strip()]
    return 100.0 * rows[-1]["valid_acc"]
def mean(v): return sum(v) / len(v)
def sd(v): return math.sqrt(sum((x - mean(v)) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
res = {a: [acc(a, s) for s in range(1, seeds + 1)] for a in archs}
print("\nquality: test accuracy (%%) after retraining, %d seeds each (%d s in all)" % (seeds, seconds))
for a in archs:
    print("  %-9s mean %6.2f  spread (sd) %5.2f  seeds: %s" %
          (a, mean(res[a]), sd(res[a]), " ".join("%.2f" % x for x in res[a])))
means = sorted((mean(v), a) for a, v in res.items())[::-1]
rank = [a for _, a in means].index("searched") + 1
rand = [mean(res[a]) for a in archs if a != "searched"]
d = mean(res["searched"]) - mean(rand)
# The standard error of the difference: the searched cell's mean over its seeds against the
# mean of the random architectures' means.
se = math.sqrt(sd(res["searched"]) ** 2 / seeds + (sd(rand) ** 2 / len(rand) if len(rand) > 1 else 0))
print("  searched cell: rank %d of %d; %+.2f points against the random architectures' mean "
      "(%.2f, spread %.2f)" % (rank, len(archs), d, mean(rand), sd(rand)))
if se == 0 or abs(d) <= 2 * se:
    print("  verdict: within noise (|difference| <= 2 standard errors = %.2f points)" % (2 * se))
else:
    print("  verdict: %s than random beyond noise (|difference| > 2 standard errors = %.2f points)"
          % ("better" if d > 0 else "worse", 2 * se))
PY
