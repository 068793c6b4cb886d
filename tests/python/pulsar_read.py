#!/usr/bin/env python3
"""Read a triad topic with the Python Pulsar client (its Avro schema support)
and print one JSON line per message: the decoded record, the raw payload
(base64) and the message's properties.

Usage:
  pulsar_read.py --service URL --topic PULSAR_TOPIC --schema FILE.avsc
                 [--expect N] [--timeout S] [--token-file F]

Reads from the earliest message until N messages arrived (or, without
--expect, until nothing new arrives for --timeout seconds).
"""
import argparse
import base64
import json
import sys
import time

import pulsar
from pulsar.schema import AvroSchema


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--service", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--expect", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--token-file", default=None)
    a = ap.parse_args()
    schema_def = json.load(open(a.schema))
    schema = AvroSchema(None, schema_definition=schema_def)
    auth = pulsar.AuthenticationToken(open(a.token_file).read().strip()) if a.token_file else None
    client = pulsar.Client(a.service, authentication=auth, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    reader = client.create_reader(a.topic, pulsar.MessageId.earliest, schema=schema)
    n = 0
    deadline = time.time() + (a.timeout if a.expect is None else max(a.timeout, 60))
    while True:
        if a.expect is not None and n >= a.expect:
            break
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        try:
            msg = reader.read_next(timeout_millis=int(min(remaining, a.timeout) * 1000))
        except pulsar.Timeout:
            if a.expect is None:
                break
            continue
        rec = msg.value()
        print(json.dumps({
            "record": rec,
            "raw": base64.b64encode(msg.data()).decode(),
            "properties": msg.properties(),
            "key": msg.partition_key(),
        }))
        n += 1
    reader.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
