"""One connection through the real framing loop, for protocol tests: no stand-in loops.

`Wire` makes fragments the way the agent does (per-direction byte positions, a capture time per
syscall, bytes the capture did not copy, holes). `Loop` feeds a connection's request/response bytes
through `pipeline.framing.ConnParser` (and so `DataStream`) with one protocol, and keeps what it made:
the protocol's exchanges, the records, the parse-error reasons in order and the `Health` counters.
Zero-fill, holes, resync, `on_gap`, `on_eof`, `Skip` and `cut_frame` are the loop's own.

    loop = Loop(SPEC)
    loop.feed(REQ, b"GET / HTTP/1.1\\r\\n\\r\\n")
    loop.feed(RESP, head, length=len(head) + 10_000)  # the capture copied the head only: zero-filled
    loop.feed(REQ, later, hole=500)  # 500 request bytes lost before these: a gap
    exchanges = loop.run(eof=True)  # the connection closed
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from pipeline.framing import AnySpec, ConnParser, Limits
from probes.fragment import Fragment, Io, Source
from probes.health import Health
from protocols.base import ConnInfo, Direction, Endpoint, L7Record, Role, Timed

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
PIECE = 64 << 10
FILLER = b"b" * PIECE


def conn(role: Role = Role.SERVER, conn_id: str = "n/1/3/7", process: str = "srv") -> ConnInfo:
    """A traced end on 127.0.0.1:8080 (the server's port) talking to 127.0.0.1:50000."""
    local, remote = Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 50000)
    if role == Role.CLIENT:
        local, remote = remote, local
    return ConnInfo(conn_id, local, remote, role, pid=1, process=process)


class Wire:
    """Builds fragments the way the agent does: per-direction positions and capture times."""

    def __init__(self, info: ConnInfo, ts: int = 1_000, step: int = 1_000) -> None:
        self.info = info
        self.pos = {Io.SEND: 0, Io.RECV: 0}
        self.ts, self.step = ts, step

    def frag(
        self,
        io: Io,
        data: bytes,
        length: int | None = None,
        skip: int = 0,
        source: Source = Source.SYSCALL,
        ts: int | None = None,
    ) -> Fragment:
        """`data` copied of `length` bytes moved (default all), `skip` bytes after the last never seen."""
        self.pos[io] += skip
        self.ts = ts if ts is not None else self.ts + self.step
        f = Fragment(self.info.conn_id, io, self.pos[io], length or len(data), data, self.ts, source=source)
        self.pos[io] += f.length
        return f

    def body(self, io: Io, size: int) -> list[Fragment]:
        """`size` body bytes in fully copied 64 KiB reads or writes."""
        return [self.frag(io, FILLER[: min(PIECE, size - at)]) for at in range(0, size, PIECE)]


class _Recorded(Health):
    """Health that also keeps each parse error's reason, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def count(self, name: str, label: str = "", n: int = 1, reason: str = "") -> None:
        if name == "parse_errors":
            self.errors += [reason] * n
        super().count(name, label, n, reason)


class Loop:
    """One connection speaking `spec`, through the real ConnParser.

    By default the connection is known to speak `spec` from its first byte (a protocol unit test);
    `detect=True` leaves it to the loop's detection instead, as live traffic is (joined mid-stream...).
    `feed` and `run` are separate so a test may feed several chunks before the loop sees them; with
    `auto_run` every feed runs the loop.
    """

    def __init__(
        self,
        spec: AnySpec,
        role: Role = Role.SERVER,
        limits: Limits | None = None,
        detect: bool = False,
        auto_run: bool = False,
        info: ConnInfo | None = None,
    ) -> None:
        self.exchanges: list[Any] = []  # every exchange the loop finished, in order
        self.records: list[L7Record] = []
        self.health = _Recorded()
        self.auto_run = auto_run
        self.closed = False
        self.info = info or conn(role)
        self._to_record = spec.to_record
        spec = dataclasses.replace(spec, to_record=self._keep)
        self.parser = ConnParser(self.info, (spec,), limits or Limits(), self.health)
        self.wire = Wire(self.info, ts=0, step=10)
        if not detect:
            self.parser._claim(spec, self.io(REQ))

    @property
    def errors(self) -> list[str]:
        """Reasons of the parse errors counted so far (Invalid results not explained by lost bytes)."""
        return self.health.errors

    @property
    def state(self) -> Any:
        """The protocol's per-connection state (None before the loop detected the protocol)."""
        return self.parser.state

    @property
    def queues(self) -> dict[Direction, deque[Timed[Any]]]:
        """Frames parsed and not yet stitched, per direction."""
        return self.parser.queues

    @property
    def clock(self) -> int:
        return self.wire.ts

    def io(self, direction: Direction) -> Io:
        server = self.info.role != Role.CLIENT
        return Io.RECV if (direction is REQ) == server else Io.SEND

    def _keep(self, exchange: Any, info: ConnInfo) -> L7Record:
        self.exchanges.append(exchange)
        return self._to_record(exchange, info)

    def feed(
        self,
        direction: Direction,
        data: bytes,
        ts: int | None = None,
        length: int | None = None,
        hole: int = 0,
    ) -> list[Any]:
        """One syscall's bytes: `length` > len(data) leaves the rest uncopied (zero-filled by the loop
        up to its fill limit, else lost); `hole` bytes before these were never seen (a gap)."""
        self.parser.add(self.wire.frag(self.io(direction), data, length, skip=hole, ts=ts))
        return self.run() if self.auto_run else []

    def run(self, eof: bool = False) -> list[Any]:
        """One pass of the loop (`eof`: the connection closed); the exchanges it finished."""
        assert not self.closed, "the connection already ended"
        before = len(self.exchanges)
        self.records += self.parser.process(final=eof)
        self.closed = eof
        return self.exchanges[before:]
