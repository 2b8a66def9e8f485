"""Passive call chains: parent spans inferred from the traffic, without headers or app changes.

Two links, decided per record after the connection table (docs/architecture.md, "Call chains"):

- **connection**: the server end's exchange is the child of the client end's exchange of the same
  request: the same TCP connection traced at both ends (node + client and server endpoints) and the
  same exchange position (the request's byte position, or the HTTP/2 stream id), times agreeing.
- **thread**: an outgoing exchange whose request was sent and response read by a thread that was at
  that moment serving one inbound exchange (read its request, not yet written its response) is that
  inbound exchange's child. Only for thread-per-request servers: a thread that serves overlapping
  inbound exchanges (event loops), or a process whose exchanges move between threads (goroutines),
  gets no thread links for a while; those children are left unlinked and counted. A wrong parent is
  worse than none.

A propagated `traceparent` always wins (link `header`). Records wait here at least `settle_s` (so the
fragments of the moments they cover have been observed) and at most `window_s` for their parent;
every record leaves with `trace_id`, `span_id` and, when linked, `parent_span_id` and the attribute
`l7scope.link`. Memory is bounded (held records, connections, threads); what pressure or the window
forces out unlinked is counted in Health as `chain_unlinked` by reason.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from probes.fragment import Batch, Io
from probes.health import Health
from protocols.base import ConnInfo, L7Record, Role

LINK_ATTRIBUTE = "l7scope.link"
HEADER, CONNECTION, THREAD = "header", "connection", "thread"


@dataclass(frozen=True, slots=True)
class ChainLimits:
    settle_s: float = 0.25  # > the agent's publish interval (0.1 s): other threads' fragments have come
    window_s: float = 1.0  # the longest a record waits for its parent (latency added before export)
    max_held: int = 50_000  # records waiting; beyond, the oldest go out unlinked (counted)
    max_conns: int = 100_000  # connections whose recent thread runs are kept
    conn_runs: int = 128  # runs (one thread, one direction) kept per connection
    max_threads: int = 65_536
    thread_conns: int = 32  # inbound connections remembered per thread (a pool thread serves many)
    thread_runs: int = 64  # runs kept per inbound connection of a thread
    recent_s: float = 2.0  # released spans stay findable this long (children can arrive late)
    max_recent: int = 200_000
    slack_ns: int = 50_000_000  # the two ends' clocks/syscall exits may disagree this much
    multiplexed_s: float = 60.0  # a process seen multiplexing gets no thread links this long
    pass_every_s: float = 0.05  # release passes at most this often (each walks the held records)


Run = list[int]  # [io, tid, first_ts, last_ts]: consecutive fragments of one thread in one direction
ThreadKey = tuple[str, int, int]  # node, pid, tid
# node, client endpoint, server endpoint, exchange position (the record id's tail): the same exchange
# seen from both ends has the same key.
ExchangeKey = tuple[str, str, str, str]


@dataclass(slots=True)
class _Span:
    record: L7Record
    arrived: float
    span_id: str
    exchange: ExchangeKey
    thread: ThreadKey | None  # the one thread that handled both halves, if known
    thread_switched: bool
    partition: int
    offset: int
    trace_id: str = ""
    final: bool = False
    released_at: float = 0.0

    @property
    def start(self) -> int:
        return self.record.start_ns

    @property
    def end(self) -> int:
        return self.record.end_ns


def digest_ids(record_id: str) -> tuple[str, str]:
    """(trace id, span id) in hex, derived from the record id as pipeline/otlp.py does (deterministic)."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=24).digest()
    return digest[:16].hex(), digest[16:].hex()


def times_agree(client: L7Record, server: L7Record, slack_ns: int) -> bool:
    """The server read the request after the client sent it and answered before the client read it."""
    return client.start_ns - slack_ns <= server.start_ns and server.end_ns <= client.end_ns + slack_ns


class CallChains:
    """Holds records until their parent is known (or the window ends), then releases them linked."""

    def __init__(
        self,
        health: Health,
        limits: ChainLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = health
        self.limits = limits or ChainLimits()
        self.clock = clock
        self.thread_links = True  # off when this process sees only part of a node's connections
        self._runs: OrderedDict[str, deque[Run]] = OrderedDict()
        # Per serving thread, per inbound connection it touched: that connection's runs on the thread.
        self._thread_log: OrderedDict[ThreadKey, OrderedDict[str, deque[Run]]] = OrderedDict()
        self._ends: OrderedDict[tuple[str, str, str], int] = OrderedDict()  # (node, client, server) -> roles
        self._end_keys: dict[str, tuple[str, str, str]] = {}  # conn_id -> (node, client, server)
        self._held: OrderedDict[str, _Span] = OrderedDict()
        self._clients: dict[ExchangeKey, _Span] = {}
        self._inbound: dict[ThreadKey, _Timeline] = {}  # server spans per serving thread, by start
        self._recent: deque[_Span] = deque()
        self._multiplexed: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._ready: list[L7Record] = []  # records forced out by pressure
        self._decided: list[_Span] = []  # spans decided since the last release
        self._next_pass = 0.0
        self.peak_held = 0
        self.released = 0
        self.delay_s = 0.0  # summed time records waited here (the latency added before export)
        self.max_delay_s = 0.0

    # -- input -----------------------------------------------------------------------------------

    def observe(self, batch: Batch) -> None:
        """Remember which thread moved which bytes (runs), and which connection ends are traced."""
        conn = batch.conn
        if conn.role not in (Role.CLIENT, Role.SERVER):
            return
        end_key = self._end_key(conn)
        roles = self._ends.get(end_key)
        if roles is None or not roles & conn.role:
            self._ends[end_key] = (roles or 0) | int(conn.role)
            if len(self._ends) > self.limits.max_conns:
                self._ends.popitem(last=False)
        if not batch.fragments:
            return
        runs = self._runs.get(conn.conn_id)
        if runs is None:
            runs = self._runs[conn.conn_id] = deque(maxlen=self.limits.conn_runs)
            if len(self._runs) > self.limits.max_conns:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(conn.conn_id)
        last = runs[-1] if runs else None
        server = conn.role is Role.SERVER
        for f in batch.fragments:
            if last is not None and last[0] == f.io and last[1] == f.tid:
                if f.ts_ns > last[3]:
                    last[3] = f.ts_ns
                elif f.ts_ns < last[2]:
                    last[2] = f.ts_ns
                continue
            last = [int(f.io), f.tid, f.ts_ns, f.ts_ns]
            runs.append(last)
            if server and f.tid:
                self._log_thread((conn.node, conn.pid, f.tid), conn.conn_id, last)

    def _end_key(self, conn: ConnInfo) -> tuple[str, str, str]:
        """(node, client, server) of a connection, made once per connection (str(Endpoint) costs)."""
        key = self._end_keys.get(conn.conn_id)
        if key is None:
            key = self._end_keys[conn.conn_id] = (conn.node, str(conn.client), str(conn.server))
            if len(self._end_keys) > self.limits.max_conns:
                self._end_keys.pop(next(iter(self._end_keys)))
        return key

    def _log_thread(self, key: ThreadKey, conn_id: str, run: Run) -> None:
        conns = self._thread_log.get(key)
        if conns is None:
            conns = self._thread_log[key] = OrderedDict()
            if len(self._thread_log) > self.limits.max_threads:
                self._thread_log.popitem(last=False)
        else:
            self._thread_log.move_to_end(key)
        runs = conns.get(conn_id)
        if runs is None:
            runs = conns[conn_id] = deque(maxlen=self.limits.thread_runs)
            if len(conns) > self.limits.thread_conns:
                conns.popitem(last=False)
        else:
            conns.move_to_end(conn_id)
        runs.append(run)

    def forget(self, conn_id: str) -> None:
        """A closed connection: its records have been added, its runs are no longer needed."""
        self._runs.pop(conn_id, None)
        self._end_keys.pop(conn_id, None)

    def add(self, records: Iterable[L7Record], partition: int = -1, offset: int = -1) -> None:
        now = self.clock()
        for record in records:
            span = self._held[record.record_id] = self._span(record, now, partition, offset)
            if record.trace_id:  # a propagated traceparent: the header decides
                self._finish(span, record.trace_id, record.parent_span_id, HEADER, now)
            self._index(span)
        self.peak_held = max(self.peak_held, len(self._held))

    def _span(self, record: L7Record, now: float, partition: int, offset: int) -> _Span:
        _, span_id = digest_ids(record.record_id)
        conn = record.conn
        request_io = Io.RECV if record.role is Role.SERVER else Io.SEND
        runs = self._runs.get(conn.conn_id)
        req_tid = _tid_at(runs, request_io, record.start_ns) if runs else 0
        resp_tid = _tid_at(runs, Io(1 - request_io), record.end_ns) if runs else 0
        switched = bool(req_tid and resp_tid and req_tid != resp_tid)
        thread = (conn.node, conn.pid, req_tid) if req_tid and req_tid == resp_tid else None
        exchange = (*self._end_key(conn), record.record_id.rpartition("/")[2])
        return _Span(record, now, span_id, exchange, thread, switched, partition, offset)

    def _index(self, span: _Span) -> None:
        record = span.record
        if record.role is Role.CLIENT:
            self._clients[span.exchange] = span
        elif record.role is Role.SERVER:
            if span.thread_switched:  # read on one thread, answered on another: not thread-per-request
                self._flag(record.conn.node, record.conn.pid)
            if span.thread is not None:
                timeline = self._inbound.get(span.thread)
                if timeline is None:
                    timeline = self._inbound[span.thread] = _Timeline()
                timeline.add(span)

    # -- output ----------------------------------------------------------------------------------

    def release(self, force: bool = False) -> list[L7Record]:
        """Records whose links are decided (all of them when `force`: stopping, partitions revoked)."""
        now = self.clock()
        if not (force or now >= self._next_pass or self._decided or len(self._held) > self.limits.max_held):
            return []  # called after every batch: nothing to do between passes
        while len(self._held) > self.limits.max_held:  # pressure: the oldest go out as they are
            _, span = self._held.popitem(last=False)
            if not span.final:
                self._unlinked(span, "pressure", now)
            self._ready.append(span.record)
        if force or now >= self._next_pass:
            self._next_pass = now + self.limits.pass_every_s
            for span in list(self._held.values()):
                if not span.final and now - span.arrived < self.limits.settle_s and not force:
                    break  # arrival order: the rest are younger
                self._decide(span, now, force, set())
        out = self._take_released()
        self._expire(now)
        return out

    def summary(self) -> dict[str, int | float | str]:
        """What the stop summaries add: links by kind, unlinked by reason, peak held, time waited."""
        mean = self.delay_s / self.released if self.released else 0.0
        snapshot = sorted(self.health.snapshot().items())
        links = {label: v for (n, label, _), v in snapshot if n == "chain_links"}
        unlinked: dict[str, int] = {}
        for (n, _, reason), v in snapshot:
            if n == "chain_unlinked":
                unlinked[reason] = unlinked.get(reason, 0) + v
        return {
            "chains_released": self.released,
            "chains_links": ", ".join(f"{k}={v}" for k, v in links.items()) or "none",
            "chains_unlinked": ", ".join(f"{k}={v}" for k, v in unlinked.items()) or "none",
            "chains_peak_held": self.peak_held,
            "chains_mean_delay_ms": round(mean * 1000, 1),
            "chains_max_delay_ms": round(self.max_delay_s * 1000, 1),
        }

    def _take_released(self) -> list[L7Record]:
        """Held records decided since the last call, and those that never waited (headers, pressure)."""
        out, self._ready = self._ready, []
        held = self._held
        for span in self._decided:
            if held.pop(span.record.record_id, None) is not None:
                out.append(span.record)
        self._decided = []
        return out

    def _decide(self, span: _Span, now: float, force: bool, visiting: set[int]) -> bool:
        """Try to link `span`; True once it is final (its trace id will not change)."""
        if span.final:
            return True
        if id(span) in visiting:  # a cycle cannot happen with sane times; never loop on bad ones
            return self._unlinked(span, "cycle", now)
        if not force and now - span.arrived < self.limits.settle_s:
            return False
        visiting.add(id(span))
        timed_out = force or now - span.arrived >= self.limits.window_s
        if span.record.role is Role.SERVER:
            if span.record.conn.role_inferred:  # seen from mid-stream: its positions may not be the client's
                return self._unlinked(span, "joined mid-connection", now)
            parent, link = self._connection_parent(span), CONNECTION
            if parent is None:
                if not self._other_end_traced(span.record):
                    return self._root(span, now, "")  # the client is not traced: a root
                return self._unlinked(span, "no client span", now) if timed_out else False
        elif span.record.role is Role.CLIENT:
            parent, reason = self._thread_parent(span)
            link = THREAD
            if parent is None:
                if reason == "wait":
                    return self._unlinked(span, "parent late", now) if timed_out else False
                return self._unlinked(span, reason, now) if reason else self._root(span, now, "")
        else:
            return self._root(span, now, "")
        if not parent.final and not self._decide(parent, now, force, visiting):
            return self._unlinked(span, "parent late", now) if timed_out else False
        return self._finish(span, parent.trace_id, parent.span_id, link, now)

    def _connection_parent(self, span: _Span) -> _Span | None:
        client = self._clients.get(span.exchange)
        if client is None or client.record.conn.role_inferred:  # positions count from first sight
            return None
        return client if times_agree(client.record, span.record, self.limits.slack_ns) else None

    def _other_end_traced(self, record: L7Record) -> bool:
        conn = record.conn
        return bool(self._ends.get(self._end_key(conn), 0) & int(Role.CLIENT))

    def _thread_parent(self, span: _Span) -> tuple[_Span | None, str]:
        """(parent, "") or (None, why): "" a root (the thread serves nothing), "wait" not known yet."""
        record = span.record
        if span.thread_switched:
            self._flag(record.conn.node, record.conn.pid)
            return None, "thread switched"
        if span.thread is None:
            return None, "thread unknown" if self.thread_links else "partial view"
        if not self.thread_links:
            return None, "partial view"
        if self._is_multiplexed(record.conn.node, record.conn.pid):
            return None, "multiplexed"
        timeline = self._inbound.get(span.thread)
        covering = timeline.covering(span.start, span.end) if timeline is not None else []
        if not covering:
            return (
                (None, "wait") if self._serving(span.thread, span.start, record.conn.conn_id) else (None, "")
            )
        if len(covering) > 1 or not self._exclusive(covering[0]):
            self._flag(record.conn.node, record.conn.pid)
            return None, "multiplexed"
        return covering[0], ""

    def _serving(self, thread: ThreadKey, at: int, own_conn: str) -> bool:
        """Had `thread` read an inbound request it had not yet answered, at `at`?"""
        for conn_id, runs in self._thread_log.get(thread, {}).items():
            if conn_id != own_conn and _open_at(runs, at):
                return True
        return False

    def _exclusive(self, parent: _Span) -> bool:
        """Did the parent's thread serve nothing but it from its request to its response: no other
        inbound connection's bytes on the thread in between, and none of their requests left open?"""
        conns = self._thread_log.get(parent.thread) if parent.thread else None
        if not conns:
            return False  # no evidence of the thread's activity: do not guess
        own, start, end = parent.record.conn.conn_id, parent.start, parent.end
        for conn_id, runs in conns.items():
            if conn_id == own:
                continue
            for run in reversed(runs):
                if run[2] > end:
                    continue  # after the parent: irrelevant
                if run[3] >= start or run[0] == Io.RECV:  # inside it, or a request read and not answered
                    return False
                break  # the last run before the parent was an answer: that connection was idle
        return True

    # -- decisions -------------------------------------------------------------------------------

    def _finish(self, span: _Span, trace_id: str, parent_id: str, link: str, now: float) -> bool:
        record = span.record
        span.trace_id, span.final, span.released_at = trace_id, True, now
        waited = now - span.arrived
        self.released += 1
        self.delay_s += waited
        self.max_delay_s = max(self.max_delay_s, waited)
        record.trace_id, record.parent_span_id, record.span_id = trace_id, parent_id, span.span_id
        if link:
            record.attributes = {**record.attributes, LINK_ATTRIBUTE: link}
            self.health.count("chain_links", link)
        self._recent.append(span)
        self._decided.append(span)
        return True

    def _root(self, span: _Span, now: float, reason: str) -> bool:
        if reason:
            self.health.count("chain_unlinked", span.record.protocol, reason=reason)
        trace_id, _ = digest_ids(span.record.record_id)
        return self._finish(span, trace_id, "", "", now)

    def _unlinked(self, span: _Span, reason: str, now: float) -> bool:
        """Left without a parent although it may have one: counted by reason."""
        return self._root(span, now, reason)

    def _flag(self, node: str, pid: int) -> None:
        key = (node, pid)
        self._multiplexed[key] = self.clock() + self.limits.multiplexed_s
        self._multiplexed.move_to_end(key)
        if len(self._multiplexed) > self.limits.max_threads:
            self._multiplexed.popitem(last=False)

    def _is_multiplexed(self, node: str, pid: int) -> bool:
        until = self._multiplexed.get((node, pid))
        return until is not None and until > self.clock()

    def _expire(self, now: float) -> None:
        """Released spans stay findable `recent_s` (late children), bounded in count."""
        horizon = now - self.limits.recent_s
        recent = self._recent
        while recent and (recent[0].released_at < horizon or len(recent) > self.limits.max_recent):
            span = recent.popleft()
            if self._clients.get(span.exchange) is span:
                del self._clients[span.exchange]
            if span.thread is not None and span.record.role is Role.SERVER:
                timeline = self._inbound.get(span.thread)
                if timeline is not None and not timeline.prune(horizon):
                    del self._inbound[span.thread]

    # -- Kafka bookkeeping -----------------------------------------------------------------------

    def low_water(self, partition: int) -> int | None:
        """The earliest offset on `partition` a held record came from (a crash must re-read it)."""
        offsets = [s.offset for s in self._held.values() if s.partition == partition and s.offset >= 0]
        return min(offsets) if offsets else None

    def __len__(self) -> int:
        return len(self._held)


def _tid_at(runs: deque[Run], io: int, ts: int) -> int:
    """The thread that moved the bytes of direction `io` captured at `ts` (0: unknown)."""
    for run in reversed(runs):
        if run[0] == io and run[2] <= ts <= run[3]:
            return run[1]
    return 0


def _open_at(runs: deque[Run], at: int) -> bool:
    """Was the connection's last run on the thread before `at` a request read (not yet answered)?"""
    for run in reversed(runs):
        if run[2] < at:
            return run[0] == Io.RECV
    return False


class _Timeline:
    """A thread's server spans ordered by start: which cover a moment is a bisect and a step or two,
    since a thread-per-request thread's exchanges do not overlap."""

    __slots__ = ("head", "spans", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.spans: list[_Span] = []
        self.head = 0  # spans before it were pruned

    def add(self, span: _Span) -> None:
        i = bisect_right(self.starts, span.start)
        self.starts.insert(i, span.start)
        self.spans.insert(i, span)

    def covering(self, start: int, end: int, limit: int = 8) -> list[_Span]:
        """Spans that began by `start` and ended at or after `end` (the latest `limit` candidates)."""
        out = []
        i = bisect_right(self.starts, start) - 1
        while i >= self.head and limit:
            s = self.spans[i]
            if s.end >= end:
                out.append(s)
            i -= 1
            limit -= 1
        return out

    def prune(self, horizon: float) -> int:
        """Drop leading spans released before `horizon`; returns how many are left."""
        spans = self.spans
        while self.head < len(spans) and spans[self.head].final and spans[self.head].released_at < horizon:
            self.head += 1
        if self.head > 64 and self.head * 2 > len(spans):
            del self.starts[: self.head], self.spans[: self.head]
            self.head = 0
        return len(spans) - self.head
