"""Connections older than the agent: roles inferred from /proc/net/tcp{,6} at start-up.

The kernel attributes such a connection (5-tuple, pid, fd) on its first use after the tracer loads,
but it never saw the handshake, so its role is unknown. A local port that was listening at start-up
makes the process the server; anything else is a client. Either way the role is marked inferred.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from protocols.base import Endpoint, Role

TCP_ESTABLISHED = 0x01
TCP_LISTEN = 0x0A


@dataclass(frozen=True, slots=True)
class TcpRow:
    local: Endpoint
    remote: Endpoint
    state: int
    inode: int


def parse_hex_addr(text: str) -> Endpoint:
    """'0100007F:1F90' (IPv4) or 32 hex digits (IPv6), each 32-bit word in host (little-endian) order."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    if len(packed) == 4:
        return Endpoint(socket.inet_ntop(socket.AF_INET, packed), int(port, 16))
    if packed.startswith(b"\0" * 10 + b"\xff\xff"):  # IPv4-mapped: shown as IPv4, as the capture does
        return Endpoint(socket.inet_ntop(socket.AF_INET, packed[12:]), int(port, 16))
    return Endpoint(socket.inet_ntop(socket.AF_INET6, packed), int(port, 16))


def parse_proc_net_tcp(text: str) -> list[TcpRow]:
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        rows.append(
            TcpRow(parse_hex_addr(parts[1]), parse_hex_addr(parts[2]), int(parts[3], 16), int(parts[9]))
        )
    return rows


def socket_inodes(proc: Path = Path("/proc")) -> dict[int, tuple[int, int]]:
    """socket inode -> (pid, fd) of its first owner found, from /proc/PID/fd links."""
    owners: dict[int, tuple[int, int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        fd_dir = proc / name / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), (int(name), int(fd)))
    return owners


@dataclass(frozen=True, slots=True)
class ExistingConn:
    pid: int
    fd: int
    local: Endpoint
    remote: Endpoint
    role: Role


class ExistingConnections:
    """A start-up snapshot: established TCP connections by (pid, fd), and the listening ports."""

    def __init__(self, rows: list[TcpRow], owners: dict[int, tuple[int, int]]) -> None:
        self.listening = {r.local.port for r in rows if r.state == TCP_LISTEN}
        self.by_fd: dict[tuple[int, int], ExistingConn] = {}
        for r in rows:
            if r.state != TCP_ESTABLISHED or r.inode not in owners:
                continue
            pid, fd = owners[r.inode]
            role = Role.SERVER if r.local.port in self.listening else Role.CLIENT
            self.by_fd[(pid, fd)] = ExistingConn(pid, fd, r.local, r.remote, role)

    @classmethod
    def scan(cls, proc: Path = Path("/proc")) -> ExistingConnections:
        rows: list[TcpRow] = []
        for name in ("tcp", "tcp6"):
            try:
                rows += parse_proc_net_tcp((proc / "net" / name).read_text())
            except OSError:
                continue
        return cls(rows, socket_inodes(proc))

    def infer_role(self, pid: int, fd: int, local: Endpoint, remote: Endpoint) -> Role:
        """The role of a connection whose handshake the tracer did not see."""
        known = self.by_fd.get((pid, fd))
        if known is not None and known.local == local and known.remote == remote:
            return known.role
        return Role.SERVER if local.port in self.listening else Role.CLIENT
