#!/usr/bin/env python3
"""Reference YOLOv8 post-processing, written independently of triad's Rust.

usage: yolo_reference.py MODEL.onnx INPUT.f32 RAW_OUT.f32 DETS.json \
           --classes C --conf T --iou T --max-det N --src W H --dst W H --roi X Y

Runs onnxruntime on INPUT (a [1, 3, H, W] float32 tensor, little-endian),
writes the raw output ([1, 4 + C, N] float32) to RAW_OUT, then decodes it the
way Ultralytics' `non_max_suppression` + `scale_boxes` do (best class per
anchor, score > conf, xywh -> xyxy, class-offset NMS as torchvision's
batched_nms, max_det, letterbox undone with gain and rounded padding, clip)
and writes the kept boxes, highest score first, as JSON to DETS.
"""
import argparse
import json

import numpy as np
import onnxruntime as ort


def nms(boxes, scores, iou):
    """Greedy NMS over xyxy boxes (torchvision.ops.nms semantics)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        ratio = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[ratio <= iou]
    return np.array(keep, dtype=np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("raw_out")
    ap.add_argument("dets")
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--conf", type=float, required=True)
    ap.add_argument("--iou", type=float, required=True)
    ap.add_argument("--max-det", type=int, required=True)
    ap.add_argument("--src", type=int, nargs=2, required=True)
    ap.add_argument("--dst", type=int, nargs=2, required=True)
    ap.add_argument("--roi", type=int, nargs=2, required=True)
    a = ap.parse_args()
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    x = np.fromfile(a.input, dtype="<f4").reshape(shape)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    y.astype("<f4").tofile(a.raw_out)
    p = y[0].T.astype(np.float64)  # [N, 4 + C]
    cls = p[:, 4 : 4 + a.classes]
    conf = cls.max(1)
    j = cls.argmax(1)
    m = conf > a.conf
    xywh, conf, j = p[m, :4], conf[m], j[m]
    xyxy = np.stack(
        [xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2, xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2],
        1,
    )
    # batched_nms: offset each class's boxes far apart so classes never overlap.
    offset = j[:, None] * 1e5
    keep = nms(xyxy + offset, conf, a.iou)[: a.max_det]
    xyxy, conf, j = xyxy[keep], conf[keep], j[keep]
    (sw, sh), (dw, dh) = a.src, a.dst
    gain = min(dh / sh, dw / sw)
    padx = round((dw - sw * gain) / 2 - 0.1)
    pady = round((dh - sh * gain) / 2 - 0.1)
    xyxy[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - padx) / gain, 0, sw) + a.roi[0]
    xyxy[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - pady) / gain, 0, sh) + a.roi[1]
    out = [
        {"class": int(c), "score": float(s), "box": [float(v) for v in b]} for b, s, c in zip(xyxy, conf, j)
    ]
    with open(a.dets, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
