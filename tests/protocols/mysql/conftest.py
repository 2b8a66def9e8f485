"""MySQL test helpers (real traffic, packets); the framing loop is the real one (tests/support/loop.py)."""

from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import dpkt

from protocols.base import ConnInfo, Direction, Endpoint, Role
from protocols.mysql import SPEC
from protocols.mysql.types import Exchange
from tests.support.loop import Loop as SharedLoop

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
CONN = ConnInfo("t/1", Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.1", 3306), Role.CLIENT)


class Loop(SharedLoop):
    """The shared real-loop driver (tests/support/loop.py) on a connection known to speak MySQL, run at
    every feed (as capture batches arrive)."""

    def __init__(self, auto_run: bool = True, **kwargs: Any) -> None:
        super().__init__(SPEC, auto_run=auto_run, **kwargs)


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
