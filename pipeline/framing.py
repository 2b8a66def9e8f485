"""The one framing loop: turns a connection's two byte streams into L7 records through a protocol.

It owns buffers, timestamps, protocol detection, gap handling and bounds; protocols only parse.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.stream import DataStream
from probes.fragment import Fragment, Io, Source
from probes.health import Health
from protocols.base import (
    ConnInfo,
    Direction,
    Invalid,
    L7Record,
    NeedData,
    Parsed,
    ProtocolSpec,
    Role,
    Skip,
    Timed,
)

AnySpec = ProtocolSpec[Any, Any, Any]
_UNBOUNDED = 1 << 62


class ParserStuck(Exception):
    """The framing loop came back to a state it had already been in: it would never end.

    Every step of the loop consumes bytes, waits for data or crosses a gap; at one stream position the
    only other state change is leaving resync to parse, so a third step there repeats a state. The
    connection table turns this into a counted drop of the connection instead of a stuck process.
    """

    def __init__(self, conn_id: str, protocol: str, direction: Direction, position: int) -> None:
        where = f"{protocol} {direction.value} parsing made no progress at byte {position}"
        super().__init__(f"{conn_id}: {where}")
        self.conn_id, self.protocol, self.direction, self.position = conn_id, protocol, direction, position


@dataclass(frozen=True, slots=True)
class Limits:
    detect_bytes: int = 16 << 10  # give up detecting a protocol after this many bytes per direction
    max_buffer: int = 32 << 20  # an unparsed head larger than this is dropped (resync)
    max_queued_frames: int = 1024  # unmatched frames kept per direction (requests beyond wait unparsed)
    fill_limit: int = 1 << 20  # uncopied bytes zero-filled rather than treated as a gap
    hole_rounds: int = 2  # rounds a hole may wait for late fragments before it is declared lost
    resync_keep: int = 64  # bytes kept when no boundary is found (a boundary may straddle)
    # A batch's bytes are parsed every this many as they are added, not only at its end: a burst (a
    # 50 MB body) then has its body skipped as it arrives instead of buffered as zero-filled bytes, and
    # a fragment lost inside that body is a hole in a skipped span, not a gap before unparsed headers.
    parse_every: int = 1 << 20


_RECORD_FIELDS = (
    "protocol", "role", "name", "start_ns", "end_ns", "conn", "metric", "error_type", "attributes",
    "metric_attributes", "truncated", "degraded", "record_id", "trace_id", "parent_span_id", "produced",
    "consumed", "links", "span_id",
)  # fmt: skip
_POSITIONAL = tuple(f.name for f in dataclasses.fields(L7Record)) == _RECORD_FIELDS


def with_record_id(r: L7Record, record_id: str) -> L7Record:
    """dataclasses.replace(r, record_id=...), several times cheaper; replace itself if L7Record changed."""
    if not _POSITIONAL:
        return dataclasses.replace(r, record_id=record_id)
    return L7Record(r.protocol, r.role, r.name, r.start_ns, r.end_ns, r.conn, r.metric, r.error_type,
                    r.attributes, r.metric_attributes, r.truncated, r.degraded, record_id, r.trace_id,
                    r.parent_span_id, r.produced, r.consumed, r.links, r.span_id)  # fmt: skip


@dataclass(slots=True)
class _Message:
    """A message whose body the loop is skipping (protocols return Skip): stamped once it is passed."""

    frame: Any
    position: int  # of its first byte
    start_ns: int
    more: bool  # parse_frame continues it after the skip (the next chunk of a chunked body)


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
        self._message: list[_Message | None] = [None for _ in Io]  # a body being skipped, per direction
        self._room = [_UNBOUNDED for _ in Io]  # frames a direction's queue may hold before parsing pauses
        self._held = [False for _ in Io]  # parsing paused: the queue was full (deep pipelining)
        self._eof_behind_hole = [False for _ in Io]  # the connection ended; on_eof once the hole is crossed

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

    def mid_message(self) -> bool:
        """A message's body is being skipped: it is not a record yet."""
        return self._message[0] is not None or self._message[1] is not None

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
                if self.streams[io].blocked:  # ended behind a hole: on_eof once _parse has crossed it
                    self._eof_behind_hole[io] = True
                else:
                    self.spec.on_eof(self.state, direction)
        requests, responses = self._pair
        exchanges = self._parse_and_stitch(response_io, final)
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

    def _parse_and_stitch(self, response_io: Io, final: bool) -> list[Any]:
        """Parse both directions and stitch, in rounds while deep pipelining holds requests back.

        Requests of an ordered protocol are parsed only while fewer than max_queued_frames wait for their
        responses, and responses no further than the requests parsed (a response's framing may need its
        request): the rest wait as bytes, accounted in the connection's buffer, and are parsed once
        stitching has made room. So pipelining at any depth is parsed and paired, never evicted.
        """
        assert self.spec is not None and self.request_io is not None
        request_io, limit, held = self.request_io, self.limits.max_queued_frames, self._held
        requests, responses = self._pair
        ordered = self.spec.ordered
        stalled = False  # the last round stitched nothing: lift the caps that may be lifted
        exchanges: list[Any] = []
        while True:
            held[request_io] = held[response_io] = False
            # Requests stop waiting when the connection ends or their unparsed bytes outgrow the limit.
            force = (
                not ordered or (stalled and final) or len(self.streams[request_io]) > self.limits.max_buffer
            )
            self._room[request_io] = _UNBOUNDED if force else limit
            self._parse_direction(request_io, Direction.REQUEST, final)
            self._room[response_io] = len(requests) if held[request_io] and not stalled else _UNBOUNDED
            self._parse_direction(response_io, Direction.RESPONSE, final)
            before = len(requests) + len(responses)
            exchanges += self.spec.stitch(requests, responses, self.state)
            self.health.count("unmatched_frames", self.spec.name, self.spec.take_unmatched(self.state))
            if not (held[request_io] or held[response_io]):
                return exchanges
            if len(requests) + len(responses) < before:
                stalled = False
            elif stalled:  # nothing more to pair: the answers have not arrived yet, requests wait as bytes
                return exchanges
            else:
                stalled = True

    def _parse_direction(self, io: Io, direction: Direction, final: bool) -> None:
        stream = self.streams[io]
        if final or stream.gap_crossed or len(stream) or stream.blocked or self._message[io] is not None:
            self._parse(io, direction, final)

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
        # Progress watchdog for the steps that parse no frame (_stamp checks those that do): where
        # such steps last stood, and how many stood there in a row.
        still_at, still = -1, 0
        while True:
            message = self._message[io]
            if message is not None and not message.more and not stream.skipping:
                queue.append(self._passed(io, stream, message))  # its body has all gone by
            if stream.gap_crossed:
                stream.gap_crossed = False
                self._cut(io, queue)
                self._on_gap(io, direction)
                if self._eof_behind_hole[io] and not stream.blocked:  # the last hole of an ended stream
                    self._eof_behind_hole[io] = False
                    spec.on_eof(self.state, direction)
            if len(queue) >= self._room[io]:
                self._held[io] = True  # deep pipelining: parse on once stitching has made room
                return
            if not len(stream):
                if not (stream.blocked or final):  # all parsed, nothing lost: wait (_wait's own answer)
                    return
                still_at, still = self._no_repeat(direction, stream, still_at, still)
                if self._wait(io, stream, final):
                    continue
                if final:
                    self._cut(io, queue, ended=True)
                return
            with stream.head() as buf:
                if self._resync[io]:
                    result: object = spec.find_boundary(buf, direction, 0)
                else:
                    result = spec.parse_frame(buf, direction, self.state)
            if isinstance(result, Parsed):
                self._stuck[io] = 0
                message = self._message[io]
                if message is None:
                    queue.append(self._stamp(stream, result))
                else:
                    queue.append(self._passed(io, stream, message, result))
                continue
            still_at, still = self._no_repeat(direction, stream, still_at, still)
            if self._resync[io]:
                self._resynced(io, stream, result)
                if self._resync[io] and not self._wait(io, stream, final):  # no boundary: past a gap, or wait
                    return
            elif isinstance(result, NeedData):
                if not self._wait(io, stream, final):
                    if final:
                        self._cut(io, queue, ended=True)
                    return
            elif isinstance(result, Skip):
                self._stuck[io] = 0
                self._skip_body(io, stream, result)
            elif isinstance(result, Invalid):
                self._cut(io, queue)
                with stream.head() as buf:
                    offset = spec.find_boundary(buf, direction, 1)
                self._rejected(io, direction, result, offset)
                self._skip(io, offset)
            else:
                raise TypeError(f"{spec.name}.parse_frame returned {type(result).__name__}")

    def _no_repeat(
        self, direction: Direction, stream: DataStream, still_at: int, still: int
    ) -> tuple[int, int]:
        """Count a step that parsed no frame; raise ParserStuck when it would repeat a state.

        At one position a step is either a resync search or a parse (two states): a third step there
        means the loop went round without consuming, waiting or crossing a gap."""
        position = stream.position
        if position != still_at:
            return position, 1
        if still >= 2:
            assert self.spec is not None
            raise ParserStuck(self.conn.conn_id, self.spec.name, direction, position)
        return position, still + 1

    def _skip_body(self, io: Io, stream: DataStream, skip: Skip[Any]) -> None:
        """Pass a body (or a chunk of one) unbuffered: the message is stamped once it has gone by."""
        message = self._message[io]
        if message is None:
            position = stream.position
            message = self._message[io] = _Message(skip.frame, position, stream.ts_at(position), skip.more)
            stream.skip_cut = False
        else:
            message.frame, message.more = skip.frame, skip.more
        n = skip.size + skip.skip
        if n <= 0:  # a parser bug: a step must consume bytes, so take one (the next parse resyncs)
            assert self.spec is not None
            self.health.count("parse_errors", self.spec.name, reason="skip of no bytes")
            n = 1
        stream.skip(n)

    def _passed(
        self, io: Io, stream: DataStream, message: _Message, last: Parsed[Any] | None = None
    ) -> Timed[Any]:
        """The skipped message as a frame: from its first byte to its last (`last`: a final piece parsed)."""
        self._message[io] = None
        frame, end_ns, truncated = message.frame, stream.skip_ts, stream.skip_cut  # reset when it began
        if last is not None:
            start = stream.position
            size = min(max(last.size, 1), len(stream))
            frame, end_ns = last.frame, stream.ts_at(start + size - 1)
            truncated = truncated or (stream.has_filled and stream.filled_between(start, start + size))
            stream.consume(size)
        return Timed(frame, message.start_ns, max(end_ns, message.start_ns), message.position, truncated)

    def _cut(self, io: Io, queue: deque[Timed[Any]], ended: bool = False) -> None:
        """The stream ended (`ended`) or broke inside a skipped message: record it as far as it went,
        truncated."""
        message = self._message[io]
        if message is not None:
            assert self.spec is not None
            self._message[io] = None
            stream = self.streams[io]
            frame = (
                self.spec.cut_frame(message.frame, stream.end - message.position) if ended else message.frame
            )
            end_ns = max(stream.skip_ts, message.start_ns)
            queue.append(Timed(frame, message.start_ns, end_ns, message.position, True))

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
        if stream.position <= start:  # a frame that consumed nothing would be parsed again, forever
            assert self.spec is not None and self.request_io is not None
            direction = Direction.REQUEST if stream is self.streams[self.request_io] else Direction.RESPONSE
            raise ParserStuck(self.conn.conn_id, self.spec.name, direction, start)
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
            stream.consume(max(offset, 0))  # a boundary before the head (a broken spec) is the head
            self._resync[io] = False
        else:
            stream.discard_all_but(self.limits.resync_keep)

    def _skip(self, io: Io, offset: int | None) -> None:
        """Past bytes the parser rejected: never re-read them, however short the buffer.

        With no later boundary, the tail is kept for a boundary that may straddle the next bytes, but
        never the rejected first byte: keeping a whole short message would find it again, forever."""
        stream = self.streams[io]
        if offset is None or offset <= 0:
            stream.discard_all_but(min(self.limits.resync_keep, len(stream) - 1))
            self._resync[io] = True
        else:
            stream.consume(offset)

    def _on_gap(self, io: Io, direction: Direction) -> None:
        """Frames the lost bytes answered can no longer be matched: drop them, then resync."""
        assert self.spec is not None
        self.health.count("gaps", self.spec.name)
        # Frames queued before the gap may complete exchanges (a batch can hold a whole connection).
        self._before_gap += self.spec.stitch(*self._pair, self.state)
        self.health.count("unmatched_frames", self.spec.name, self.spec.take_unmatched(self.state))
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
        # A request seen as one is the stronger sign: some responses read as requests too (a Redis array
        # reply holding "PING" is what the command looks like), so replies decide only when no request does.
        for req in candidates:
            if claims(spec, heads[req], Direction.REQUEST):
                return req
        for req in candidates:
            if claims(spec, heads[Io.RECV if req == Io.SEND else Io.SEND], Direction.RESPONSE):
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
