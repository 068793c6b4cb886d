#!/usr/bin/env python3
"""The reference for benches/pulsar.rs: the Python Pulsar client (C++ core)
doing the same work as triad, in blocks the bench asks for, so that both
clients run alternately against the same broker and meet the same noise.

It opens one client and two unbatched producers (as triad sends), prints
{"ready": true}, then answers one JSON line per request line on stdin:

  {"op": "latency", "count": N}     N synchronous sends of a ControlCommand
                                    (Avro), one at a time; -> {"us": [...]}
                                    (every send's latency, in order)
  {"op": "throughput", "count": N}  N InspectionResults pipelined with
                                    send_async, then flush; -> {"seconds": s}
  {"op": "quit"}

Usage: pulsar_reference.py --service URL --latency-topic T --throughput-topic T
       --latency-schema F.avsc --throughput-schema F.avsc
"""
import argparse
import json
import sys
import time

import pulsar
from pulsar.schema import AvroSchema


def command(i: int) -> dict:
    env = {"schema_version": 1, "node": "python-bench", "sequence": i, "stamp_ns": time.time_ns(),
           "clock": "FreeRunning", "clock_offset_ns": None}
    return {"envelope": env, "command_id": f"cmd-{i}", "axis": "bench_axis", "action": "SetRate", "value": 10.0,
            "reason": "benchmark", "issued_by": "bench", "token": None}


def result(i: int) -> dict:
    env = {"schema_version": 1, "node": "python-bench", "sequence": i, "stamp_ns": time.time_ns(),
           "clock": "FreeRunning", "clock_offset_ns": None}
    fail = i % 17 == 0
    return {"envelope": env, "cell": "bench_cell", "part_id": f"M{1 + i // 24:06d}", "weld_index": i % 24,
            "batch_id": f"B{1 + i // 24:06d}", "frame_stamp_ns": time.time_ns(), "roi_hash": f"{i:032x}",
            "verdict": "Fail" if fail else "Pass",
            "defects": [{"class": "porosity", "score": 0.9, "x": 24, "y": 16, "w": 8, "h": 8}] if fail else [],
            "model_name": "weld_seam", "model_version": "1.0.0", "latency_us": 800}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--service", required=True)
    ap.add_argument("--latency-topic", required=True)
    ap.add_argument("--throughput-topic", required=True)
    ap.add_argument("--latency-schema", required=True)
    ap.add_argument("--throughput-schema", required=True)
    a = ap.parse_args()
    client = pulsar.Client(a.service, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))

    def producer(topic: str, avsc: str):
        schema = AvroSchema(None, schema_definition=json.load(open(avsc)))
        return client.create_producer(topic, schema=schema, batching_enabled=False, max_pending_messages=100000,
                                      block_if_queue_full=True)

    lat_producer = producer(a.latency_topic, a.latency_schema)
    thr_producer = producer(a.throughput_topic, a.throughput_schema)
    seq = 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        n = int(req["count"])
        if req["op"] == "latency":
            us = []
            for _ in range(n):
                seq += 1
                r = command(seq)
                t0 = time.perf_counter_ns()
                lat_producer.send(r, partition_key="bench")
                us.append((time.perf_counter_ns() - t0) / 1000.0)
            print(json.dumps({"us": us}), flush=True)
        elif req["op"] == "throughput":
            recs = []
            for _ in range(n):
                seq += 1
                recs.append(result(seq))
            errors = []
            cb = lambda res, _id: errors.append(res) if res != pulsar.Result.Ok else None
            t0 = time.perf_counter()
            for r in recs:
                thr_producer.send_async(r, cb, partition_key="bench_cell")
            thr_producer.flush()
            dt = time.perf_counter() - t0
            print(json.dumps({"seconds": dt, "errors": len(errors)}), flush=True)
        else:
            print(json.dumps({"error": f"unknown op {req['op']!r}: use latency, throughput or quit"}), flush=True)
    lat_producer.close()
    thr_producer.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
