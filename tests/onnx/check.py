#!/usr/bin/env python3
"""Runs the models listed in DIR/cases.json (written by export_cases) through the ONNX checker
(full check: shape inference too) and ONNX Runtime on the CPU, and compares the logits with
cudarts's: normalised error ||ort - cudarts|| / ||cudarts|| must be <= 1e-5. Also checks the
opset and IR version the README states, the symbolic batch size (a smaller batch gives the
first rows), that the output shape is the one cudarts gave, and, with --expect-folded, that
the folded export has fewer BatchNormalization nodes than the unfolded one.
Exit status: 0 pass, 1 a failure, 77 onnx or onnxruntime missing (ctest reports a skip)."""
import json
import os
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIP: {e} (scripts/setup.sh installs onnx and onnxruntime from PyPI)")
    sys.exit(77)

TOL = 1e-5


def main(d, expect_folded):
    cases = json.load(open(os.path.join(d, "cases.json")))
    failures = 0
    for case in cases:
        x = np.fromfile(os.path.join(d, case["name"] + ".input.bin"), dtype=np.float32)
        x = x.reshape(case["input"])
        ref = np.fromfile(os.path.join(d, case["name"] + ".logits.bin"), dtype=np.float32)
        ref = ref.reshape(case["logits"]).astype(np.float64)
        bn_counts = []
        for m in case["models"]:
            path = m if os.path.isabs(m) else os.path.join(d, m)
            model = onnx.load(path)
            onnx.checker.check_model(model, full_check=True)
            opsets = {o.domain: o.version for o in model.opset_import}
            ok = opsets.get("", None) == 17 and model.ir_version == 8
            in_dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
            ok = ok and in_dim0.dim_param == "N"
            bn_counts.append(sum(n.op_type == "BatchNormalization" for n in model.graph.node))
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            (out,) = sess.run(None, {"input": x})
            shape_ok = list(out.shape) == case["logits"]
            err = float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))
            # A batch of one: the symbolic batch size really is free.
            (one,) = sess.run(None, {"input": x[:1]})
            err1 = float(np.linalg.norm(one[0].astype(np.float64) - ref[0]) /
                         np.linalg.norm(ref[0]))
            good = ok and shape_ok and err <= TOL and err1 <= TOL
            failures += not good
            print(f"{'ok  ' if good else 'FAIL'} {os.path.basename(path)}: {len(model.graph.node)} "
                  f"nodes, {bn_counts[-1]} BatchNormalization, normalised error {err:.2e} "
                  f"(batch {x.shape[0]}), {err1:.2e} (batch 1), opset {opsets.get('', '?')}, "
                  f"IR {model.ir_version}, output {list(out.shape)}")
        if expect_folded and len(bn_counts) == 2 and not bn_counts[0] < bn_counts[1]:
            print(f"FAIL {case['name']}: folding left {bn_counts[0]} of {bn_counts[1]} "
                  "BatchNormalization nodes")
            failures += 1
    print(f"{len(cases)} cases, {failures} failures (ONNX {onnx.__version__}, "
          f"ONNX Runtime {ort.__version__})")
    return 1 if failures else 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sys.exit(main(args[0], "--expect-folded" in sys.argv))
