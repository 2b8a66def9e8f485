"""The one framing loop: turns a connection's two byte streams into L7 records through a protocol.

It owns buffers, timestamps, protocol detection, gap handling and bounds; protocols only parse.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.health import Health
from pipeline.stream import DataStream
from probes.fragment import Fragment, Io, Source
from protocols.base import ConnInfo, Direction, Invalid, L7Record, NeedData, Parsed, ProtocolSpec, Role, Timed

AnySpec = ProtocolSpec[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    detect_bytes: int = 16 << 10  # give up detecting a protocol after this many bytes per direction
    max_buffer: int = 32 << 20  # an unparsed head larger than this is dropped (resync)
    max_queued_frames: int = 1024  # unmatched frames kept per direction
    fill_limit: int = 1 << 20  # uncopied bytes zero-filled rather than treated as a gap
    hole_rounds: int = 2  # rounds a hole may wait for late fragments before it is declared lost
    resync_keep: int = 64  # bytes kept when no boundary is found (a boundary may straddle)


_RECORD_FIELDS = (
    "protocol", "role", "name", "start_ns", "end_ns", "conn", "metric", "error_type", "attributes",
    "metric_attributes", "truncated", "degraded", "record_id", "trace_id", "parent_span_id",
)  # fmt: skip
_POSITIONAL = tuple(f.name for f in dataclasses.fields(L7Record)) == _RECORD_FIELDS


def with_record_id(r: L7Record, record_id: str) -> L7Record:
    """dataclasses.replace(r, record_id=...), several times cheaper; replace itself if L7Record changed."""
    if not _POSITIONAL:
        return dataclasses.replace(r, record_id=record_id)
    return L7Record(r.protocol, r.role, r.name, r.start_ns, r.end_ns, r.conn, r.metric, r.error_type,
                    r.attributes, r.metric_attributes, r.truncated, r.degraded, record_id, r.trace_id,
                    r.parent_span_id)  # fmt: skip


def request_io(role: Role) -> Io | None:
    """Which capture direction carries requests, from the traced process's role."""
    return {Role.SERVER: Io.RECV, Role.CLIENT: Io.SEND}.get(role)


class ConnParser:
    """Framing state of one connection."""

    def __init__(
        self, conn: ConnInfo, protocols: tuple[AnySpec, ...], limits: Limits, health: Health
    ) -> None:
        self.conn = conn
        self.protocols = protocols
        self.limits = limits
        self.health = health
        # Lists indexed by Io (an IntEnum): a dict keyed by an enum hashes it in Python on every lookup.
        self.streams = [DataStream(fill_limit=limits.fill_limit) for _ in Io]
        self.spec: AnySpec | None = None
        self.state: Any = None
        self.request_io = request_io(conn.role)
        self.unclaimed = False  # no protocol recognised: bytes are counted, not kept
        self.queues: dict[Direction, deque[Timed[Any]]] = {d: deque() for d in Direction}
        self._pair = (self.queues[Direction.REQUEST], self.queues[Direction.RESPONSE])
        self._resync = [False for _ in Io]
        self._stuck = [0 for _ in Io]
        self.bytes_seen = [0 for _ in Io]
        self._before_gap: list[Any] = []  # exchanges stitched just before a gap dropped queued frames

    # -- input -----------------------------------------------------------------------------------

    def add(self, fragment: Fragment) -> None:
        self.bytes_seen[fragment.io] += fragment.length
        if fragment.source is Source.TLS and not self.conn.tls:  # e.g. url.scheme "https"
            self.conn = dataclasses.replace(self.conn, tls=True)
        if not self.unclaimed:
            self.streams[fragment.io].add(fragment.position, fragment.length, fragment.data, fragment.ts_ns)

    def buffered(self) -> int:
        a, b = self.streams
        return len(a) + len(b)

    def waiting_on_hole(self) -> bool:
        return any(s.blocked for s in self.streams)

    # -- the loop --------------------------------------------------------------------------------

    def process(self, final: bool = False) -> list[L7Record]:
        if self.unclaimed:
            return []
        if self.spec is None:
            for io in Io:  # a hole before any data (fragments lost or late) must not stall detection
                if not len(self.streams[io]):
                    self._wait(io, self.streams[io], final)
            if not self._detect(final):
                return []
        assert self.spec is not None and self.request_io is not None
        response_io = Io.RECV if self.request_io == Io.SEND else Io.SEND
        if final:
            for io, direction in ((self.request_io, Direction.REQUEST), (response_io, Direction.RESPONSE)):
                if not self.streams[io].blocked:
                    self.spec.on_eof(self.state, direction)
        for io, direction in ((self.request_io, Direction.REQUEST), (response_io, Direction.RESPONSE)):
            stream = self.streams[io]
            if final or stream.gap_crossed or len(stream) or stream.blocked:  # else nothing to parse
                self._parse(io, direction, final)
        requests, responses = self._pair
        exchanges = self.spec.stitch(requests, responses, self.state)
        if self._before_gap:
            exchanges = self._before_gap + exchanges
            self._before_gap = []
        limit = self.limits.max_queued_frames
        for queue in self._pair:
            while len(queue) > limit:
                queue.popleft()
                self.health.count("unmatched_frames", self.spec.name)
        records = [self._finish(x) for x in exchanges] if exchanges else []
        if final:
            for queue in (requests, responses):
                self.health.count("unmatched_frames", self.spec.name, len(queue))
                queue.clear()
        return records

    def _finish(self, exchange: Any) -> L7Record:
        assert self.spec is not None
        record = self.spec.to_record(exchange, self.conn)
        position = self.spec.exchange_position(exchange) if self.spec.exchange_position else record.start_ns
        self.health.count("exchanges", record.protocol)
        return with_record_id(record, f"{self.conn.conn_id}/{position}")

    def _parse(self, io: Io, direction: Direction, final: bool) -> None:
        spec, stream = self.spec, self.streams[io]
        queue = self._pair[0 if direction is Direction.REQUEST else 1]
        assert spec is not None
        while True:
            if stream.gap_crossed:
                stream.gap_crossed = False
                self._on_gap(io, direction)
            if not len(stream):
                if self._wait(io, stream, final):
                    continue
                return
            with stream.head() as buf:
                if self._resync[io]:
                    result: object = spec.find_boundary(buf, direction, 0)
                else:
                    result = spec.parse_frame(buf, direction, self.state)
            if self._resync[io]:
                self._resynced(io, stream, result)
                if self._resync[io] and not self._wait(io, stream, final):  # no boundary: past a gap, or wait
                    return
                continue
            if isinstance(result, Parsed):
                self._stuck[io] = 0
                queue.append(self._stamp(stream, result))
            elif isinstance(result, NeedData):
                if not self._wait(io, stream, final):
                    return
            elif isinstance(result, Invalid):
                with stream.head() as buf:
                    offset = spec.find_boundary(buf, direction, 1)
                self._rejected(io, direction, result, offset)
                self._skip(io, offset)

    def _rejected(self, io: Io, direction: Direction, invalid: Invalid, boundary: int | None) -> None:
        """Bytes the parser rejected: a parse error, or a gap when they hold zeros standing in for bytes
        the capture did not copy (its copy limit), which is lost traffic, not malformed traffic."""
        spec, stream = self.spec, self.streams[io]
        assert spec is not None
        start = stream.position
        end = start + (boundary if boundary and boundary > 0 else len(stream))
        if not (stream.has_filled and stream.filled_between(start, end)):
            self.health.count("parse_errors", spec.name, reason=invalid.reason)
        elif spec.ordered:  # frames paired by order: drop those the lost bytes answered (no mispairing)
            stream.gap_ts = stream.ts_at(start)  # the lost bytes are the uncopied tail of this piece
            self._on_gap(io, direction)
        else:  # paired by stream id (HTTP/2): forgetting the HPACK table would unname every later call
            self.health.count("gaps", spec.name)

    def _stamp(self, stream: DataStream, parsed: Parsed[Any]) -> Timed[Any]:
        start = stream.position
        size = min(max(parsed.size, 1), len(stream))
        end = start + size
        filled = stream.filled_between(start, end) if stream.has_filled else False
        timed = Timed(parsed.frame, stream.ts_at(start), stream.ts_at(end - 1), start, filled)
        stream.consume(size)
        return timed

    def _wait(self, io: Io, stream: DataStream, final: bool) -> bool:
        """NEED_DATA: True when the loop should go on (a gap was crossed), False to wait."""
        if len(stream) > self.limits.max_buffer:
            assert self.spec is not None
            self.health.count("parse_errors", self.spec.name, reason="frame exceeds buffer limit")
            stream.discard_all_but(0)
            self._resync[io] = True
            return True
        if not stream.blocked:
            return False
        if stream.cross_gap():  # bytes known to be lost: nothing to wait for
            return True
        self._stuck[io] += 1
        if final or self._stuck[io] >= self.limits.hole_rounds:
            self._stuck[io] = 0
            return stream.cross_gap(force=True)
        return False

    def _resynced(self, io: Io, stream: DataStream, offset: object) -> None:
        if isinstance(offset, int):
            stream.consume(offset)
            self._resync[io] = False
        else:
            stream.discard_all_but(self.limits.resync_keep)

    def _skip(self, io: Io, offset: int | None) -> None:
        if offset is None or offset <= 0:
            self.streams[io].discard_all_but(self.limits.resync_keep)
            self._resync[io] = True
        else:
            self.streams[io].consume(offset)

    def _on_gap(self, io: Io, direction: Direction) -> None:
        """Frames the lost bytes answered can no longer be matched: drop them, then resync."""
        assert self.spec is not None
        self.health.count("gaps", self.spec.name)
        # Frames queued before the gap may complete exchanges (a batch can hold a whole connection).
        self._before_gap += self.spec.stitch(*self._pair, self.state)
        self.spec.on_gap(self.state, direction)
        if self.spec.ordered:
            requests, responses = self.queues[Direction.REQUEST], self.queues[Direction.RESPONSE]
            stale = responses if direction == Direction.REQUEST else requests
            keep = 0 if direction == Direction.REQUEST else 1 + self._sent_after(self.streams[io], requests)
            while len(stale) > keep:
                stale.popleft()
                self.health.count("unmatched_frames", self.spec.name)
        self._resync[io] = True

    @staticmethod
    def _sent_after(stream: DataStream, requests: deque[Timed[Any]]) -> int:
        """Queued requests sent after the lost bytes began: they await later responses, so keep them."""
        since = stream.gap_ts
        if not since or not requests:
            return 0
        n = 0
        for timed in reversed(requests):
            if timed.start_ns <= since:
                break
            n += 1
        return min(n, len(requests) - 1)

    # -- detection -------------------------------------------------------------------------------

    def _detect(self, final: bool) -> bool:
        heads = {io: bytes(self.streams[io].head()[:4096]) for io in Io}
        # Every protocol's check on a message start comes before any mid-stream (boundary) guess.
        for claims in (_starts_with, _contains_boundary):
            for spec in self.protocols:
                match = self._match(spec, heads, claims)
                if match is not None:
                    self._claim(spec, match)
                    return True
        if (
            final
            or all(self.bytes_seen[io] > self.limits.detect_bytes for io in Io)
            or any(len(self.streams[io]) > self.limits.detect_bytes for io in Io)
        ):
            self.unclaimed = True
            self.health.count("unclaimed_connections", "unknown")
            for stream in self.streams:
                stream.discard_all_but(0)
        return False

    def _match(self, spec: AnySpec, heads: dict[Io, bytes], claims: Claims) -> Io | None:
        """The capture direction carrying requests if `spec` claims these bytes, else None."""
        if self.request_io is None:
            candidates = list(Io)
        elif self.conn.role_inferred:  # a guess (e.g. a capture joined mid-connection): the content decides
            candidates = [self.request_io, Io.RECV if self.request_io == Io.SEND else Io.SEND]
        else:
            candidates = [self.request_io]
        for req in candidates:
            resp = Io.RECV if req == Io.SEND else Io.SEND
            if claims(spec, heads[req], Direction.REQUEST) or claims(spec, heads[resp], Direction.RESPONSE):
                return req
        return None

    def _claim(self, spec: AnySpec, req: Io) -> None:
        self.spec, self.state = spec, spec.new_state()
        if self.request_io != req:  # role learned from the protocol: who sends requests is the client
            self.request_io = req
            role = Role.CLIENT if req == Io.SEND else Role.SERVER
            self.conn = dataclasses.replace(self.conn, role=role, role_inferred=True)
        # A direction that does not start at a frame boundary (joined mid-stream) resyncs first.
        for io in Io:
            direction = Direction.REQUEST if io == self.request_io else Direction.RESPONSE
            head = bytes(self.streams[io].head()[:4096])
            self._resync[io] = bool(head) and not spec.detect(head, direction)


Claims = Callable[[AnySpec, bytes, Direction], bool]


def _starts_with(spec: AnySpec, head: bytes, direction: Direction) -> bool:
    """Does `head` start with a message of `spec` travelling in `direction`?"""
    return bool(head) and spec.detect(head, direction)


def _contains_boundary(spec: AnySpec, head: bytes, direction: Direction) -> bool:
    """Joined mid-stream: is there a boundary in `head` after which a message of `spec` starts?"""
    offset = spec.find_boundary(memoryview(head), direction, 1) if head else None
    return offset is not None and 0 < offset < len(head) and spec.detect(head[offset:], direction)
