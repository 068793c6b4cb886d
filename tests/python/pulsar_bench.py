#!/usr/bin/env python3
"""The Python Pulsar client (C++ core) doing the same work as triad's bench:

  latency:    N synchronous sends of a ControlCommand (Avro), one at a time,
              no batching; per-send latency percentiles.
  throughput: N InspectionResults (Avro), pipelined with send_async, no
              batching (as triad sends them), then flush; messages per second.
              With --batching, the same with the client's default batching,
              for reference.

Prints one JSON object. Usage:
  pulsar_bench.py --service URL --mode latency|throughput --topic T --schema F.avsc --count N [--batching]
"""
import argparse
import json
import sys
import time

import pulsar
from pulsar.schema import AvroSchema


def record(kind: str, i: int) -> dict:
    env = {"schema_version": 1, "node": "python-bench", "sequence": i, "stamp_ns": time.time_ns(),
           "clock": "FreeRunning", "clock_offset_ns": None}
    if kind == "latency":
        return {"envelope": env, "command_id": f"cmd-{i}", "axis": "bench_axis", "action": "SetRate", "value": 10.0,
                "reason": "benchmark", "issued_by": "bench", "token": None}
    fail = i % 17 == 0
    return {"envelope": env, "cell": "bench_cell", "part_id": f"M{1 + i // 24:06d}", "weld_index": i % 24,
            "batch_id": f"B{1 + i // 24:06d}", "frame_stamp_ns": time.time_ns(), "roi_hash": f"{i:032x}",
            "verdict": "Fail" if fail else "Pass",
            "defects": [{"class": "porosity", "score": 0.9, "x": 24, "y": 16, "w": 8, "h": 8}] if fail else [],
            "model_name": "weld_seam", "model_version": "1.0.0", "latency_us": 800}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--service", required=True)
    ap.add_argument("--mode", choices=["latency", "throughput"], required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--batching", action="store_true")
    a = ap.parse_args()
    schema = AvroSchema(None, schema_definition=json.load(open(a.schema)))
    client = pulsar.Client(a.service, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(a.topic, schema=schema, batching_enabled=a.batching,
                                      max_pending_messages=100000, block_if_queue_full=True)
    key = "bench"
    if a.mode == "latency":
        for i in range(200):  # warm-up
            producer.send(record("latency", i), partition_key=key)
        lat = []
        for i in range(a.count):
            r = record("latency", i)
            t0 = time.perf_counter_ns()
            producer.send(r, partition_key=key)
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
        lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]
        print(json.dumps({"count": len(lat), "p50_us": q(0.5), "p99_us": q(0.99), "max_us": lat[-1]}))
    else:
        recs = [record("throughput", i) for i in range(a.count)]
        errors = []
        cb = lambda res, _id: errors.append(res) if res != pulsar.Result.Ok else None
        t0 = time.perf_counter()
        for r in recs:
            producer.send_async(r, cb, partition_key="bench_cell")
        producer.flush()
        dt = time.perf_counter() - t0
        print(json.dumps({"count": a.count, "seconds": dt, "per_s": a.count / dt, "errors": len(errors)}))
    producer.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
