"""A few-line stand-in for the framing loop, and real-traffic helpers, shared by the MySQL tests."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections import deque
from pathlib import Path

import dpkt

from protocols.base import NEED_DATA, ConnInfo, Direction, Endpoint, Invalid, Parsed, Role, Timed
from protocols.mysql import SPEC
from protocols.mysql.types import Exchange, State

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
CONN = ConnInfo("t/1", Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.1", 3306), Role.CLIENT)


class Loop:
    """Buffers per direction, parse until NEED_DATA, resync on Invalid, stitch: as pipeline/framing does."""

    def __init__(self) -> None:
        self.state: State = SPEC.new_state()
        self.buf = {REQ: bytearray(), RESP: bytearray()}
        self.pos = {REQ: 0, RESP: 0}
        self.ts: dict[Direction, list[tuple[int, int]]] = {REQ: [], RESP: []}  # (end position, ts)
        self.queues: dict[Direction, deque[Timed]] = {REQ: deque(), RESP: deque()}
        self.errors: list[str] = []
        self.exchanges: list[Exchange] = []
        self.clock = 0

    def feed(self, direction: Direction, data: bytes, ts: int | None = None) -> list[Exchange]:
        self.clock = ts if ts is not None else self.clock + 10
        self.buf[direction] += data
        self.ts[direction].append((self.pos[direction] + len(self.buf[direction]), self.clock))
        return self.run()

    def _ts_at(self, direction: Direction, position: int) -> int:
        for end, ts in self.ts[direction]:
            if position < end:
                return ts
        return self.clock

    def parse(self, direction: Direction) -> None:
        buf = self.buf[direction]
        while buf:
            result = SPEC.parse_frame(memoryview(bytes(buf)), direction, self.state)
            if result is NEED_DATA:
                return
            if isinstance(result, Invalid):
                self.errors.append(result.reason)
                off = SPEC.find_boundary(memoryview(bytes(buf)), direction, 1)
                size = len(buf) if off is None else off
            else:
                assert isinstance(result, Parsed) and result.size > 0
                start = self.pos[direction]
                size = result.size
                timed = Timed(
                    result.frame,
                    self._ts_at(direction, start),
                    self._ts_at(direction, start + size - 1),
                    start,
                )
                self.queues[direction].append(timed)
            del buf[:size]
            self.pos[direction] += size

    def run(self) -> list[Exchange]:
        self.parse(REQ)
        self.parse(RESP)
        out = SPEC.stitch(self.queues[REQ], self.queues[RESP], self.state)
        self.exchanges += out
        return out


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def records(exchanges: list[Exchange]) -> list:
    return [SPEC.to_record(x, CONN) for x in exchanges]


def pcap_segments(path: Path, server_port: int) -> dict[int, list[tuple[int, Direction, bytes]]]:
    """Per client port: (ts_ns, direction, payload) of each TCP segment, in capture order."""
    out: dict[int, list[tuple[int, Direction, bytes]]] = {}
    seen: set[tuple[int, int, int]] = set()
    with path.open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        for ts, raw in reader:
            if linktype == dpkt.pcap.DLT_NULL:
                ip = dpkt.loopback.Loopback(raw).data
            elif linktype == dpkt.pcap.DLT_LINUX_SLL:
                ip = dpkt.sll.SLL(raw).data
            else:
                ip = dpkt.ethernet.Ethernet(raw).data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
                continue
            if tcp.dport == server_port:
                direction, client = REQ, tcp.sport
            elif tcp.sport == server_port:
                direction, client = RESP, tcp.dport
            else:
                continue
            key = (tcp.sport, tcp.dport, tcp.seq)
            if key in seen:  # retransmission
                continue
            seen.add(key)
            out.setdefault(client, []).append((round(ts * 1e9), direction, bytes(tcp.data)))
    return out


def replay(segments: list[tuple[int, Direction, bytes]]) -> Loop:
    loop = Loop()
    for ts, direction, data in segments:
        loop.feed(direction, data, ts)
    return loop


def tshark_commands(path: Path, server_port: int) -> tuple[list[int], list[int]]:
    """The independent oracle: (command bytes, error codes) that tshark dissects, in capture order."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-d",
            f"tcp.port=={server_port},mysql",
            "-T",
            "fields",
            "-e",
            "mysql.command",
            "-e",
            "mysql.error_code",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    commands: list[int] = []
    errors: list[int] = []
    for line in out.splitlines():
        command, _, error = line.partition("\t")
        commands += [int(c) for c in command.split(",") if c]
        errors += [int(e) for e in error.split(",") if e]
    return commands, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
