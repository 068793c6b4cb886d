#!/usr/bin/env python3
"""Modbus device simulator (pymodbus 3.16 server) for triad's integration tests.

Usage:
  modbus_device.py --kind {welder,conveyor,bank} --order {ABCD,CDAB,BADC,DCBA}
                   (--tcp HOST:PORT | --rtu SERIAL_PATH) [--unit N] [--writes FILE]
                   [--count N]

Prints one line `READY` on stdout once it listens, then serves until killed
(SIGTERM/SIGKILL end it; SIGSTOP makes it hang, so clients time out).
stdin lines `estop 1` / `estop 0` set discrete input 0 (EOF is ignored).
--writes FILE appends one JSON line per write that lands, flushed at once:
  {"table": "holding"|"coil", "address": <zero-based>, "values": [raw ints | bools]}

Addresses are zero-based wire (PDU) addresses: reading input register 0 with
a pymodbus client (`read_input_registers(0, count=2, device_id=1)`) gives the
first value. (This uses pymodbus's SimData/SimDevice, which is addressed as on
the wire; only the deprecated ModbusSequentialDataBlock is offset by 1.)

Word/byte order: a value is packed big-endian with `struct` into bytes A B C D
(or A..H) and split into 16-bit registers; then
  ABCD  as is                    [AB, CD]      64-bit [AB, CD, EF, GH]
  CDAB  register order reversed  [CD, AB]      64-bit [GH, EF, CD, AB]
  BADC  bytes swapped per reg    [BA, DC]      16-bit 0x1234 -> 0x3412
  DCBA  both                     [DC, BA]      64-bit [HG, FE, DC, BA]
Status bits are numbered on the decoded u16 (bit 0 = least significant).

Maps (IR input registers, HR holding registers, DI discrete inputs, CO coils):
  welder   IR 0-1 f32 weld_temp_c 187.25; 2-3 f32 weld_current_a 4875.5;
              4-5 f32 ambient_c 23.5; 6..9 absent (exception 2);
              10-11 u32 welds_total from 65534, +1 every 100 ms;
              12-15 f64 energy_j 1234567.891; 16 i16 -123; 17-18 i32 -100000;
              19-22 u64 5000000000; 23 u16 status 0x8009 (bits 0, 3, 15);
              24 u16 65000
           HR 0-1 f32 weld_current_cmd_a 0.0; 2-3 u32 0
           CO 0 weld_enable 0; 1 spare 0      DI 0 estop 0; 1 arc_ok 1
  conveyor IR 0-1 f32 feed_ppm 11.75; 2-3 u32 parts_total from 131070, +1 every 1 s
           HR 0-1 f32 feed_ppm_cmd 0.0
           CO 0 run 0                         DI 0 estop 0; 1 guard_closed 1
  bank     IR and HR 0..count-1, each u16 = its address (order applied as for
           any u16, so use ABCD for modbus_scan_reference.py); CO/DI 0 = 0.
Counters start when the device starts. Bit tables are padded to 16 bits
(pymodbus stores bits in words): coil/DI addresses up to 15 read 0, beyond
that answer exception 2. Reads past the last register answer exception 2.

What a client sees (pymodbus 3.16.1, checked with its clients):
  - a gap (e.g. IR 6..9, or a read that overlaps one): exception response,
    code 2 ILLEGAL DATA ADDRESS (pymodbus client: ExceptionResponse, isError()).
  - any unit id other than --unit: exception response, code 4 SERVER DEVICE
    FAILURE (pymodbus has no device for it and turns the lookup error into
    code 4), echoing the unit id asked for, and logs a traceback on stderr.
    The same over RTU: it answers, it does not stay silent as a device on a
    real bus would.

RTU through a socat pty pair, 19200 8N1 (checked with socat 1.7.4.4 and a
pymodbus RTU client holding /tmp/client open throughout):
  socat -d -d pty,raw,echo=0,link=/tmp/dev pty,raw,echo=0,link=/tmp/client
  modbus_device.py --kind conveyor --order ABCD --rtu /tmp/dev   # kill, start again
The pair survives any number of device kills/restarts: socat keeps both pty
slave ends open itself, so it never sees a hangup when the device (or the
client) closes; `ignoreeof` is therefore not needed (adding it to the device
side also works). Socat never ends by itself: the test kills it. Requests sent
while no device runs time out; they are not answered after the restart
(opening the port flushes its input queue), and requests after the restart
are. A SIGSTOPped device answers the queued requests late after SIGCONT.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
COIL_WRITES = (5, 15)
REGISTER_WRITES = (6, 16, 22, 23)
READ_DISCRETE, READ_INPUT = 2, 4


@dataclass(frozen=True)
class Counter:
    """An input register value that grows by one every `period_s` seconds."""

    address: int
    fmt: str
    start: int
    period_s: float


@dataclass
class DeviceMap:
    """Values of a device: (address, struct format, value) per register table."""

    input: list[tuple[int, str, int | float]]
    holding: list[tuple[int, str, int | float]]
    coils: list[bool]
    discrete: list[bool]
    counters: list[Counter] = field(default_factory=list)


def welder_map(_count: int) -> DeviceMap:
    return DeviceMap(
        input=[
            (0, "f", 187.25), (2, "f", 4875.5), (4, "f", 23.5),
            (10, "I", 65534), (12, "d", 1234567.891), (16, "h", -123),
            (17, "i", -100000), (19, "Q", 5000000000), (23, "H", 0x8009),
            (24, "H", 65000),
        ],
        holding=[(0, "f", 0.0), (2, "I", 0)],
        coils=[False, False],
        discrete=[False, True],
        counters=[Counter(10, "I", 65534, 0.1)],
    )


def conveyor_map(_count: int) -> DeviceMap:
    return DeviceMap(
        input=[(0, "f", 11.75), (2, "I", 131070)],
        holding=[(0, "f", 0.0)],
        coils=[False],
        discrete=[False, True],
        counters=[Counter(2, "I", 131070, 1.0)],
    )


def bank_map(count: int) -> DeviceMap:
    registers = [(a, "H", a) for a in range(count)]
    return DeviceMap(input=registers, holding=list(registers), coils=[False], discrete=[False])


MAPS = {"welder": welder_map, "conveyor": conveyor_map, "bank": bank_map}


def encode(fmt: str, value: int | float, order: str) -> list[int]:
    """Registers carrying `value` packed as `fmt`, in the given word/byte order."""
    raw = struct.pack(">" + fmt, value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def register_blocks(entries: list[tuple[int, str, int | float]], order: str) -> list[SimData]:
    """One SimData per run of contiguous registers; the holes between runs stay invalid."""
    regs: dict[int, int] = {}
    for address, fmt, value in entries:
        for i, word in enumerate(encode(fmt, value, order)):
            regs[address + i] = word
    blocks: list[SimData] = []
    run: list[int] = []
    for address in sorted(regs):
        if run and address != run[-1] + 1:
            blocks.append(SimData(run[0], values=[regs[a] for a in run], datatype=DataType.REGISTERS))
            run = []
        run.append(address)
    blocks.append(SimData(run[0], values=[regs[a] for a in run], datatype=DataType.REGISTERS))
    return blocks


def bit_block(bits: list[bool]) -> list[SimData]:
    return [SimData(0, values=list(bits), datatype=DataType.BITS)]


class Behaviour:
    """pymodbus `action` hook: live counters and estop on reads, write log on writes."""

    def __init__(self, counters: list[Counter], order: str, writes_path: str | None):
        self.counters = counters
        self.order = order
        self.writes = open(writes_path, "a", encoding="utf-8") if writes_path else None
        self.estop = False
        self.t0 = time.monotonic()

    async def action(self, func_code, start_address, address, _count, registers, values):
        if values is not None:
            self.record_write(func_code, address, values)
        elif func_code == READ_INPUT:
            self.refresh_counters(start_address, registers)
        elif func_code == READ_DISCRETE:
            self.refresh_estop(start_address, registers)
        return None

    def record_write(self, func_code: int, address: int, values) -> None:
        if self.writes is None:
            return
        if func_code in COIL_WRITES:
            line = {"table": "coil", "address": address, "values": [bool(v) for v in values]}
        elif func_code in REGISTER_WRITES:
            line = {"table": "holding", "address": address, "values": [int(v) for v in values]}
        else:
            return
        self.writes.write(json.dumps(line) + "\n")
        self.writes.flush()

    def refresh_counters(self, start_address: int, registers: list[int]) -> None:
        elapsed = time.monotonic() - self.t0
        for c in self.counters:
            words = encode(c.fmt, c.start + int(elapsed / c.period_s), self.order)
            offset = c.address - start_address
            if 0 <= offset <= len(registers) - len(words):
                registers[offset:offset + len(words)] = words

    def refresh_estop(self, start_address: int, registers: list[int]) -> None:
        """Discrete inputs are packed 16 to a word, bit 0 of word 0 is input 0."""
        if start_address != 0:
            return
        registers[0] = (registers[0] | 1) if self.estop else (registers[0] & ~1)

    def follow_stdin(self) -> None:
        """Apply `estop 0|1` lines from stdin (run in a daemon thread)."""
        for line in sys.stdin:
            words = line.split()
            if len(words) == 2 and words[0] == "estop" and words[1] in ("0", "1"):
                self.estop = words[1] == "1"
            else:
                print(f"modbus_device: ignored stdin line {line.strip()!r}", file=sys.stderr, flush=True)


def build_device(args, behaviour: Behaviour, dmap: DeviceMap) -> SimDevice:
    return SimDevice(
        id=args.unit,
        simdata=(
            bit_block(dmap.coils),
            bit_block(dmap.discrete),
            register_blocks(dmap.holding, args.order),
            register_blocks(dmap.input, args.order),
        ),
        action=behaviour.action,
    )


def build_server(args, device: SimDevice):
    if args.tcp:
        host, port = args.tcp.rsplit(":", 1)
        return ModbusTcpServer(device, address=(host, int(port)))
    return ModbusSerialServer(
        device, framer=FramerType.RTU, port=args.rtu,
        baudrate=19200, bytesize=8, parity="N", stopbits=1,
    )


async def serve(args) -> None:
    dmap = MAPS[args.kind](args.count)
    behaviour = Behaviour(dmap.counters, args.order, args.writes)
    server = build_server(args, build_device(args, behaviour, dmap))
    await server.serve_forever(background=True)
    threading.Thread(target=behaviour.follow_stdin, daemon=True).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Modbus device simulator (pymodbus)")
    ap.add_argument("--kind", required=True, choices=sorted(MAPS))
    ap.add_argument("--order", required=True, choices=ORDERS)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT")
    where.add_argument("--rtu", metavar="SERIAL_PATH")
    ap.add_argument("--unit", type=int, default=1, choices=range(1, 248), metavar="N (1..247)")
    ap.add_argument("--writes", metavar="FILE")
    ap.add_argument("--count", type=int, default=64, help="bank only: number of registers")
    args = ap.parse_args(argv)
    if not 1 <= args.count <= 65535:
        ap.error("--count must be 1..65535")
    return args


def main() -> int:
    asyncio.run(serve(parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
