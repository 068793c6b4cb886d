#!/usr/bin/env python3
"""Reference outputs (and timings) of an ONNX model with onnxruntime.

Usage:
  ort_reference.py MODEL INPUTS OUTPUTS [--repeat N]

INPUTS is raw little-endian float32, a whole number of input tensors (the
model's input shape, batch 1); OUTPUTS receives the outputs the same way.
With --repeat N each input is run N extra times and the per-inference latency
(µs: p50, p99, mean) is printed as JSON on stdout, single-threaded like tract.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> int:
    args = sys.argv[1:]
    repeat = 0
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, inputs, outputs = args
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [int(d) for d in inp.shape]
    per = int(np.prod(shape))
    data = np.fromfile(inputs, dtype="<f4")
    if data.size % per:
        print(f"{inputs}: {data.size} floats is not a multiple of the input size {per}", file=sys.stderr)
        return 2
    xs = data.reshape((-1, *shape[1:]))
    outs = []
    lat = []
    for x in xs:
        x = x.reshape(shape)
        outs.append(sess.run(None, {inp.name: x})[0].astype("<f4").ravel())
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            sess.run(None, {inp.name: x})
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
    np.concatenate(outs).tofile(outputs)
    if repeat:
        lat = np.array(lat)
        print(json.dumps({"runs": int(lat.size), "p50_us": float(np.percentile(lat, 50)),
                          "p99_us": float(np.percentile(lat, 99)), "mean_us": float(lat.mean())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
