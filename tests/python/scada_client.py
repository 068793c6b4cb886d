#!/usr/bin/env python3
"""A SCADA's side of Modbus TCP (pymodbus client), for triad's tests of its
Modbus server: one operation per run, its outcome as one JSON line.

Usage:
  scada_client.py --tcp HOST:PORT [--unit N] [--source IP] read TABLE ADDRESS COUNT
  scada_client.py --tcp HOST:PORT [--unit N] [--source IP] write-registers ADDRESS V [V ...]
  scada_client.py --tcp HOST:PORT [--unit N] [--source IP] write-register ADDRESS V
  scada_client.py --tcp HOST:PORT [--unit N] [--source IP] write-coil ADDRESS 0|1

TABLE: input, holding, coil, discrete. Addresses are zero-based (the wire's).
--source binds the client's end to that local address (e.g. 127.0.0.2, to
be a client the server does not allow to write).

Prints {"ok": true, "values": [...]} (reads: registers as ints, bits as
0/1), {"ok": true} (writes), or {"ok": false, "exception": CODE}.
Exits 1 when there is no answer at all.
"""
from __future__ import annotations

import argparse
import json
import sys

from pymodbus.client import ModbusTcpClient


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", required=True)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--source")
    ap.add_argument("op", choices=["read", "write-registers", "write-register", "write-coil"])
    ap.add_argument("args", nargs="+")
    a = ap.parse_args()
    host, port = a.tcp.rsplit(":", 1)
    source = (a.source, 0) if a.source else None
    client = ModbusTcpClient(host, port=int(port), timeout=3, retries=0, source_address=source)
    if not client.connect():
        print(json.dumps({"ok": False, "error": "cannot connect"}))
        return 1
    try:
        rr = run(client, a)
    finally:
        client.close()
    if rr is None:
        return 1
    if rr.isError():
        print(json.dumps({"ok": False, "exception": getattr(rr, "exception_code", None)}))
        return 0
    out = {"ok": True}
    if a.op == "read":
        count = int(a.args[2])
        vals = rr.registers if a.args[0] in ("input", "holding") else [int(b) for b in rr.bits[:count]]
        out["values"] = list(vals)
    print(json.dumps(out))
    return 0


def run(client, a):
    dev = {"device_id": a.unit}
    if a.op == "read":
        table, addr, count = a.args[0], int(a.args[1]), int(a.args[2])
        fn = {
            "input": client.read_input_registers,
            "holding": client.read_holding_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[table]
        return fn(addr, count=count, **dev)
    addr = int(a.args[0])
    if a.op == "write-registers":
        return client.write_registers(addr, [int(v) for v in a.args[1:]], **dev)
    if a.op == "write-register":
        return client.write_register(addr, int(a.args[1]), **dev)
    return client.write_coil(addr, a.args[1] == "1", **dev)


if __name__ == "__main__":
    sys.exit(main())
