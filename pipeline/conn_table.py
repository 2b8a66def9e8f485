"""Per-connection framing state for the connections this process owns, bounded in count and bytes.

The table has two outputs: the exchanges its connections complete (`L7Record`), and what every batch
it is fed did on its connection, parsed or not (`ConnActivity`: bytes each way, times, close), from
which the service map and graph count bytes and connections.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from pipeline.framing import AnySpec, ConnParser, Limits, ParserStuck
from probes.fragment import Batch, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, L7Record, Role

log = logging.getLogger("l7scope.conn_table")
_LOGGED_STUCK = 1024  # connection ids remembered so each stuck connection is logged once


@dataclass(frozen=True, slots=True)
class TableLimits:
    max_connections: int = 100_000
    max_buffered_bytes: int = 512 << 20  # across all connections
    idle_seconds: float = 300.0
    hole_seconds: float = 1.0  # a quiet connection's hole is re-examined (and given up) after this


class ConnActivity(NamedTuple):  # one per batch: a tuple is built ~3x faster than a frozen dataclass
    """What one batch did on its connection, parsed or not."""

    conn: ConnInfo
    sent: int  # bytes the traced process wrote (copied or not)
    received: int  # bytes it read
    first_ns: int  # the earliest capture time of its fragments (of its close if it had none; 0: neither)
    last_ns: int  # the latest of its fragments and its close
    closed: bool  # the connection ended in this batch

    @property
    def role(self) -> Role:
        return self.conn.role


_SEND = int(Io.SEND)  # comparing with an int costs less than with the IntEnum member


def activity_of(batch: Batch) -> ConnActivity:
    """A batch's bytes each way and its time span: one pass, and no loop for the common one fragment."""
    fragments, closed = batch.fragments, batch.closed
    if closed is None and len(fragments) == 1:  # the commonest batch: no loop
        f = fragments[0]
        ts = f.ts_ns
        if f.io == _SEND:
            return ConnActivity(batch.conn, f.length, 0, ts, ts, False)
        return ConnActivity(batch.conn, 0, f.length, ts, ts, False)
    end_ns = closed.ts_ns if closed is not None else 0
    sent = received = first = last = 0
    for f in fragments:
        if f.io == _SEND:
            sent += f.length
        else:
            received += f.length
        ts = f.ts_ns
        if ts < first or not first:
            first = ts
        if ts > last:
            last = ts
    return ConnActivity(batch.conn, sent, received, first or end_ns, max(last, end_ns), closed is not None)


class Fed(NamedTuple):
    records: list[L7Record]  # the exchanges the batches completed
    activity: list[ConnActivity]  # one per batch, in the order fed


class ConnTable:
    def __init__(
        self,
        protocols: tuple[AnySpec, ...],
        health: Health,
        limits: Limits | None = None,
        table_limits: TableLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.protocols = protocols
        self.health = health
        self.limits = limits or Limits()
        self.table_limits = table_limits or TableLimits()
        self._applies = 0
        self.clock = clock
        self._conns: OrderedDict[str, ConnParser] = OrderedDict()  # least recently used first
        self._last_seen: dict[str, float] = {}
        # Kafka bookkeeping: which partition a connection arrives on, and the earliest message offset
        # whose bytes an unfinished connection still holds (a crash must re-read from there).
        self._partition: dict[str, int] = {}
        self._needs_offset: dict[str, int] = {}
        self._logged_stuck: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._conns)

    def feed(
        self, batches: Sequence[Batch], positions: Sequence[tuple[int, int]] = (), activity: bool = True
    ) -> Fed:
        """`apply` each batch (at its (partition, offset), when given: one each); returns the records
        they completed and each batch's activity on its connection (none when not `activity`)."""
        records: list[L7Record] = []
        apply = self.apply
        if positions:
            for batch, (partition, offset) in zip(batches, positions, strict=True):
                records += apply(batch, partition, offset)
        else:
            for batch in batches:
                records += apply(batch)
        return Fed(records, [activity_of(batch) for batch in batches] if activity else [])

    def apply(self, batch: Batch, partition: int = -1, offset: int = -1) -> list[L7Record]:
        """Feed one connection's batch; returns the exchanges it completed.

        `partition`/`offset` (from Kafka) let `low_water` and `flush_partitions` work per partition.
        """
        conn_id = batch.conn.conn_id
        parser = self._parser(batch.conn)
        self._last_seen[conn_id] = self.clock()
        fragments = batch.fragments
        records: list[L7Record] = []
        added, every = 0, self.limits.parse_every
        for fragment in in_order(fragments) if len(fragments) > 1 else fragments:
            parser.add(fragment)
            added += fragment.length
            if added >= every and not parser.waiting_on_hole():  # a hole waits for the batch's end
                added = 0
                records += self._process(conn_id, parser)
                if conn_id not in self._conns:  # stuck: the rest starts a new parser, as a later batch would
                    parser = self._parser(batch.conn)
        records += self._process(conn_id, parser)
        if conn_id not in self._conns:  # its parser was stuck: the connection is forgotten
            return records + self._enforce_bounds()
        if partition >= 0:
            self._partition[conn_id] = partition
            if _unfinished(parser):
                self._needs_offset.setdefault(conn_id, offset)
            else:
                self._needs_offset.pop(conn_id, None)
        if batch.closed is not None:
            records += self._drop(conn_id, final=True)
        return records + self._enforce_bounds()

    def _parser(self, conn: ConnInfo) -> ConnParser:
        parser = self._conns.get(conn.conn_id)
        if parser is None:
            parser = self._conns[conn.conn_id] = ConnParser(conn, self.protocols, self.limits, self.health)
        else:
            self._conns.move_to_end(conn.conn_id)
        return parser

    def needed_from(self, conn_id: str, offset: int) -> int:
        """The earliest message offset the connection's next records are made from: where it still
        needs bytes from (it is unfinished), else `offset` (the message about to be applied)."""
        return self._needs_offset.get(conn_id, offset)

    def positions(self) -> dict[str, tuple[int, int]]:
        """(partition, earliest offset still needed) of each unfinished connection that came from Kafka."""
        return {c: (self._partition[c], o) for c, o in self._needs_offset.items() if c in self._partition}

    def low_water(self, partition: int) -> int | None:
        """The earliest offset on `partition` that an unfinished connection still needs, if any."""
        needed = [o for c, o in self._needs_offset.items() if self._partition.get(c) == partition]
        return min(needed) if needed else None

    def flush_partitions(self, partitions: set[int]) -> list[L7Record]:
        """Finish the connections that arrived on `partitions` (those partitions were revoked)."""
        records: list[L7Record] = []
        for conn_id in [c for c, p in self._partition.items() if p in partitions]:
            records += self._drop(conn_id, final=True)
        return records

    def expire(self) -> list[L7Record]:
        """Call now and then: flushes idle connections, and gives up holes no fragment came to fill."""
        now = self.clock()
        horizon, hole_horizon = now - self.table_limits.idle_seconds, now - self.table_limits.hole_seconds
        records: list[L7Record] = []
        for conn_id, seen in list(self._last_seen.items()):
            if seen < horizon:
                self.health.count("expired_connections", "idle")
                records += self._drop(conn_id, final=True)
            elif seen < hole_horizon and self._conns[conn_id].waiting_on_hole():
                records += self._process(conn_id, self._conns[conn_id])
        return records

    def flush(self) -> list[L7Record]:
        """Finish every connection (shutdown, or partitions revoked)."""
        records: list[L7Record] = []
        for conn_id in list(self._conns):
            records += self._drop(conn_id, final=True)
        return records

    def _drop(self, conn_id: str, final: bool) -> list[L7Record]:
        parser = self._conns[conn_id]
        records = self._process(conn_id, parser, final=True) if final else []
        self._forget(conn_id)
        return records

    def _forget(self, conn_id: str) -> None:
        self._conns.pop(conn_id, None)
        self._last_seen.pop(conn_id, None)
        self._partition.pop(conn_id, None)
        self._needs_offset.pop(conn_id, None)

    def _process(self, conn_id: str, parser: ConnParser, final: bool = False) -> list[L7Record]:
        """parser.process, where a parser that makes no progress (or raises) costs its connection only:
        the connection is counted (`parser_stuck`, by protocol and reason), logged once and forgotten;
        its later bytes start a new parser that resyncs like a connection joined mid-stream."""
        try:
            return parser.process(final)
        except ParserStuck as stuck:
            reason, detail = "no progress", str(stuck)
        except Exception as exc:  # a bug in a parser or stitcher must never stop the pipeline
            reason, detail = f"parser raised {type(exc).__name__}", f"{conn_id}: {exc!r}"
        protocol = parser.spec.name if parser.spec is not None else "unknown"
        self.health.count("parser_stuck", protocol, reason=reason)
        requests, responses = parser._pair
        self.health.count("unmatched_frames", protocol, len(requests) + len(responses))
        if conn_id not in self._logged_stuck:
            self._logged_stuck[conn_id] = None
            if len(self._logged_stuck) > _LOGGED_STUCK:
                self._logged_stuck.popitem(last=False)
            log.warning("connection %s dropped: %s parser stuck (%s): %s", conn_id, protocol, reason, detail)
        self._forget(conn_id)
        return []

    def _enforce_bounds(self) -> list[L7Record]:
        records: list[L7Record] = []
        while len(self._conns) > self.table_limits.max_connections:
            self.health.count("evicted_connections", "count")
            records += self._drop(next(iter(self._conns)), final=True)
        self._applies += 1
        if self._applies % 64:  # summing every connection's buffers is O(n): do it now and then
            return records
        total = sum(p.buffered() for p in self._conns.values())
        while total > self.table_limits.max_buffered_bytes and self._conns:
            oldest = next(iter(self._conns))
            total -= self._conns[oldest].buffered()
            self.health.count("evicted_connections", "memory")
            records += self._drop(oldest, final=False)
        return records


def _unfinished(parser: ConnParser) -> bool:
    """Bytes not yet parsed, or frames waiting for their other half: not all turned into records."""
    requests, responses = parser._pair
    return bool(parser.buffered() or requests or responses or parser.mid_message())


def in_order(fragments: list[Fragment]) -> list[Fragment]:
    """Each direction in position order (threads writing one socket on several CPUs can reorder a
    batch: sorting keeps a stream's start), the two merged by capture time: a batch parsed part way
    (Limits.parse_every) has then seen both directions up to one moment, as at a batch boundary.
    A batch comes in capture order: it is returned as it is unless a direction goes back."""
    last = [-1, -1]
    for f in fragments:
        if f.position < last[f.io]:
            break
        last[f.io] = f.position
    else:
        return fragments
    send = sorted((f for f in fragments if f.io is Io.SEND), key=_POSITION)
    recv = sorted((f for f in fragments if f.io is Io.RECV), key=_POSITION)
    if not send or not recv:
        return send or recv
    return list(heapq.merge(send, recv, key=_TS))


_POSITION, _TS = attrgetter("position"), attrgetter("ts_ns")
