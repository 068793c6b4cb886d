#!/usr/bin/env python3
"""Publish to a triad topic with the Python Pulsar client and its Avro schema
support, or show that the broker refuses a producer.

Usage:
  pulsar_publish.py --service URL --topic T --schema FILE.avsc --record JSON [--bytes-field NAME=FILE]
      publish one record (a JSON object matching the schema); --bytes-field sets
      the Avro `bytes` field NAME to the contents of FILE (e.g. a model bundle
      archive); prints the message id
  pulsar_publish.py --service URL --topic T --schema-json TEXT --expect-refusal
      create a producer with that schema; exit 0 and print the broker's error
      if it is refused, exit 1 if it is accepted
"""
import argparse
import json
import sys

import pulsar
from pulsar.schema import AvroSchema


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--service", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schema")
    ap.add_argument("--schema-json")
    ap.add_argument("--record")
    ap.add_argument("--expect-refusal", action="store_true")
    ap.add_argument("--token-file", default=None)
    ap.add_argument("--bytes-field", action="append", default=[])
    a = ap.parse_args()
    definition = json.loads(a.schema_json) if a.schema_json else json.load(open(a.schema))
    schema = AvroSchema(None, schema_definition=definition)
    auth = pulsar.AuthenticationToken(open(a.token_file).read().strip()) if a.token_file else None
    client = pulsar.Client(a.service, authentication=auth, operation_timeout_seconds=15,
                           logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        producer = client.create_producer(a.topic, schema=schema, batching_enabled=False)
    except Exception as e:  # the broker's refusal
        print(f"{type(e).__name__}: {e}")
        client.close()
        return 0 if a.expect_refusal else 1
    if a.expect_refusal:
        print("producer accepted")
        client.close()
        return 1
    record = json.loads(a.record)
    for spec in a.bytes_field:
        name, path = spec.split("=", 1)
        record[name] = open(path, "rb").read()
    key = record.get("axis") or record.get("cell") or record.get("target") or "k"
    msg_id = producer.send(record, partition_key=key)
    print(json.dumps({"message_id": str(msg_id)}))
    producer.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
