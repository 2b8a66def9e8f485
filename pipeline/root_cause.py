"""Alert root cause: the downstream call that explains a service's alert, from the calls it made.

The evaluator keeps, beside its rule windows, a short history of what each traced service served and
of each call edge (a traced client's service -> the service behind the address it called), in time
slices of record time. When an alert fires for a service, `explain` compares the alert window with
the window before it: the outgoing edge whose mean latency (latency alerts) or error count (error alerts)
rose most, if that rise is at least half of the service's own, explains it; the search goes on from
that edge's server, so a slow database two hops down is named rather than the API in between. When
no edge explains the rise, the cause is the service itself. Bounded: MAX_EDGES edges, MAX_ADDRESSES
learned addresses, slices older than the history dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from pipeline.latency_buckets import bucket_of, percentile_ms
from protocols.base import L7Record, Role, service_name

MAX_EDGES = 1024
MAX_ADDRESSES = 8192
MAX_DEPTH = 6
EXPLAINS = 0.5  # an edge explains a rise when its own rise is at least this share of it
LOOPBACK = ("127.", "::1")

EndpointKey = tuple[str, str, int]  # (node for a loopback address else "", ip, port)


@dataclass(slots=True)
class _Slot:
    requests: int = 0
    errors: int = 0
    total_ms: float = 0.0
    latency: Counter[int] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Stats:
    requests: int
    errors: int
    mean_ms: float
    p99_ms: float

    def value(self, kind: str) -> float:
        """What a rise is measured in: the mean latency (it adds up along a call chain, where a p99
        does not), or the error count."""
        return self.mean_ms if kind == "latency" else float(self.errors)

    def text(self) -> str:
        return f"mean {self.mean_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, {self.errors}/{self.requests} errors"


class _Series:
    """Time slices of one service's or edge's exchanges (sparse: only slices that saw some)."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots: dict[int, _Slot] = {}

    def add(self, index: int, r: L7Record, oldest: int) -> None:
        slot = self.slots.get(index)
        if slot is None:
            if len(self.slots) > 64:
                for old in [i for i in self.slots if i < oldest]:
                    del self.slots[old]
            slot = self.slots[index] = _Slot()
        ms = r.duration_s * 1000.0
        slot.requests += 1
        slot.errors += r.error
        slot.total_ms += ms
        slot.latency[bucket_of(ms)] += 1

    def stats(self, first: int, last: int) -> Stats:
        requests = errors = 0
        total_ms = 0.0
        latency: Counter[int] = Counter()
        for index, slot in self.slots.items():
            if first <= index <= last:
                requests += slot.requests
                errors += slot.errors
                total_ms += slot.total_ms
                latency.update(slot.latency)
        if not requests:
            return Stats(0, 0, 0.0, 0.0)
        return Stats(requests, errors, total_ms / requests, percentile_ms(latency, 0.99))


@dataclass(frozen=True, slots=True)
class Hop:
    client: str
    server: str
    before: Stats
    after: Stats
    rise: float

    def text(self) -> str:
        return f"{self.client} -> {self.server}: {self.before.text()} before, {self.after.text()} now"


@dataclass(frozen=True, slots=True)
class Cause:
    service: str
    kind: str
    chain: tuple[Hop, ...]  # the edges followed, the last one the cause; empty: the service itself
    own_before: Stats
    own_after: Stats
    others: tuple[Hop, ...]  # the alerting service's other edges, for the evidence

    def summary(self) -> str:
        if not self.chain:
            return f"{self.service} itself: no call it made explains the change"
        last = self.chain[-1]
        return f"the call {last.client} -> {last.server}"

    def evidence(self) -> str:
        own = f"{self.service} served: {self.own_before.text()} before, {self.own_after.text()} now"
        return "; ".join([own, *(h.text() for h in (*self.chain, *self.others))])


class CallHistory:
    """What each service served and each call edge carried, in slices of `width_s` over `span_s`."""

    def __init__(self, width_s: float, span_s: float) -> None:
        self.width = width_s
        self.slots = math.ceil(span_s / width_s) + 1
        self.served: dict[str, _Series] = {}
        self.calls: dict[tuple[str, EndpointKey], _Series] = {}
        self.addresses: dict[EndpointKey, str] = {}  # a traced server's address -> its service
        self.dropped = 0  # exchanges of edges past MAX_EDGES

    def add(self, t: float, r: L7Record) -> None:
        index = int(t / self.width)
        oldest = index - self.slots
        service = service_name(r.conn)
        if r.role is Role.SERVER:
            self._learn(endpoint_key(r, r.conn.local.ip, r.conn.local.port), service)
            series = self.served.get(service)
            if series is None:
                series = self.served[service] = _Series()
            series.add(index, r, oldest)
        elif r.role is Role.CLIENT:
            edge = (service, endpoint_key(r, r.conn.remote.ip, r.conn.remote.port))
            series = self.calls.get(edge)
            if series is None:
                if len(self.calls) >= MAX_EDGES:
                    self.dropped += 1
                    return
                series = self.calls[edge] = _Series()
            series.add(index, r, oldest)

    def _learn(self, key: EndpointKey, service: str) -> None:
        if key not in self.addresses and len(self.addresses) >= MAX_ADDRESSES:
            del self.addresses[next(iter(self.addresses))]
        self.addresses[key] = service

    def name(self, key: EndpointKey) -> str:
        """The service behind an address, once a server-side record named it; else `ip:port`."""
        return self.addresses.get(key) or f"{key[1]}:{key[2]}"

    def explain(self, service: str, kind: str, now: float, window_s: float) -> Cause:
        """Why `service`'s latency (kind "latency") or errors (other kinds) changed between the window
        before `now - window_s` and the window up to `now`."""
        last = int(now / self.width)
        size = max(1, round(window_s / self.width))
        after, before = (last - size + 1, last), (last - 2 * size + 1, last - size)
        empty = _Series()
        own = self.served.get(service, empty)
        own_before, own_after = own.stats(*before), own.stats(*after)
        to_explain = own_after.value(kind) - own_before.value(kind)
        chain: list[Hop] = []
        others: tuple[Hop, ...] = ()
        current, seen = service, {service}
        while len(chain) < MAX_DEPTH:
            hops = sorted(self._hops(current, kind, before, after), key=lambda h: h.rise, reverse=True)
            if current == service:
                others = tuple(hops[1:4])
            if not hops or hops[0].rise <= 0 or hops[0].rise < EXPLAINS * to_explain:
                break
            chain.append(hops[0])
            current, to_explain = hops[0].server, hops[0].rise
            if current in seen:
                break
            seen.add(current)
        return Cause(service, kind, tuple(chain), own_before, own_after, others)

    def _hops(self, client: str, kind: str, before: tuple[int, int], after: tuple[int, int]) -> list[Hop]:
        hops = []
        for (caller, key), series in self.calls.items():
            if caller != client:
                continue
            b, a = series.stats(*before), series.stats(*after)
            if a.requests:
                hops.append(Hop(client, self.name(key), b, a, a.value(kind) - b.value(kind)))
        return hops


def endpoint_key(r: L7Record, ip: str, port: int) -> EndpointKey:
    """An address as the history keys it: loopback addresses are only the same on the same node."""
    return (r.conn.node if ip.startswith(LOOPBACK) else "", ip, port)
