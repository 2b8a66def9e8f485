"""The service map as metrics, in the style of the OpenTelemetry Collector's servicegraph connector.

Edges are named by `pipeline.topology.Topology` (joined connection halves name both services). An
exchange traced from both ends is counted once: the server's end counts it, and a client's end only
when the far end is not traced on this node (so no server-side record will come). Bytes and
connections follow the same rule per connection. Edges are capped: the rest share one overflow edge.

The two ends of one connection reach the pipeline in separate batches (`l7scope run` processes one
connection at a time), so an end whose far end could be on this node but is not known yet waits up to
`grace_s` for it before it is counted under the far end's address.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import Meter

from pipeline.conn_table import ConnActivity
from pipeline.topology import GRACE_S, SERVER, FarEndWait, Topology
from probes.health import Health
from protocols.base import ConnInfo, L7Record

PREFIX = "l7scope.service_graph"
OVERFLOW_EDGE = "l7scope.overflow"  # client and server of every edge past `max_edges`
Waiting = L7Record | ConnActivity
# (name, kind, unit, description): red_metrics.INSTRUMENTS lists these for the dashboard test.
SERVICE_GRAPH_INSTRUMENTS: tuple[tuple[str, str, str, str], ...] = (
    (f"{PREFIX}.requests", "counter", "{request}", "requests per edge client -> server"),
    (f"{PREFIX}.requests.failed", "counter", "{request}", "failed requests per edge"),
    (f"{PREFIX}.request.duration", "histogram", "s", "request duration per edge"),
    (f"{PREFIX}.bytes", "counter", "By", "bytes per edge, parsed protocol or not"),
    (f"{PREFIX}.connections", "counter", "{connection}", "connections per edge, parsed protocol or not"),
)


class ServiceGraphMetrics:
    """Records and connection activity -> per-edge counters and a duration histogram on the caller's Meter."""

    def __init__(
        self,
        meter: Meter,
        health: Health | None = None,
        max_edges: int = 1024,
        max_conns: int = 200_000,
        grace_s: float = GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = health
        self.max_edges = max_edges
        self.max_conns = max_conns
        self.topology = Topology(max_conns=max_conns)  # naming only: its own counters stay unused
        self._wait: FarEndWait[Waiting] = FarEndWait(self.topology, grace_s, clock)
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
        return self._capped(client, server)

    def _capped(self, client: str, server: str) -> tuple[str, str]:
        if (client, server) not in self._edges:
            if len(self._edges) >= self.max_edges:
                if self.health is not None:
                    self.health.count("service_graph_edges_overflow", "metrics")
                return OVERFLOW_EDGE, OVERFLOW_EDGE
            self._edges.add((client, server))
        return client, server

    def flush(self) -> None:
        """Counts everything still waiting (at close: no far end will come any more)."""
        self._count(self._wait.flush())

    # -- inputs -----------------------------------------------------------------------------------

    def export(self, records: list[L7Record]) -> None:
        for r in records:
            self.topology.learn(r.conn)
        self._count(self._wait.split([r.conn for r in records], list(records)))

    def export_activity(self, activity: list[ConnActivity]) -> None:
        for a in activity:  # every end first, so halves seen in one round join
            self.topology.learn(a.conn)
        self._count(self._wait.split([a.conn for a in activity], list(activity)))

    def _count(self, items: list[Waiting]) -> None:
        records = [item for item in items if isinstance(item, L7Record)]
        if records:
            self._count_records(records)
        activity = [item for item in items if isinstance(item, ConnActivity)]
        if activity:
            self._count_bytes(activity)

    def _count_records(self, records: list[L7Record]) -> None:
        groups: dict[tuple[str, str, str], list[L7Record]] = {}
        failures: dict[tuple[str, str, str], int] = {}
        for r in records:
            client, server, observer = self.topology.edge_of(r.conn)
            both = self.topology.peer_traced(r.conn)
            if observer == SERVER or not both:
                edge = (*self._capped(client, server), r.protocol)
                groups.setdefault(edge, []).append(r)
                # With both ends traced, a failure is the client's to count (a 404 fails the client only).
                failures[edge] = failures.get(edge, 0) + (r.error and not both)
            elif r.error:  # the server's end counts this exchange; as in the servicegraph connector,
                edge = (*self._capped(client, server), r.protocol)  # it failed if either end failed
                failures[edge] = failures.get(edge, 0) + 1
        # One counter add per edge and protocol per batch: each SDK call costs microseconds.
        for (client, server, protocol), group in groups.items():
            attrs: dict[str, Any] = {"client": client, "server": server, "protocol": protocol}
            self._requests.add(len(group), attrs)
            for r in group:  # a histogram takes one value per call
                self._duration.record(r.duration_s, attrs)
        for (client, server, protocol), failed in failures.items():
            if failed:
                self._failed.add(failed, {"client": client, "server": server, "protocol": protocol})

    def _count_bytes(self, activity: list[ConnActivity]) -> None:
        totals: dict[tuple[str, str], list[int]] = {}  # edge -> [new connections, bytes]
        for a in activity:
            conn = a.conn
            edge = self._edge(conn)
            if edge is None:
                continue
            total = totals.setdefault(edge, [0, 0])
            if conn.conn_id not in self._seen_conns:
                self._seen_conns[conn.conn_id] = None
                while len(self._seen_conns) > self.max_conns:
                    self._seen_conns.popitem(last=False)
                total[0] += 1
            total[1] += a.sent + a.received
        # One add per edge per call, as in `_count_records`.
        for (client, server), (connections, size) in totals.items():
            attrs = {"client": client, "server": server}
            if connections:
                self._connections.add(connections, attrs)
            if size:
                self._bytes.add(size, attrs)
