#!/usr/bin/env bash
# The main job: a DARTS architecture search on Fashion-MNIST (Debian's dataset-fashion-mnist,
# no download), then the derived genotype and plots. A budget that finishes in minutes:
# on a GPU the DARTS network (C = 16, 8 cells, bilevel, batch 64) on 6400 images split
# 3200/3200, 8 epochs (400 iterations), replayed as CUDA graphs, architecture lr 1e-3; on a CPU
# about 8 minutes on two cores (C = 8, 3 cells, 6000 images split 3000/3000, 5 epochs, joint
# updates, batch 32, lr 0.05, architecture lr 3e-3: ten times DARTS's 3e-4, since the run has
# ~1/40 of its steps). `scripts/demo.sh --full` runs the full DARTS defaults instead (50 epochs
# on all 60000 images: hours). Extra arguments go to darts_search and override the budget, e.g.
#   scripts/demo.sh --mixed-op binary --epochs 3
# Output: runs/demo-<time>/ (log.jsonl, summary.txt, genotype.json, checkpoint, PNG plots).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

config=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=${CUDARTS_CUDA_ARCHS:-90}")
if [ -n "${CUDARTS_CUDA:-}" ]; then
  config+=("-DCUDARTS_CUDA=${CUDARTS_CUDA}")
fi
cmake -S . -B build "${config[@]}" > /dev/null
cmake --build build -j"$(nproc)" --target darts_search

bin=build/samples/darts_search/darts_search
out=${CUDARTS_DEMO_OUT:-runs/demo-$(date +%Y%m%d-%H%M%S)}
full=0
if [ "${1:-}" = --full ]; then
  full=1
  shift
fi
if [ $full -eq 1 ]; then
  budget=(--device auto)
elif [ "$($bin --which-device)" = cuda ]; then
  budget=(--device cuda --subset 6400 --epochs 8 --arch-lr 1e-3)
  # Graph replays need continuous MixedOps (the default); other types run eagerly.
  case " $* " in *" --mixed-op "*) ;; *) budget+=(--cuda-graph) ;; esac
else
  budget=(--device cpu --channels 8 --cells 3 --subset 6000 --epochs 5 --joint --lr 0.05
          --batch-size 32 --arch-lr 3e-3)
fi
echo "demo: darts_search ${budget[*]} $* --out $out"
start=$(date +%s)
"$bin" "${budget[@]}" "$@" --out "$out"
echo "demo: search took $(( $(date +%s) - start )) s"
python3 scripts/plot_search.py "$out" || echo "demo: plotting skipped (python3-matplotlib or graphviz missing)"
echo "demo: genotype in $out/genotype.json, architecture in $out/summary.txt, plots in $out/*.png"
echo "demo: retrain it with build/samples/darts_train/darts_train --genotype $out/genotype.json --out <dir>"
