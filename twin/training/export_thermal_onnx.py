#!/usr/bin/env python3
"""Export the weld zone's heat balance as an ONNX twin model.

The twin's predictor (twin/src/physics.rs) integrates

    dT/dt = I^2 * (gain_base + gain_rate * ppm / ppm_ref) - cooling * (T - T_ambient)

exactly over one sample interval with the inputs held. This script writes that
same step as an ONNX graph, so that the twin's model can be shipped, signed and
hot-swapped like an inspection model (docs/security.md):

    input  "x": float32 [1, 5] = [temp_c, dt_s, feed_ppm, weld_current_a, ambient_c]
    output "y": float32 [1, 1] = predicted temperature dt_s later, degC

Usage (from the repository root):

    .venv/bin/python twin/training/export_thermal_onnx.py [--out DIR] [--version V]
        [--gain-scale S] [--cooling C] [--nan-above TEMP]

Defaults reproduce ThermalModel::default() (the parameters fitted on the
simulated line's nominal run) and overwrite twin/models/weld_thermal/
(model.onnx and manifest.json). The options make variants for the model-swap
tests: --gain-scale and --cooling a "re-fitted" model, --nan-above a broken
model whose output is NaN whenever the input temperature exceeds TEMP (a cold
golden input passes; a running weld does not).
"""
import argparse
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ThermalModel::default(): 155 degC rise at 12 PPM and 5 kA, time constant 4 s.
K = 155.0 * 0.25 / (5000.0 * 5000.0)
GAIN_BASE = K * 0.4
GAIN_RATE = K * 0.6
PPM_REF = 12.0
COOLING = 0.25

FEATURES = ["temp_c", "dt_s", "feed_ppm", "weld_current_a", "ambient_c"]


def build(gain_base, gain_rate, ppm_ref, cooling, nan_above=None):
    inits = []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    nodes = []
    for i, f in enumerate(FEATURES):
        idx = const(f"idx_{f}", [i], np.int64)
        nodes.append(helper.make_node("Gather", ["x", idx], [f], axis=1))
    nodes += [
        # heat = I^2 * (gain_base + gain_rate / ppm_ref * ppm), zero while the axis stands
        helper.make_node("Mul", ["weld_current_a", "weld_current_a"], ["i2"]),
        helper.make_node("Mul", ["feed_ppm", const("k_rate", gain_rate / ppm_ref)], ["duty_rate"]),
        helper.make_node("Add", ["duty_rate", const("k_base", gain_base)], ["duty"]),
        helper.make_node("Mul", ["i2", "duty"], ["heat_on"]),
        helper.make_node("Greater", ["feed_ppm", const("zero", 0.0)], ["moving"]),
        helper.make_node("Where", ["moving", "heat_on", "zero"], ["heat"]),
        # target = ambient + heat / cooling
        helper.make_node("Mul", ["heat", const("inv_cooling", 1.0 / cooling)], ["rise"]),
        helper.make_node("Add", ["ambient_c", "rise"], ["target"]),
        # y = target + (T - target) * exp(-cooling * dt)
        helper.make_node("Mul", ["dt_s", const("neg_cooling", -cooling)], ["decay_arg"]),
        helper.make_node("Exp", ["decay_arg"], ["decay"]),
        helper.make_node("Sub", ["temp_c", "target"], ["gap"]),
        helper.make_node("Mul", ["gap", "decay"], ["gap_left"]),
    ]
    if nan_above is None:
        nodes.append(helper.make_node("Add", ["target", "gap_left"], ["y"]))
    else:
        # sqrt(nan_above - T) is NaN above the threshold; times 1e-30 it leaves
        # finite outputs unchanged (a factor of 0 would be folded away).
        nodes += [
            helper.make_node("Add", ["target", "gap_left"], ["y_inner"]),
            helper.make_node("Sub", [const("nan_thr", nan_above), "temp_c"], ["nan_gap"]),
            helper.make_node("Sqrt", ["nan_gap"], ["nan_sqrt"]),
            helper.make_node("Mul", ["nan_sqrt", const("nan_tiny", 1e-30)], ["nan_term"]),
            helper.make_node("Add", ["y_inner", "nan_term"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "weld_thermal",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, len(FEATURES)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="triad")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def manifest(version):
    return {
        "name": "weld_thermal",
        "version": version,
        "kind": "twin",
        "input": {"name": "x", "shape": [1, len(FEATURES)], "features": FEATURES},
        "output": {"name": "y", "shape": [1, 1]},
    }


def reference(x, gain_base, gain_rate, ppm_ref, cooling):
    t, dt, ppm, i, amb = (float(v) for v in x)
    heat = i * i * (gain_base + gain_rate * ppm / ppm_ref) if ppm > 0 else 0.0
    target = amb + heat / cooling
    return target + (t - target) * np.exp(-cooling * dt)


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=root / "twin/models/weld_thermal")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--gain-scale", type=float, default=1.0, help="multiply both heat gains")
    ap.add_argument("--cooling", type=float, default=COOLING, help="cooling coefficient, 1/s")
    ap.add_argument("--nan-above", type=float, default=None, help="output NaN above this input temperature")
    a = ap.parse_args()
    params = (GAIN_BASE * a.gain_scale, GAIN_RATE * a.gain_scale, PPM_REF, a.cooling)
    model = build(*params, nan_above=a.nan_above)
    a.out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, a.out / "model.onnx")
    (a.out / "manifest.json").write_text(json.dumps(manifest(a.version), indent=2) + "\n")

    # Check the graph against the formula with onnxruntime.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(a.out / "model.onnx"), providers=["CPUExecutionProvider"])
    cases = [[180.0, 0.05, 12.0, 5000.0, 25.0], [25.0, 0.05, 12.0, 5000.0, 25.0], [150.0, 1.0, 0.0, 0.0, 22.0]]
    for x in cases:
        if a.nan_above is not None and x[0] > a.nan_above:
            continue
        y = sess.run(None, {"x": np.asarray([x], dtype=np.float32)})[0][0, 0]
        ref = reference(x, *params)
        assert abs(y - ref) < 1e-3, (x, y, ref)
    print(f"wrote {a.out}/model.onnx and manifest.json (weld_thermal {a.version})")


if __name__ == "__main__":
    main()
