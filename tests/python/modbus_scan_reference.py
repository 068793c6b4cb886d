#!/usr/bin/env python3
"""Reference figures for the benchmark "scan time of N devices x 64 registers",
measured with pymodbus's AsyncModbusTcpClient.

Usage:
  modbus_scan_reference.py --endpoints HOST:PORT,HOST:PORT,... --registers 64
                           --scans N [--table input|holding] [--unit 1]

One client per endpoint. A scan reads registers 0..registers-1 of every
endpoint (one read request each, all endpoints concurrently with
asyncio.gather) and is timed whole with time.perf_counter_ns. 50 warm-up scans
run first and are not counted. Every read must return values equal to their
addresses (modbus_device.py --kind bank --order ABCD); anything else aborts
with a message and exit status 1.

Prints one JSON line:
  {"client": "pymodbus <version>", "scans": N, "p50_us": ..., "p99_us": ...,
   "max_us": ..., "mean_us": ...}
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time

import pymodbus
from pymodbus import ModbusException
from pymodbus.client import AsyncModbusTcpClient

WARMUP_SCANS = 50


class ScanError(Exception):
    """A read failed or returned values other than the register addresses."""


def parse_endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def connect(endpoints: list[str]) -> list[tuple[str, AsyncModbusTcpClient]]:
    """One connected client per endpoint, with the endpoint as its label."""
    clients = []
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
        clients.append((endpoint, client))
        if not await client.connect():
            raise ScanError(f"cannot connect to {endpoint}")
    return clients


async def read_one(endpoint: str, client: AsyncModbusTcpClient, table: str, count: int, unit: int) -> None:
    read = client.read_input_registers if table == "input" else client.read_holding_registers
    try:
        reply = await read(0, count=count, device_id=unit)
    except ModbusException as exc:
        raise ScanError(f"{endpoint}: {exc}") from exc
    if reply.isError():
        raise ScanError(f"{endpoint}: {reply}")
    if reply.registers != list(range(count)):
        raise ScanError(f"{endpoint}: values are not their addresses: {reply.registers}")


async def scan(clients, table: str, count: int, unit: int) -> int:
    """One scan of every endpoint; returns its duration in nanoseconds."""
    start = time.perf_counter_ns()
    await asyncio.gather(*(read_one(e, c, table, count, unit) for e, c in clients))
    return time.perf_counter_ns() - start


def percentile(sorted_ns: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(len(sorted_ns) * p / 100))
    return sorted_ns[rank - 1]


def summary(durations_ns: list[int]) -> dict:
    ordered = sorted(durations_ns)
    return {
        "client": f"pymodbus {pymodbus.__version__}",
        "scans": len(ordered),
        "p50_us": round(percentile(ordered, 50) / 1000, 1),
        "p99_us": round(percentile(ordered, 99) / 1000, 1),
        "max_us": round(ordered[-1] / 1000, 1),
        "mean_us": round(statistics.fmean(ordered) / 1000, 1),
    }


async def run(args) -> dict:
    clients = []
    try:
        clients = await connect(args.endpoints.split(","))
        for _ in range(WARMUP_SCANS):
            await scan(clients, args.table, args.registers, args.unit)
        durations = [await scan(clients, args.table, args.registers, args.unit) for _ in range(args.scans)]
    finally:
        for _, client in clients:
            client.close()
    return summary(durations)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="pymodbus reference scan benchmark")
    ap.add_argument("--endpoints", required=True, help="HOST:PORT,HOST:PORT,...")
    ap.add_argument("--registers", type=int, default=64)
    ap.add_argument("--scans", type=int, required=True)
    ap.add_argument("--table", choices=("input", "holding"), default="input")
    ap.add_argument("--unit", type=int, default=1)
    args = ap.parse_args(argv)
    if not 1 <= args.registers <= 125:
        ap.error("--registers must be 1..125 (one read request)")
    if args.scans < 1:
        ap.error("--scans must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    try:
        result = asyncio.run(run(args))
    except ScanError as exc:
        print(f"modbus_scan_reference: FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
