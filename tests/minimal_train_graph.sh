#!/usr/bin/env bash
# minimal_train with --cuda-graph (the step captured once and replayed; on the CPU backend the
# replay has CUDA-graph semantics) must print the same losses and test accuracy as the eager
# run: 1000 images in batches of 64, so the last, partial batch takes the eager path.
# Usage: minimal_train_graph.sh <minimal_train binary> [Fashion-MNIST dir]
set -euo pipefail
bin=$1 data=${2:-}
run() { "$bin" --device cpu ${data:+--data "$data"} --limit 1000 --batch-size 64 --seed 3 "$@"; }
eager=$(run) graphed=$(run --cuda-graph)
numbers() { grep -oE "loss [0-9.]+|train acc +[0-9.]+%|test accuracy [0-9.]+%"; }
a=$(numbers <<< "$eager") b=$(numbers <<< "$graphed")
echo "$graphed" | tail -3
if [ -z "$a" ] || [ "$a" != "$b" ]; then
  echo "minimal_train_graph: eager and graph-replay runs differ"; diff <(echo "$a") <(echo "$b")
  exit 1
fi
grep -q "CUDA graph replays" <<< "$graphed" || { echo "the graph run did not say it replayed"; exit 1; }
echo "minimal_train_graph: identical ($(wc -l <<< "$a") numbers)"
