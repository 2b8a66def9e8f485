"""The service map as metrics, in the style of the OpenTelemetry Collector's servicegraph connector.

Edges are named by `pipeline.topology.Topology` (joined connection halves name both services). An
exchange traced from both ends is counted once: the server's end counts it, and a client's end only
when the far end is not traced on this node (so no server-side record will come). Bytes and
connections follow the same rule per connection. Edges are capped: the rest share one overflow edge.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import Meter

from pipeline.health import Health
from pipeline.topology import SERVER, Topology
from probes.fragment import Batch, Io
from protocols.base import ConnInfo, L7Record

PREFIX = "l7scope.service_graph"
OVERFLOW_EDGE = "l7scope.overflow"  # client and server of every edge past `max_edges`
# (name, kind, unit, description): red_metrics.INSTRUMENTS lists these for the dashboard test.
SERVICE_GRAPH_INSTRUMENTS: tuple[tuple[str, str, str, str], ...] = (
    (f"{PREFIX}.requests", "counter", "{request}", "requests per edge client -> server"),
    (f"{PREFIX}.requests.failed", "counter", "{request}", "failed requests per edge"),
    (f"{PREFIX}.request.duration", "histogram", "s", "request duration per edge"),
    (f"{PREFIX}.bytes", "counter", "By", "bytes per edge, parsed protocol or not"),
    (f"{PREFIX}.connections", "counter", "{connection}", "connections per edge, parsed protocol or not"),
)


class ServiceGraphMetrics:
    """Records and batches -> per-edge counters and a duration histogram on the caller's Meter."""

    def __init__(
        self, meter: Meter, health: Health | None = None, max_edges: int = 1024, max_conns: int = 200_000
    ) -> None:
        self.health = health
        self.max_edges = max_edges
        self.max_conns = max_conns
        self.topology = Topology(max_conns=max_conns)  # naming only: its own counters stay unused
        self._edges: set[tuple[str, str]] = set()
        self._seen_conns: OrderedDict[str, None] = OrderedDict()
        requests, failed, duration, size, conns = SERVICE_GRAPH_INSTRUMENTS
        self._requests = meter.create_counter(requests[0], requests[2], requests[3])
        self._failed = meter.create_counter(failed[0], failed[2], failed[3])
        self._duration = meter.create_histogram(duration[0], duration[2], duration[3])
        self._bytes = meter.create_counter(size[0], size[2], size[3])
        self._connections = meter.create_counter(conns[0], conns[2], conns[3])

    def _edge(self, conn: ConnInfo) -> tuple[str, str] | None:
        """(client, server) if this end is the one that counts the exchange, capped to `max_edges`."""
        client, server, observer = self.topology.edge_of(conn)
        if observer != SERVER and self.topology.peer_traced(conn):
            return None  # the server's end is traced too and counts it
        if (client, server) not in self._edges:
            if len(self._edges) >= self.max_edges:
                if self.health is not None:
                    self.health.count("service_graph_edges_overflow", "metrics")
                return OVERFLOW_EDGE, OVERFLOW_EDGE
            self._edges.add((client, server))
        return client, server

    def export(self, records: list[L7Record]) -> None:
        for r in records:
            self.topology.learn(r.conn)
        groups: dict[tuple[str, str, str], list[L7Record]] = {}
        for r in records:
            edge = self._edge(r.conn)
            if edge is not None:
                groups.setdefault((*edge, r.protocol), []).append(r)
        # One counter add per edge and protocol per batch: each SDK call costs microseconds.
        for (client, server, protocol), group in groups.items():
            attrs: dict[str, Any] = {"client": client, "server": server, "protocol": protocol}
            self._requests.add(len(group), attrs)
            failed = sum(1 for r in group if r.error)
            if failed:
                self._failed.add(failed, attrs)
            for r in group:  # a histogram takes one value per call
                self._duration.record(r.duration_s, attrs)

    def observe(self, batches: Iterable[Batch]) -> None:
        batches = list(batches)
        for batch in batches:  # every end first, so halves seen in one round join
            self.topology.learn(batch.conn)
        totals: dict[tuple[str, str], list[int]] = {}  # edge -> [new connections, bytes]
        for batch in batches:
            edge = self._edge(batch.conn)
            if edge is None:
                continue
            total = totals.setdefault(edge, [0, 0])
            if batch.conn.conn_id not in self._seen_conns:
                self._seen_conns[batch.conn.conn_id] = None
                while len(self._seen_conns) > self.max_conns:
                    self._seen_conns.popitem(last=False)
                total[0] += 1
            total[1] += sum(f.length for f in batch.fragments if f.io in (Io.SEND, Io.RECV))
        # One add per edge per call, as in `export`.
        for (client, server), (connections, size) in totals.items():
            attrs = {"client": client, "server": server}
            if connections:
                self._connections.add(connections, attrs)
            if size:
                self._bytes.add(size, attrs)
