#!/usr/bin/env python3
"""Smoke test of the standalone broker started by deploy/pulsar/standalone.

Run with the project venv, against a running broker:

    deploy/pulsar/standalone start [--auth-token]
    .venv/bin/python deploy/pulsar/smoke.py [-v]

The broker is found from the environment (PULSAR_SERVICE_URL, PULSAR_ADMIN_URL,
PULSAR_AUTH, PULSAR_ADMIN_TOKEN_FILE, ... as printed by `standalone start`) or,
when those are not set, by asking `deploy/pulsar/standalone env`.

What it checks (each prints PASS/FAIL; the last line is "N passed, N failed"):
  * an AVRO producer/consumer round trip on persistent://public/default/triad-smoke
  * the schema registry over the admin REST API: get, test compatibility,
    upload, version lookup, delete; namespace compatibility strategy BACKWARD;
    an incompatible producer and an incompatible upload are refused
  * deduplication enabled on the namespace and on a topic; a re-sent
    sequence id is dropped by the broker
  * compaction: compactionThreshold policy, a triggered compaction, and a
    compacted read that returns the latest value per key
  * schemaValidationEnforced: a schema-less producer is refused
  * token mode only: anonymous client and REST refused, superuser token
    accepted, a PyJWT-minted token for another role is refused until
    that role is granted produce/consume, an expired token is refused.

`-v` prints every REST call (method, path, body, status, response): that
trace is the reference for the Rust admin client.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pulsar
from pulsar.schema import AvroSchema, Double, Long, Record, String

HERE = os.path.dirname(os.path.abspath(__file__))
TENANT_NS = "public/default"
TOPIC = "triad-smoke"
RUN = uuid.uuid4().hex[:8]          # suffix for per-run topics


# --------------------------------------------------------------- schemas ---
# Three versions of one Avro record "triad.smoke.Reading". The record name and
# namespace must stay the same across versions for Avro schema resolution.

class Reading(Record):
    """v1: what the first producer registers."""
    _avro_namespace = "triad.smoke"
    line = String(required=True)
    value = Double(required=True)
    seq = Long(required=True)


def _reading_v2_compatible():
    class Reading(Record):  # noqa: F811 — same Avro name on purpose
        """v2: adds an optional field with a default -> BACKWARD compatible."""
        _avro_namespace = "triad.smoke"
        line = String(required=True)
        value = Double(required=True)
        seq = Long(required=True)
        unit = String(required_default=True)   # ["null","string"], "default": null
    return Reading


def _reading_incompatible():
    class Reading(Record):  # noqa: F811
        """Adds a required field without default: a reader with this schema
        cannot decode data written with v1 -> NOT BACKWARD compatible."""
        _avro_namespace = "triad.smoke"
        line = String(required=True)
        value = Double(required=True)
        seq = Long(required=True)
        operator = String(required=True)
    return Reading


ReadingV2 = _reading_v2_compatible()
ReadingBad = _reading_incompatible()


# ----------------------------------------------------------- environment ---

def broker_env():
    env = {k: v for k, v in os.environ.items() if k.startswith("PULSAR_")}
    if "PULSAR_SERVICE_URL" not in env or "PULSAR_ADMIN_URL" not in env:
        out = subprocess.run([os.path.join(HERE, "standalone"), "env"],
                             check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env.setdefault(k, v)
    env.setdefault("PULSAR_AUTH", "none")
    return env


class Admin:
    """Tiny admin REST client on urllib. call() returns (status, parsed body)."""

    def __init__(self, base, token=None, verbose=False):
        self.base, self.token, self.verbose = base.rstrip("/"), token, verbose

    def call(self, method, path, body=None, token="default"):
        token = self.token if token == "default" else token
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read().decode()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        if self.verbose:
            b = "" if body is None else " " + json.dumps(body)[:300]
            print(f"    REST {method} {path}{b} -> {status} {raw[:400]}")
        return status, parsed


# ---------------------------------------------------------------- checks ---

class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"PASS {name}" + (f"  ({detail})" if detail else ""))
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f"  ({detail})" if detail else ""))
        return cond


def eventually(fn, timeout=20.0, interval=0.5):
    """Retry fn() until it returns a truthy value (policies propagate async)."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(interval)


# The C++ client's log goes to a file (a Python logging.Logger would be called
# back from C++ threads and can abort the interpreter at exit). The client's
# logger is process-wide; the broker's error texts are read back from the file.
CLIENT_LOG_FILE = os.path.join(tempfile.gettempdir(), f"pulsar-smoke-client-{os.getpid()}.log")
_client_logger = pulsar.FileLogger(pulsar.LoggerLevel.Info, CLIENT_LOG_FILE)


def client_log_mark():
    try:
        return os.path.getsize(CLIENT_LOG_FILE)
    except OSError:
        return 0


def broker_said(needle, since):
    """Prints the first client log line after byte offset `since` containing needle."""
    try:
        with open(CLIENT_LOG_FILE, errors="replace") as f:
            f.seek(since)
            text = f.read()
    except OSError:
        return
    for line in text.splitlines():
        if needle in line:
            line = line[line.find("|") + 1:] if "|" in line else line   # drop the timestamp prefix
            print("    client log: " + " ".join(line.split())[:400])
            return


def new_client(url, token=None, timeout=15):
    kw = {"operation_timeout_seconds": timeout, "connection_timeout_ms": 5000, "logger": _client_logger}
    if token:
        kw["authentication"] = pulsar.AuthenticationToken(token)
    return pulsar.Client(url, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="print every REST call")
    args = ap.parse_args()

    env = broker_env()
    url, admin_url, auth = env["PULSAR_SERVICE_URL"], env["PULSAR_ADMIN_URL"], env["PULSAR_AUTH"]
    token = None
    if auth == "token":
        with open(env["PULSAR_ADMIN_TOKEN_FILE"]) as f:
            token = f.read().strip()
    print(f"broker {url} admin {admin_url} auth={auth} "
          f"version={env.get('PULSAR_VERSION', '?')} run={RUN}")
    admin = Admin(admin_url, token, args.verbose)
    c = Checks()
    ns = TENANT_NS
    topic = f"persistent://{ns}/{TOPIC}"

    # --- 0. token mode: who may connect ------------------------------------
    if auth == "token":
        st, body = admin.call("GET", f"/admin/v2/namespaces/public", token=None)
        c.check("token: anonymous REST refused", st == 401, f"HTTP {st} {body}")
        # The broker answers the CONNECT with an AuthenticationError and closes the
        # connection; the C++ client keeps retrying, so Python sees Timeout after
        # operation_timeout_seconds. The broker log shows the refusal.
        anon = new_client(url, timeout=5)
        blog = env.get("PULSAR_LOG_FILE", "")
        bmark = os.path.getsize(blog) if os.path.exists(blog) else 0
        try:
            anon.create_producer(f"persistent://{ns}/smoke-anon-{RUN}")
            c.check("token: anonymous client refused", False, "producer was created")
        except pulsar.PulsarException as e:
            refused = ""
            if os.path.exists(blog):
                with open(blog, errors="replace") as f:
                    f.seek(bmark)
                    refused = next((l for l in f if "Failed to authenticate" in l), "")
            c.check("token: anonymous client refused",
                    isinstance(e, pulsar.AuthenticationError) or (isinstance(e, pulsar.Timeout) and refused),
                    f"{type(e).__name__}: {e}")
            if refused:
                print("    broker log: " + refused.strip()[refused.find("ServerCnx"):][:300])
        finally:
            anon.close()

    # --- 1. AVRO round trip on public/default/triad-smoke -------------------
    client = new_client(url, token)
    consumer = client.subscribe(topic, f"smoke-sub-{RUN}", schema=AvroSchema(Reading),
                                initial_position=pulsar.InitialPosition.Latest)
    producer = client.create_producer(topic, schema=AvroSchema(Reading))
    sent = Reading(line="axis_07", value=71.5, seq=1)
    producer.send(sent)
    msg = consumer.receive(timeout_millis=15000)
    got = msg.value()
    consumer.acknowledge(msg)
    c.check("avro: produce/consume round trip",
            (got.line, got.value, got.seq) == (sent.line, sent.value, sent.seq),
            f"received line={got.line} value={got.value} seq={got.seq}")
    if auth == "token":
        c.check("token: superuser token accepted by the client", True)

    # --- 2. schema registry over REST ---------------------------------------
    spath = f"/admin/v2/schemas/{ns}/{TOPIC}"
    st, body = admin.call("GET", f"{spath}/schema")
    ok = st == 200 and body.get("type") == "AVRO" and json.loads(body["data"])["name"] == "Reading"
    c.check("rest: GET schema returns the AVRO schema", ok,
            f"HTTP {st} version={body.get('version') if isinstance(body, dict) else body}")

    st, _ = admin.call("PUT", f"/admin/v2/namespaces/{ns}/schemaCompatibilityStrategy", "BACKWARD")
    st2, strat = admin.call("GET", f"/admin/v2/namespaces/{ns}/schemaCompatibilityStrategy")
    c.check("rest: namespace schemaCompatibilityStrategy=BACKWARD",
            st == 204 and strat == "BACKWARD", f"PUT {st}, GET {st2} {strat!r}")

    # Incompatible producer must be refused by the broker.
    mark = client_log_mark()
    try:
        client.create_producer(topic, schema=AvroSchema(ReadingBad))
        c.check("schema: incompatible producer refused", False, "producer was created")
    except pulsar.PulsarException as e:
        c.check("schema: incompatible producer refused", isinstance(e, pulsar.IncompatibleSchema),
                f"{type(e).__name__}: {e}")
        broker_said("IncompatibleSchema", mark)

    # The same decision over REST: test compatibility, then try an upload.
    bad = {"type": "AVRO", "schema": json.dumps(ReadingBad.schema()), "properties": {}}
    good = {"type": "AVRO", "schema": json.dumps(ReadingV2.schema()), "properties": {}}
    # Pulsar 4.0.8 answers an incompatible candidate with HTTP 500 and the
    # IncompatibleSchemaException text in "reason" (not 200/isCompatibility=false).
    st, body = admin.call("POST", f"{spath}/compatibility", bad)
    reason = body.get("reason", "") if isinstance(body, dict) else str(body)
    c.check("rest: compatibility test says incompatible",
            (st in (200, 202) and body.get("compatibility") is False)
            or (st == 500 and "IncompatibleSchemaException" in reason),
            f"HTTP {st} " + (json.dumps(body) if st == 200 else reason.strip().splitlines()[2][:160]))
    st, body = admin.call("POST", f"{spath}/compatibility", good)
    # ... and a compatible one with HTTP 202 {"schemaCompatibilityStrategy":..., "compatibility": true}
    c.check("rest: compatibility test says compatible",
            st in (200, 202) and body.get("compatibility") is True, f"HTTP {st} {body}")
    st, body = admin.call("POST", f"{spath}/schema", bad)
    c.check("rest: incompatible upload refused", st == 409,
            f"HTTP {st} " + (body.get("message", "")[:120] if isinstance(body, dict) else str(body)))

    # A compatible evolution is accepted by a producer (registers a new version).
    p2 = client.create_producer(topic, schema=AvroSchema(ReadingV2))
    p2.send(ReadingV2(line="axis_07", value=72.0, seq=2, unit="degC"))
    p2.close()
    st, body = admin.call("GET", f"{spath}/schemas")
    versions = [s.get("version") for s in (body or {}).get("getSchemaResponses", [])]
    c.check("schema: compatible v2 producer accepted, versions listed", st == 200 and len(versions) >= 2,
            f"versions {versions}")

    # Upload / version lookup / delete on a fresh topic.
    rtopic = f"smoke-rest-{RUN}"
    rpath = f"/admin/v2/schemas/{ns}/{rtopic}"
    v1 = {"type": "AVRO", "schema": json.dumps(Reading.schema()), "properties": {"owner": "triad"}}
    st, body = admin.call("POST", f"{rpath}/schema", v1)
    c.check("rest: upload schema", st == 200, f"HTTP {st} {body}")
    st, body = admin.call("POST", f"{rpath}/version", v1)
    c.check("rest: version of an uploaded schema", st == 200 and body.get("version") == 0, f"HTTP {st} {body}")
    st, body = admin.call("GET", f"{rpath}/schema/0")
    c.check("rest: GET schema by version", st == 200 and body.get("properties", {}).get("owner") == "triad",
            f"HTTP {st} properties={body.get('properties') if isinstance(body, dict) else body}")
    st, body = admin.call("DELETE", f"{rpath}/schema")
    c.check("rest: delete schema", st == 200, f"HTTP {st} {body}")
    st, body = admin.call("GET", f"{rpath}/schema")
    c.check("rest: deleted schema is gone", st == 404, f"HTTP {st} {body}")

    # --- 3. deduplication -------------------------------------------------------
    st, _ = admin.call("POST", f"/admin/v2/namespaces/{ns}/deduplication", True)
    st2, val = admin.call("GET", f"/admin/v2/namespaces/{ns}/deduplication")
    c.check("rest: namespace deduplication enabled", st == 204 and val is True, f"POST {st}, GET {st2} {val!r}")

    dtopic = f"smoke-dedup-{RUN}"
    dfull = f"persistent://{ns}/{dtopic}"
    dcons = client.subscribe(dfull, "dedup-sub", schema=AvroSchema(Reading))
    st, _ = admin.call("POST", f"/admin/v2/persistent/{ns}/{dtopic}/deduplicationEnabled", True)
    val = eventually(lambda: admin.call("GET", f"/admin/v2/persistent/{ns}/{dtopic}/deduplicationEnabled")[1])
    c.check("rest: topic-level deduplicationEnabled", st == 204 and val is True, f"POST {st}, GET {val!r}")
    dprod = client.create_producer(dfull, producer_name=f"smoke-dedup-{RUN}", schema=AvroSchema(Reading))
    ids = []
    for seq in (0, 1, 2, 1, 2, 3):   # 1 and 2 are re-sent: the broker must drop them
        ids.append(str(dprod.send(Reading(line="insp", value=float(seq), seq=seq), sequence_id=seq)))
    got = []
    while True:
        try:
            m = dcons.receive(timeout_millis=3000)
        except pulsar.Timeout:
            break
        got.append(m.value().seq)
        dcons.acknowledge(m)
    c.check("dedup: re-sent sequence ids dropped", got == [0, 1, 2, 3], f"received seqs {got}, send ids {ids}")
    st, stats = admin.call("GET", f"/admin/v2/persistent/{ns}/{dtopic}/stats")
    dstat = stats.get("deduplicationStatus") if isinstance(stats, dict) else None
    c.check("dedup: topic stats deduplicationStatus", dstat == "Enabled", f"{dstat}")
    dprod.close()
    dcons.close()

    # --- 4. compaction --------------------------------------------------------
    # Namespace policy: PUT (POST answers 405). GET of an unset policy: 200, empty body.
    st, _ = admin.call("PUT", f"/admin/v2/namespaces/{ns}/compactionThreshold", 10 * 1024 * 1024)
    st2, val = admin.call("GET", f"/admin/v2/namespaces/{ns}/compactionThreshold")
    c.check("rest: namespace compactionThreshold", st == 204 and val == 10485760, f"PUT {st}, GET {val!r}")
    ctopic = f"smoke-compact-{RUN}"
    cfull = f"persistent://{ns}/{ctopic}"
    # Topic-level policies need the topic to exist (404 otherwise): create it.
    st, _ = admin.call("PUT", f"/admin/v2/persistent/{ns}/{ctopic}")
    c.check("rest: create topic", st == 204, f"HTTP {st}")
    st, _ = admin.call("POST", f"/admin/v2/persistent/{ns}/{ctopic}/compactionThreshold", 1024 * 1024)
    val = eventually(lambda: admin.call("GET", f"/admin/v2/persistent/{ns}/{ctopic}/compactionThreshold")[1])
    c.check("rest: topic-level compactionThreshold", st == 204 and val == 1048576, f"POST {st}, GET {val!r}")
    cprod = client.create_producer(cfull, schema=AvroSchema(Reading), batching_enabled=False)
    for key, v in (("battery_pack_89", 1.0), ("battery_pack_12", 5.0), ("battery_pack_89", 2.0),
                   ("battery_pack_89", 3.0)):
        cprod.send(Reading(line="dtwin", value=v, seq=0), partition_key=key)
    cprod.close()
    st, _ = admin.call("PUT", f"/admin/v2/persistent/{ns}/{ctopic}/compaction")
    status = eventually(lambda: (admin.call("GET", f"/admin/v2/persistent/{ns}/{ctopic}/compaction")[1] or {})
                        .get("status") in ("SUCCESS", "ERROR") and
                        admin.call("GET", f"/admin/v2/persistent/{ns}/{ctopic}/compaction")[1], 30)
    c.check("rest: trigger compaction -> SUCCESS", st == 204 and (status or {}).get("status") == "SUCCESS",
            f"PUT {st}, status {status}")
    reader = client.create_reader(cfull, pulsar.MessageId.earliest, schema=AvroSchema(Reading),
                                  is_read_compacted=True)
    latest = {}
    while reader.has_message_available():
        m = reader.read_next(timeout_millis=5000)
        latest.setdefault(m.partition_key(), []).append(m.value().value)
    reader.close()
    c.check("compaction: compacted read keeps the latest value per key",
            latest == {"battery_pack_89": [3.0], "battery_pack_12": [5.0]}, f"{latest}")

    # --- 5. schemaValidationEnforced (own namespace, not to disturb public/default)
    ens = "public/triad-smoke"
    st, _ = admin.call("PUT", f"/admin/v2/namespaces/{ens}")
    c.check("rest: create namespace public/triad-smoke", st in (204, 409), f"HTTP {st}")
    st, _ = admin.call("POST", f"/admin/v2/namespaces/{ens}/schemaValidationEnforced", True)
    st2, val = admin.call("GET", f"/admin/v2/namespaces/{ens}/schemaValidationEnforced")
    c.check("rest: schemaValidationEnforced", st == 204 and val is True, f"POST {st}, GET {val!r}")
    etopic = f"persistent://{ens}/enforced-{RUN}"
    client.create_producer(etopic, schema=AvroSchema(Reading)).close()
    mark = client_log_mark()
    try:
        client.create_producer(etopic)   # bytes producer, no schema
        c.check("schema: schema-less producer refused when enforced", False, "producer was created")
    except pulsar.PulsarException as e:
        c.check("schema: schema-less producer refused when enforced", isinstance(e, pulsar.IncompatibleSchema),
                f"{type(e).__name__}: {e}")
        broker_said("IncompatibleSchema", mark)

    # --- 6. token mode: roles from PyJWT ----------------------------------------
    if auth == "token":
        import jwt
        alg = env.get("PULSAR_TOKEN_ALG", "HS256")
        if alg == "HS256":
            with open(env["PULSAR_TOKEN_SECRET_KEY_FILE"], "rb") as f:
                key = f.read()          # raw secret bytes, used as-is
        else:
            with open(env["PULSAR_TOKEN_PRIVATE_KEY_FILE"], "rb") as f:
                key = f.read()          # PEM private key
        role = f"triad-node-{RUN}"
        role_token = jwt.encode({"sub": role}, key, algorithm=alg)
        ptopic = f"persistent://{ns}/smoke-perm-{RUN}"
        rc = new_client(url, role_token)
        try:
            rc.create_producer(ptopic)
            c.check("token: PyJWT role without permission refused", False, "producer was created")
        except pulsar.PulsarException as e:
            c.check("token: PyJWT role without permission refused", isinstance(e, pulsar.AuthorizationError),
                    f"{type(e).__name__}: {e}")
            broker_said("AuthorizationError msg", 0)
        st, _ = admin.call("POST", f"/admin/v2/namespaces/{ns}/permissions/{role}", ["produce", "consume"])
        c.check("rest: grant produce+consume to the role", st == 204, f"HTTP {st}")

        def try_produce():
            try:
                p = rc.create_producer(ptopic)
                p.send(b"hello")
                p.close()
                return True
            except pulsar.PulsarException:
                return False
        c.check("token: PyJWT role accepted after grant", eventually(try_produce, 20, 1.0))
        rc.close()
        expired = jwt.encode({"sub": role, "exp": int(time.time()) - 60}, key, algorithm=alg)
        st, body = admin.call("GET", f"/admin/v2/namespaces/public", token=expired)
        c.check("token: expired token refused (REST)", st == 401, f"HTTP {st} {body}")

    producer.close()
    consumer.close()
    client.close()
    try:
        os.remove(CLIENT_LOG_FILE)
    except OSError:
        pass
    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
