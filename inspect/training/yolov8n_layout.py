#!/usr/bin/env python3
"""Write an ONNX graph with the published YOLOv8n architecture, untrained.

The layers, widths and depths are Ultralytics' `yolov8.yaml` at scale `n`
(depth 0.33, width 0.25): Conv-BN-SiLU blocks, C2f blocks with bottlenecks,
SPPF, an FPN/PAN neck with nearest upsampling and concatenation, and the
decoupled detection head (per level: a box branch ending in 4 x 16 DFL bins
and a class branch), decoded in the graph exactly as an Ultralytics ONNX
export does: DFL softmax-expectation, `dist2bbox` against the anchor grid
(centres at +0.5, strides 8/16/32), sigmoid class scores. The output is
`[1, 4 + classes, 8400]` for a 640x640 input: `cx, cy, w, h` in input pixels,
then one score per class.

The weights are random (seeded, He-scaled) with batch-norm statistics that
keep activations in range: the graph is for testing the decoding, the
letterbox, NMS and engine speed on the real architecture, not for finding
anything. (Trained YOLOv8 weights cannot be fetched on this machine.)

usage: yolov8n_layout.py OUT.onnx [--classes 80] [--size 640] [--seed 8] [--class-bias B]
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH, DEPTH, MAX_CH = 0.25, 0.33, 1024
REG_MAX = 16


class Graph:
    def __init__(self, seed):
        self.nodes, self.inits, self.n = [], [], 0
        self.rng = np.random.default_rng(seed)

    def name(self, p):
        self.n += 1
        return f"{p}_{self.n}"

    def const(self, arr, p="c"):
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op, inputs, p=None, **attrs):
        out = self.name(p or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x, c1, c2, k=1, s=1):
        """Ultralytics Conv: Conv2d (no bias) -> BatchNorm2d -> SiLU."""
        w = (self.rng.standard_normal((c2, c1, k, k)) * np.sqrt(2.0 / (c1 * k * k))).astype(np.float32)
        y = self.op("Conv", [x, self.const(w, "w")], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        scale = self.const(np.ones(c2, np.float32), "bn_scale")
        bias = self.const((self.rng.standard_normal(c2) * 0.1).astype(np.float32), "bn_bias")
        mean = self.const(np.zeros(c2, np.float32), "bn_mean")
        var = self.const(np.full(c2, 2.0, np.float32), "bn_var")
        y = self.op("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-3)
        return self.op("Mul", [y, self.op("Sigmoid", [y])], "silu")

    def conv2d(self, x, c1, c2, bias):
        """A plain 1x1 Conv2d with bias (the head's last layers)."""
        w = (self.rng.standard_normal((c2, c1, 1, 1)) * np.sqrt(1.0 / c1)).astype(np.float32)
        return self.op("Conv", [x, self.const(w, "w"), self.const(bias.astype(np.float32), "b")], kernel_shape=[1, 1])

    def bottleneck(self, x, c, shortcut):
        y = self.conv(self.conv(x, c, c, 3), c, c, 3)
        return self.op("Add", [x, y]) if shortcut else y

    def c2f(self, x, c1, c2, n, shortcut):
        c = int(c2 * 0.5)
        y = self.conv(x, c1, 2 * c, 1)
        a = self.name("split_a")
        b = self.name("split_b")
        self.nodes.append(helper.make_node("Split", [y, self.const(np.array([c, c], np.int64), "sp")], [a, b], axis=1))
        ys = [a, b]
        for _ in range(n):
            ys.append(self.bottleneck(ys[-1], c, shortcut))
        return self.conv(self.op("Concat", ys, axis=1), (2 + n) * c, c2, 1)

    def sppf(self, x, c1, c2, k=5):
        c = c1 // 2
        ys = [self.conv(x, c1, c, 1)]
        for _ in range(3):
            ys.append(self.op("MaxPool", [ys[-1]], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4))
        return self.conv(self.op("Concat", ys, axis=1), c * 4, c2, 1)

    def up(self, x):
        return self.op("Resize", [x, "", self.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")


def ch(c):
    return int(min(c, MAX_CH) * WIDTH)


def depth(n):
    return max(round(n * DEPTH), 1)


def build(classes, size, seed, class_bias=None):
    g = Graph(seed)
    x = "images"
    # Backbone.
    x = g.conv(x, 3, ch(64), 3, 2)
    x = g.conv(x, ch(64), ch(128), 3, 2)
    x = g.c2f(x, ch(128), ch(128), depth(3), True)
    x = g.conv(x, ch(128), ch(256), 3, 2)
    p3 = g.c2f(x, ch(256), ch(256), depth(6), True)
    x = g.conv(p3, ch(256), ch(512), 3, 2)
    p4 = g.c2f(x, ch(512), ch(512), depth(6), True)
    x = g.conv(p4, ch(512), ch(1024), 3, 2)
    x = g.c2f(x, ch(1024), ch(1024), depth(3), True)
    p5 = g.sppf(x, ch(1024), ch(1024))
    # Neck (FPN then PAN).
    h12 = g.c2f(g.op("Concat", [g.up(p5), p4], axis=1), ch(1024) + ch(512), ch(512), depth(3), False)
    h15 = g.c2f(g.op("Concat", [g.up(h12), p3], axis=1), ch(512) + ch(256), ch(256), depth(3), False)
    x = g.conv(h15, ch(256), ch(256), 3, 2)
    h18 = g.c2f(g.op("Concat", [x, h12], axis=1), ch(256) + ch(512), ch(512), depth(3), False)
    x = g.conv(h18, ch(512), ch(512), 3, 2)
    h21 = g.c2f(g.op("Concat", [x, p5], axis=1), ch(512) + ch(1024), ch(1024), depth(3), False)
    # Detect head.
    levels = [(h15, ch(256), 8), (h18, ch(512), 16), (h21, ch(1024), 32)]
    c2 = max(16, levels[0][1] // 4, REG_MAX * 4)
    c3 = max(levels[0][1], min(classes, 100))
    outs, anchors, strides = [], [], []
    for feat, c, s in levels:
        box = g.conv2d(g.conv(g.conv(feat, c, c2, 3), c2, c2, 3), c2, 4 * REG_MAX, np.ones(4 * REG_MAX))
        # Class bias as Ultralytics initialises it: log(5 / classes / (640 / s)^2).
        # (--class-bias overrides it, so an untrained graph yields candidates.)
        b = np.log(5 / classes / (640 / s) ** 2) if class_bias is None else class_bias
        cls_bias = np.full(classes, b)
        cls = g.conv2d(g.conv(g.conv(feat, c, c3, 3), c3, c3, 3), c3, classes, cls_bias)
        cat = g.op("Concat", [box, cls], axis=1)
        outs.append(g.op("Reshape", [cat, g.const(np.array([1, 4 * REG_MAX + classes, -1], np.int64), "shape")]))
        n = size // s
        yy, xx = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
        anchors.append(np.stack([xx.ravel(), yy.ravel()]))
        strides.append(np.full(n * n, s))
    x = g.op("Concat", outs, axis=2)  # [1, 64 + C, A]
    box = g.name("box")
    cls = g.name("cls")
    g.nodes.append(
        helper.make_node(
            "Split", [x, g.const(np.array([4 * REG_MAX, classes], np.int64), "sp")], [box, cls], axis=1
        )
    )
    # DFL: softmax over 16 bins per side, expectation of the bin index.
    a = sum(a.shape[1] for a in anchors)
    b = g.op("Reshape", [box, g.const(np.array([1, 4, REG_MAX, a], np.int64), "shape")])
    b = g.op("Softmax", [b], axis=2)
    proj = g.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, 1, REG_MAX, 1), "proj")
    dist = g.op("ReduceSum", [g.op("Mul", [b, proj]), g.const(np.array([2], np.int64), "axes")], keepdims=0)
    lt = g.name("lt")
    rb = g.name("rb")
    g.nodes.append(helper.make_node("Split", [dist, g.const(np.array([2, 2], np.int64), "sp")], [lt, rb], axis=1))
    anc = g.const(np.concatenate(anchors, axis=1)[None].astype(np.float32), "anchors")
    x1y1 = g.op("Sub", [anc, lt])
    x2y2 = g.op("Add", [anc, rb])
    cxy = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(np.array(2.0, np.float32), "two")])
    wh = g.op("Sub", [x2y2, x1y1])
    stride = g.const(np.concatenate(strides)[None, None].astype(np.float32), "strides")
    dbox = g.op("Mul", [g.op("Concat", [cxy, wh], axis=1), stride])
    out = g.op("Concat", [dbox, g.op("Sigmoid", [cls])], axis=1)
    g.nodes.append(helper.make_node("Identity", [out], ["output0"]))
    graph = helper.make_graph(
        g.nodes,
        "yolov8n_layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, a])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="triad")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--class-bias", type=float, default=None, help="class logits' bias (default: Ultralytics' prior)")
    a = ap.parse_args()
    model = build(a.classes, a.size, a.seed, a.class_bias)
    onnx.save(model, a.out)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    print(f"{a.out}: {len(model.graph.node)} nodes, {params / 1e6:.2f} M values, output [1, {4 + a.classes}, *]")


if __name__ == "__main__":
    main()
