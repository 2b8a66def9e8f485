"""The service map: edges client service -> server service, from records and connection activity.

A service is the traced end's service.name (`protocols.base.service_name`); the far end is
"ip:port" (an untraced server) or "ip" (an untraced client, whose port is ephemeral) unless the same
connection was also traced from that end on this node, in which case both halves (joined by their
endpoints) name both services. An exchange seen from both ends is counted once: each edge keeps what
its client side and its server side saw, and the map reports the better-observed side.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pipeline.conn_table import ConnActivity
from pipeline.exporter import Exporter
from pipeline.service_map import Edge, ServiceMap
from pipeline.topology_svg import to_dot, to_svg
from protocols.base import ConnInfo, Endpoint, L7Record, Role, service_name

CLIENT, SERVER = "client", "server"
EndKey = tuple[str, str, str]  # (node, local "ip:port", remote "ip:port"): one end of a connection
LOOPBACK = ("127.", "::1", "::ffff:127.")
GRACE_S = 5.0  # how long an end waits for its far end's first batch before it is named by address
MAX_WAITING = 100_000  # items held at once; past it the oldest are released
T = TypeVar("T")


@dataclass(slots=True)
class Side:
    """One edge as one of its ends saw it."""

    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))  # the latest ones
    request_bytes: int = 0
    response_bytes: int = 0
    connections: int = 0


def _add(a: Side, b: Side) -> Side:
    """One end's view of an edge recorded under two names (before and after the far end was learnt)."""
    latencies = deque(a.latencies_ms, maxlen=a.latencies_ms.maxlen)
    latencies.extend(b.latencies_ms)
    return Side(
        a.requests + b.requests, a.errors + b.errors, latencies, a.request_bytes + b.request_bytes,
        a.response_bytes + b.response_bytes, a.connections + b.connections,
    )  # fmt: skip


def _percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Topology(Exporter):
    """Exporter of records and connection activity building the service map; bounded."""

    def __init__(
        self,
        out_path: str = "",
        max_edges: int = 10_000,
        max_conns: int = 200_000,
        grace_s: float = GRACE_S,
        clock: Callable[[], float] = time.monotonic,
        file_mode: int = 0o600,
    ) -> None:
        self.out_path = out_path
        self.file_mode = file_mode  # of the map file, when l7scope creates it (export.file_mode)
        self.max_edges = max_edges
        self.max_conns = max_conns
        self.dropped_edges = 0  # edges past max_edges are not tracked (counted here)
        self._ends: OrderedDict[EndKey, tuple[str, Role]] = OrderedDict()
        self._local_ips: set[tuple[str, str]] = set()  # (node, ip) of every end learnt: bounded below
        self._seen_conns: OrderedDict[str, None] = OrderedDict()
        self._sides: dict[tuple[str, str], dict[str, Side]] = {}
        self._protocols: dict[tuple[str, str], Counter[str]] = {}
        self._nodes: dict[tuple[str, str], str] = {}  # the node an edge was first seen on, for its names
        self._first_ns = 0
        self._last_ns = 0
        self._wait: FarEndWait[L7Record | ConnActivity] = FarEndWait(self, grace_s, clock)
        self._lock = threading.Lock()  # the live map (`svg_page`) is drawn from another thread

    # -- naming -----------------------------------------------------------------------------------

    @staticmethod
    def end_key(conn: ConnInfo) -> EndKey:
        return (conn.node, str(conn.local), str(conn.remote))

    @staticmethod
    def peer_key(conn: ConnInfo) -> EndKey:
        """The key the far end of this connection has once it is learnt."""
        return (conn.node, str(conn.remote), str(conn.local))

    def maybe_local(self, conn: ConnInfo) -> bool:
        """Whether the far end's address is one of this node's, so it may be traced here too."""
        ip = conn.remote.ip
        return ip.startswith(LOOPBACK) or (conn.node, ip) in self._local_ips

    @staticmethod
    def service(conn: ConnInfo) -> str:
        """A traced end's name: its service.name, as spans and metrics carry it."""
        return service_name(conn)

    def learn(self, conn: ConnInfo) -> None:
        """Remember which process holds this end of a connection (LRU-bounded)."""
        key = self.end_key(conn)
        if len(self._local_ips) >= 65536:  # bounded: node addresses are few, churn starts it over
            self._local_ips.clear()
        self._local_ips.add((conn.node, conn.local.ip))
        self._ends[key] = (self.service(conn), conn.role)
        self._ends.move_to_end(key)
        while len(self._ends) > self.max_conns:
            self._ends.popitem(last=False)

    def edge_of(self, conn: ConnInfo) -> tuple[str, str, str]:
        """(client service, server service, which end observed it)."""
        me = self.service(conn)
        peer = self._ends.get(self.peer_key(conn))
        role = conn.role
        if role == Role.UNKNOWN and peer is not None and peer[1] != Role.UNKNOWN:
            role = Role.CLIENT if peer[1] == Role.SERVER else Role.SERVER  # the other end knew
        # An untraced client by its address alone: its port is ephemeral, one edge per connection.
        untraced = conn.remote.ip if role == Role.SERVER else str(conn.remote)
        other = peer[0] if peer is not None else untraced
        return (other, me, SERVER) if role == Role.SERVER else (me, other, CLIENT)

    def peer_traced(self, conn: ConnInfo) -> bool:
        """Whether the far end of this connection is a traced process on this node (it names the edge)."""
        return self.peer_key(conn) in self._ends

    def _side(self, client: str, server: str, observer: str, node: str) -> Side | None:
        sides = self._sides.get((client, server))
        if sides is None:
            if len(self._sides) >= self.max_edges:
                self.dropped_edges += 1
                return None
            sides = self._sides[(client, server)] = {}
            self._protocols[(client, server)] = Counter()
            self._nodes[(client, server)] = node
        side = sides.get(observer)
        if side is None:
            side = sides[observer] = Side()
        return side

    # -- inputs -----------------------------------------------------------------------------------

    def export_activity(self, activity: list[ConnActivity]) -> None:
        """Connections and their bytes, whether or not an L7 protocol was parsed on them."""
        with self._lock:
            for a in activity:  # learn every end first, so halves in one round join
                self.learn(a.conn)
            self._place(self._wait.split([a.conn for a in activity], list(activity)))

    def export(self, records: list[L7Record]) -> None:
        with self._lock:
            for r in records:
                self.learn(r.conn)
            self._place(self._wait.split([r.conn for r in records], list(records)))

    def _place(self, items: list[L7Record | ConnActivity]) -> None:
        for item in items:
            if isinstance(item, ConnActivity):
                self._place_activity(item)
            else:
                self._place_record(item)

    def _place_activity(self, a: ConnActivity) -> None:
        client, server, observer = self.edge_of(a.conn)
        side = self._side(client, server, observer, a.conn.node)
        if side is None:
            return
        if a.conn.conn_id not in self._seen_conns:
            side.connections += 1
            self._seen_conns[a.conn.conn_id] = None
            while len(self._seen_conns) > self.max_conns:
                self._seen_conns.popitem(last=False)
        # The client sends requests; the server receives them.
        side.request_bytes += a.sent if observer == CLIENT else a.received
        side.response_bytes += a.received if observer == CLIENT else a.sent

    def _place_record(self, r: L7Record) -> None:
        client, server, observer = self.edge_of(r.conn)
        side = self._side(client, server, observer, r.conn.node)
        if side is None:
            return
        side.requests += 1
        side.errors += r.error
        side.latencies_ms.append(r.duration_s * 1000)
        self._protocols[(client, server)][r.protocol] += 1
        if r.start_ns > 0:
            self._first_ns = min(self._first_ns or r.start_ns, r.start_ns)
        self._last_ns = max(self._last_ns, r.end_ns)

    def close(self) -> None:
        if self.out_path:
            try:  # the path was checked at start-up (l7scope.outputs); a full disk can still fail it
                write_map(self.snapshot(), self.out_path, file_mode=self.file_mode)
            except OSError as e:
                logging.getLogger("l7scope.map").error("cannot write the service map to %s (%s)",
                                                       self.out_path, e.strerror or e)  # fmt: skip

    @classmethod
    def from_records(cls, records: Iterable[L7Record]) -> Topology:
        """A whole file at once: every end is learnt before any record is placed on an edge."""
        records = list(records)
        topology = cls()
        for r in records:
            topology.learn(r.conn)
        topology.export(records)
        return topology

    # -- output -----------------------------------------------------------------------------------

    def _merged(self) -> dict[tuple[str, str], tuple[dict[str, Side], Counter[str]]]:
        """Edges by their final names: an "ip:port" named before its end was learnt joins that process."""
        aliases = {(node, local): process for (node, local, _), (process, _) in self._ends.items()}
        merged: dict[tuple[str, str], tuple[dict[str, Side], Counter[str]]] = {}
        for (client, server), sides in self._sides.items():
            node = self._nodes[(client, server)]
            key = (aliases.get((node, client), client), aliases.get((node, server), server))
            into, protocols = merged.setdefault(key, ({}, Counter()))
            protocols.update(self._protocols[(client, server)])
            for observer, side in sides.items():
                into[observer] = _add(into[observer], side) if observer in into else side
        return merged

    def svg_page(self) -> tuple[str, bytes]:
        """The map so far as an SVG page (`/map.svg` beside `/metrics`). What still waits for its far end
        is left out rather than placed early: it shows once named, within GRACE_S."""
        return "image/svg+xml", to_svg(self.snapshot(final=False)).encode()

    def snapshot(self, final: bool = True) -> ServiceMap:
        """The map now; `final`: what still waits for its far end is placed as it is (the map is drawn
        once, at the end)."""
        with self._lock:
            return self._snapshot(final)

    def _snapshot(self, final: bool) -> ServiceMap:
        if final:
            self._place(self._wait.flush())
        window_s = max(1.0, (self._last_ns - self._first_ns) / 1e9) if self._first_ns else 1.0
        edges: list[Edge] = []
        for (client, server), (sides, protocols) in sorted(self._merged().items()):
            seen = list(sides.values())
            # Both ends saw the same exchanges: report the better-observed end, never the sum.
            counted = max(seen, key=lambda s: (s.requests, s.errors))
            server_side = sides.get(SERVER)  # latency as the server saw it, without the network
            timed = server_side if server_side is not None and server_side.latencies_ms else counted
            edges.append(
                Edge(
                    client=client,
                    server=server,
                    protocols=tuple(sorted(protocols)),
                    requests=counted.requests,
                    errors=counted.errors,
                    rate_per_s=round(counted.requests / window_s, 3),
                    error_ratio=round(counted.errors / counted.requests, 4) if counted.requests else 0.0,
                    p50_ms=round(_percentile(timed.latencies_ms, 0.5), 3),
                    p99_ms=round(_percentile(timed.latencies_ms, 0.99), 3),
                    request_bytes=max(s.request_bytes for s in seen),
                    response_bytes=max(s.response_bytes for s in seen),
                    connections=max(s.connections for s in seen),
                )
            )
        services = sorted({e.client for e in edges} | {e.server for e in edges})
        return ServiceMap(tuple(services), tuple(edges), round(window_s, 3))


# -- renderers ------------------------------------------------------------------------------------


def to_json(m: ServiceMap) -> str:
    return json.dumps(
        {"window_s": m.window_s, "services": list(m.services), "edges": [asdict(e) for e in m.edges]},
        indent=2,
    )


def render(m: ServiceMap, fmt: str) -> str:
    renderers = {"json": to_json, "dot": to_dot, "svg": to_svg}
    if fmt not in renderers:
        raise ValueError(f"unknown map format {fmt!r}: use dot, json or svg")
    return renderers[fmt](m)


def format_for(path: str, default: str = "json") -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in ("json", "dot", "svg") else default


def write_map(m: ServiceMap, path: str, fmt: str | None = None, file_mode: int = 0o600) -> None:
    """The map rendered into `path`; a new file is created with `file_mode` (it names every service)."""
    from l7scope.outputs import write_private

    write_private(path, render(m, fmt or format_for(path)), file_mode)


# -- reading the JSON-lines records that `--export jsonl:` writes ---------------------------------


def parse_endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return Endpoint(host.strip("[]"), int(port) if port.isdigit() else 0)


def record_from_dict(d: dict) -> L7Record:
    role = Role[d.get("role", "unknown").upper()]
    client, server = parse_endpoint(d["client"]), parse_endpoint(d["server"])
    local, remote = (server, client) if role == Role.SERVER else (client, server)
    conn = ConnInfo(
        conn_id=d.get("conn_id", ""), local=local, remote=remote, role=role,
        role_inferred=bool(d.get("role_inferred")), pid=int(d.get("pid", 0)),
        process=d.get("process", ""), node=d.get("node", ""), service=d.get("service", ""),
    )  # fmt: skip
    return L7Record(
        protocol=d["protocol"], role=role, name=d.get("name", ""), start_ns=int(d["start_ns"]),
        end_ns=int(d["end_ns"]), conn=conn, metric="", error_type=d.get("error_type"),
        attributes=d.get("attributes", {}), truncated=bool(d.get("truncated")),
        degraded=bool(d.get("degraded")), record_id=d.get("record_id", ""),
    )  # fmt: skip


def read_jsonl_records(path: str) -> Iterator[L7Record]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield record_from_dict(json.loads(line))


class FarEndWait(Generic[T]):
    """Holds what one end of a connection saw until its far end is learnt, or `grace_s` passes.

    The two ends of a connection reach the pipeline in separate batches (`l7scope run` processes one
    connection at a time); naming and counting an end before its far end is known named the far end
    by address and, for a client end, counted exchanges the server's end counts again. Only ends
    whose far address is on this node wait: another host's end cannot be traced here.
    """

    def __init__(
        self, topology: Topology, grace_s: float = GRACE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.topology, self.grace_s, self.clock = topology, grace_s, clock
        self._waiting: dict[EndKey, list[T]] = {}  # keyed by the far end's key once it is learnt
        self._since: deque[tuple[float, EndKey]] = deque()  # when each key started waiting
        self._held = 0

    def _must_wait(self, conn: ConnInfo) -> bool:
        t = self.topology
        return self.grace_s > 0 and not t.peer_traced(conn) and t.maybe_local(conn)

    def split(self, conns: list[ConnInfo], items: list[T]) -> list[T]:
        """Items ready now: those released by the ends in `conns` (learnt by the caller) or by age,
        and those of `items` (one per conn) that need not wait; the others are held."""
        now = self.clock()
        ready: list[T] = []
        for conn in conns:
            ready += self._waiting.pop(self.topology.end_key(conn), ())
        while self._since:
            if self._since[0][0] > now - self.grace_s and self._held - len(ready) <= MAX_WAITING:
                break
            ready += self._waiting.pop(self._since.popleft()[1], ())
        self._held -= len(ready)
        for conn, item in zip(conns, items, strict=True):
            if not self._must_wait(conn):
                ready.append(item)
                continue
            key = self.topology.peer_key(conn)
            held = self._waiting.get(key)
            if held is None:
                held = self._waiting[key] = []
                self._since.append((now, key))
            held.append(item)
            self._held += 1
        return ready

    def flush(self) -> list[T]:
        """Everything still held (at close: no far end will come any more)."""
        items = [item for held in self._waiting.values() for item in held]
        self._waiting.clear()
        self._since.clear()
        self._held = 0
        return items
