#!/usr/bin/env python3
"""Variants of the weld-seam ONNX model for the model-swap tests, made with onnx.helper.

Usage:
  make_models.py nan  IN.onnx OUT.onnx [THRESHOLD]
      Same outputs as IN, except that every output is NaN when any input
      value exceeds THRESHOLD (default -1.5, i.e. any pixel brighter than
      about 32 grey levels). A black golden input (-2.0 everywhere) passes
      its golden check; real weld frames produce NaN.
  make_models.py slow IN.onnx OUT.onnx [LAYERS]
      Same outputs as IN (to within float rounding), but LAYERS (default 40)
      extra 9x9 convolutions over the input are computed and added times
      1e-30: a valid model that is many times slower.
  make_models.py scale IN.onnx OUT.onnx
      Same outputs, different bytes (an extra Identity): a "retrained" model.

The output keeps its name and shape; the graph input keeps its name, so the
manifest of IN describes OUT too.
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def rename_output(graph, new_inner):
    """Rename the graph's output tensor to `new_inner` internally and return the public name."""
    out = graph.output[0].name
    for node in graph.node:
        for i, o in enumerate(node.output):
            if o == out:
                node.output[i] = new_inner
    return out


def const(graph, name, array):
    graph.initializer.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))


def make_nan(m, threshold):
    g = m.graph
    inp = g.input[0].name
    out = rename_output(g, "grid_inner")
    const(g, "nan_thr", np.array(threshold, dtype=np.float32))
    # A tiny factor rather than zero: optimisers fold `x * 0` to 0 (tract
    # does), which would drop the NaN; 1e-30 leaves finite outputs unchanged.
    const(g, "nan_tiny", np.array(1e-30, dtype=np.float32))
    g.node.extend(
        [
            helper.make_node("ReduceMax", [inp], ["nan_max"], keepdims=1),
            helper.make_node("Sub", ["nan_thr", "nan_max"], ["nan_gap"]),
            helper.make_node("Sqrt", ["nan_gap"], ["nan_sqrt"]),
            helper.make_node("Mul", ["nan_sqrt", "nan_tiny"], ["nan_term"]),
            helper.make_node("Add", ["grid_inner", "nan_term"], [out]),
        ]
    )


def make_slow(m, layers):
    g = m.graph
    inp = g.input[0].name
    out = rename_output(g, "grid_inner")
    w = np.full((1, 1, 9, 9), 1.0 / 81.0, dtype=np.float32)
    const(g, "slow_w", w)
    const(g, "slow_tiny", np.array(1e-30, dtype=np.float32))
    prev = inp
    nodes = []
    for k in range(layers):
        nxt = f"slow_{k}"
        nodes.append(helper.make_node("Conv", [prev, "slow_w"], [nxt], pads=[4, 4, 4, 4]))
        prev = nxt
    nodes += [
        helper.make_node("ReduceMean", [prev], ["slow_mean"], keepdims=1),
        helper.make_node("Mul", ["slow_mean", "slow_tiny"], ["slow_term"]),
        helper.make_node("Add", ["grid_inner", "slow_term"], [out]),
    ]
    g.node.extend(nodes)


def make_scale(m):
    g = m.graph
    out = rename_output(g, "grid_inner")
    g.node.append(helper.make_node("Identity", ["grid_inner"], [out]))


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    kind, src, dst = sys.argv[1:4]
    m = onnx.load(src)
    if kind == "nan":
        make_nan(m, float(sys.argv[4]) if len(sys.argv) > 4 else -1.5)
    elif kind == "slow":
        make_slow(m, int(sys.argv[4]) if len(sys.argv) > 4 else 40)
    elif kind == "scale":
        make_scale(m)
    else:
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 2
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
