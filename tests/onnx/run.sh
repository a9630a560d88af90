#!/usr/bin/env bash
# ctest onnx_runtime: exports the test networks (export_cases) and runs them in ONNX Runtime
# (check.py); with DARTS_TRAIN, also a tiny darts_train run with --export-onnx (a DARTS and a
# NAS-Bench-201 network), its model compared with the run's own network loaded by
# darts::Classifier. Exit 77 (a visible skip) when the onnx / onnxruntime Python packages are
# missing.
# Usage: run.sh EXPORT_CASES OUT_DIR [DARTS_TRAIN]
set -euo pipefail
exporter=$1 out=$2 train=${3:-}
python3 -c "import numpy, onnx, onnxruntime" 2> /dev/null || {
  echo "SKIP: python3 cannot import numpy, onnx and onnxruntime (scripts/setup.sh installs them)"
  exit 77
}
check=$(dirname "$0")/check.py
rm -rf "$out"
mkdir -p "$out/cases"
"$exporter" "$out/cases"
python3 "$check" "$out/cases" --expect-folded
[ -n "$train" ] || exit 0
tiny=(--device cpu --subset 64 --test-subset 32 --batch-size 16 --epochs 1 --quiet)
cat > "$out/v2.py" <<'PY'
DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])
PY
echo '|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|' \
  > "$out/nb.txt"
timeout 300 "$train" --out "$out/v2" --genotype "$out/v2.py" --genotype-name DARTS_V2 \
  --channels 8 --cells 3 "${tiny[@]}" --export-onnx "$out/v2.onnx"
timeout 300 "$train" --out "$out/nb" --space nb201 --genotype "$out/nb.txt" --channels 4 \
  --cells 1 "${tiny[@]}" --export-onnx "$out/nb.onnx"
for r in v2 nb; do
  side=$(python3 -c "import onnx, sys; print(onnx.load(sys.argv[1]).graph.input[0].type.tensor_type.shape.dim[2].dim_value)" "$out/$r.onnx")
  mkdir -p "$out/run_$r"
  "$exporter" "$out/run_$r" --run "$out/$r" --onnx "$(realpath "$out/$r.onnx")" --side "$side"
  python3 "$check" "$out/run_$r"
done
