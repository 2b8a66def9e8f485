"""What capture produces: payload fragments and connection lifecycle events, before any parsing.

These are the in-process form of `proto/fragments.proto`; `probes/codec.py` converts between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocols.base import ConnInfo


class Io(IntEnum):
    """Which way the bytes moved for the traced process (values mirror bpf/include/events.h)."""

    SEND = 0  # egress: written by the process
    RECV = 1  # ingress: read by the process


class Source(IntEnum):
    SYSCALL = 0  # plaintext as the socket syscall saw it
    TLS = 1  # plaintext from an SSL_read/SSL_write uprobe
    SENDFILE = 2  # size only: the kernel moved the bytes, none were copied
    PCAP = 3  # reassembled from a capture file


@dataclass(slots=True)
class Fragment:
    """`data` is the copied prefix of `length` bytes at byte `position` of one direction."""

    conn_id: str
    io: Io
    position: int
    length: int  # bytes the syscall moved; length - len(data) were not copied
    data: bytes
    ts_ns: int  # Unix epoch ns at syscall exit (the kernel's CLOCK_MONOTONIC stamp + the capture's offset)
    tid: int = 0
    source: Source = Source.SYSCALL


@dataclass(slots=True)
class ConnEvent:
    """A connection seen (open, or first sighting with its labels) or ended (close)."""

    info: ConnInfo
    ts_ns: int  # Unix epoch ns, as Fragment.ts_ns
    closed: bool = False
    # Final byte positions (send, recv) at close, so a consumer can tell trailing loss from completion.
    send_bytes: int = 0
    recv_bytes: int = 0


@dataclass(slots=True)
class Batch:
    """One connection's fragments and events in capture order: the unit published and queued."""

    conn: ConnInfo
    fragments: list[Fragment]
    closed: ConnEvent | None = None
