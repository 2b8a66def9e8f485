"""Service graph metrics through the SDK: per-edge requests, failures, duration buckets, bytes and
connections for a two-hop graph (client -> api -> db), counted once when both ends are traced."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pipeline.conn_table import activity_of
from pipeline.exporter import Exporter
from pipeline.red_metrics import DURATION_BUCKETS, INSTRUMENTS, RedMetrics, build_meter_provider
from probes.fragment import Batch, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role

CLIENT_EP, API_EP, API_OUT, DB_EP = (
    Endpoint("127.0.0.1", 51000), Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 52000),
    Endpoint("127.0.0.1", 3306),
)  # fmt: skip
CACHE_EP, API_CACHE = Endpoint("127.0.0.1", 6379), Endpoint("127.0.0.1", 53000)
G = "l7scope.service_graph"


def conn(cid: str, local: Endpoint, remote: Endpoint, role: Role, process: str) -> ConnInfo:
    return ConnInfo(cid, local, remote, role, pid=len(process), process=process, node="n1")


CURL_C = conn("n1/1/3/1", CLIENT_EP, API_EP, Role.CLIENT, "curl")
API_S = conn("n1/2/4/1", API_EP, CLIENT_EP, Role.SERVER, "api")
API_C = conn("n1/2/5/1", API_OUT, DB_EP, Role.CLIENT, "api")
DB_S = conn("n1/3/9/1", DB_EP, API_OUT, Role.SERVER, "mariadbd")
CACHE_C = conn("n1/2/6/1", API_CACHE, CACHE_EP, Role.CLIENT, "api")  # no parser, far end untraced


def rec(c: ConnInfo, protocol: str, seconds: float, error: bool = False) -> L7Record:
    return L7Record(
        protocol=protocol, role=c.role, name="x", start_ns=1_000_000_000,
        end_ns=1_000_000_000 + int(seconds * 1e9), conn=c, metric="http.server.request.duration",
        error_type="500" if error else None,
    )  # fmt: skip


def batch(c: ConnInfo, sent: int, received: int) -> Batch:
    frags = [Fragment(c.conn_id, Io.SEND, 0, sent, b"", 1), Fragment(c.conn_id, Io.RECV, 0, received, b"", 1)]
    return Batch(c, frags)


def observe(exporters: list[Exporter], batches: list[Batch]) -> None:
    """As the pipeline does: each batch's activity on its connection, to every exporter."""
    for exporter in exporters:
        exporter.export_activity([activity_of(b) for b in batches])


def collect(red: RedMetrics, reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, dict[tuple[Any, ...], Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name.startswith(G):
                    for p in m.data.data_points:
                        a = p.attributes
                        out.setdefault(m.name, {})[(a["client"], a["server"], a.get("protocol"))] = p
    return out


def bucket(seconds: float) -> int:
    return next((i for i, b in enumerate(DURATION_BUCKETS) if seconds <= b), len(DURATION_BUCKETS))


def test_two_hop_graph_edges_counts_failures_buckets_bytes_connections() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"), Health(), graph_grace_s=0)
    # Connections first (the pipeline observes batches before records): each half of each hop.
    observe(
        [red],
        [batch(CURL_C, 100, 900), batch(API_S, 900, 100), batch(API_C, 40, 400), batch(DB_S, 400, 40),
         batch(CACHE_C, 30, 7)],
    )  # fmt: skip
    # client -> api: three requests seen from both ends, one failed; api -> db: two queries, both ends.
    red.export([rec(CURL_C, "http", 0.012), rec(API_S, "http", 0.003)])
    red.export([rec(CURL_C, "http", 0.25, error=True), rec(API_S, "http", 0.2, error=True)])
    red.export([rec(CURL_C, "http", 9.0), rec(API_S, "http", 12.0)])
    red.export([rec(API_C, "mysql", 0.002), rec(DB_S, "mysql", 0.001)])
    red.export([rec(API_C, "mysql", 0.09, error=True), rec(DB_S, "mysql", 0.08, error=True)])
    got = collect(red, reader)

    web, db = ("curl", "api", "http"), ("api", "mariadbd", "mysql")
    requests = {k: p.value for k, p in got[f"{G}.requests"].items()}
    assert requests == {web: 3, db: 2}  # once per exchange, not once per traced end
    assert {k: p.value for k, p in got[f"{G}.requests.failed"].items()} == {web: 1, db: 1}

    durations = got[f"{G}.request.duration"]
    assert set(durations) == {web, db}
    for edge, seconds in ((web, (0.003, 0.2, 12.0)), (db, (0.001, 0.08))):  # the server's view
        point = durations[edge]
        assert tuple(point.explicit_bounds) == DURATION_BUCKETS
        expected = [0] * (len(DURATION_BUCKETS) + 1)
        for s in seconds:
            expected[bucket(s)] += 1
        assert list(point.bucket_counts) == expected
        assert point.count == len(seconds) and abs(point.sum - sum(seconds)) < 1e-6
    assert list(durations[web].bucket_counts)[-1] == 1  # 12 s is past the last bound

    cache = ("api", "127.0.0.1:6379", None)  # bytes-only, named by address: no second naming
    byte_counts = {k: p.value for k, p in got[f"{G}.bytes"].items()}
    assert byte_counts == {("curl", "api", None): 1000, ("api", "mariadbd", None): 440, cache: 37}
    conns = {k: p.value for k, p in got[f"{G}.connections"].items()}
    assert conns == {("curl", "api", None): 1, ("api", "mariadbd", None): 1, cache: 1}
    # a later batch on a known connection adds bytes, not connections
    observe([red], [batch(CACHE_C, 3, 0)])
    got = collect(red, reader)
    assert got[f"{G}.bytes"][cache].value == 40 and got[f"{G}.connections"][cache].value == 1
    red.close()


def test_client_end_counts_when_the_server_is_not_traced() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"), graph_grace_s=0)
    red.export([rec(API_C, "mysql", 0.004), rec(API_C, "mysql", 0.004, error=True)])
    got = collect(red, reader)
    edge = ("api", "127.0.0.1:3306", "mysql")
    assert got[f"{G}.requests"][edge].value == 2 and got[f"{G}.requests.failed"][edge].value == 1
    assert got[f"{G}.request.duration"][edge].count == 2
    red.close()


def test_edges_are_capped_and_overflow_is_counted() -> None:
    reader, health = InMemoryMetricReader(), Health()
    red = RedMetrics(build_meter_provider([reader], node="n1"), health, max_edges=1, graph_grace_s=0)
    red.export([rec(API_S, "http", 0.01), rec(DB_S, "mysql", 0.01), rec(DB_S, "mysql", 0.01)])
    requests = {k: p.value for k, p in collect(red, reader)[f"{G}.requests"].items()}
    overflow = ("l7scope.overflow", "l7scope.overflow")
    assert requests == {("127.0.0.1", "api", "http"): 1, (*overflow, "mysql"): 2}
    assert health.snapshot()[("service_graph_edges_overflow", "metrics", "")] == 2
    red.close()


def test_service_graph_instruments_are_listed() -> None:
    listed = {(i.name, i.kind, i.unit) for i in INSTRUMENTS}
    assert {
        (f"{G}.requests", "counter", "{request}"), (f"{G}.requests.failed", "counter", "{request}"),
        (f"{G}.request.duration", "histogram", "s"), (f"{G}.bytes", "counter", "By"),
        (f"{G}.connections", "counter", "{connection}"),
    } <= listed  # fmt: skip


def test_one_call_with_many_items_per_edge_counts_each_item() -> None:
    """Counters are added once per edge per call: the sums must equal one add per item."""
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"), graph_grace_s=0)
    observe([red], [batch(API_C, 10, 1), batch(CACHE_C, 5, 5), batch(API_C, 20, 2), batch(CACHE_C, 0, 0)])
    red.export(
        [rec(API_C, "mysql", 0.001), rec(CACHE_C, "redis", 0.02, error=True),
         rec(API_C, "mysql", 0.3, error=True), rec(API_C, "mysql", 0.004), rec(API_C, "http", 0.004)]
    )  # fmt: skip
    got = collect(red, reader)
    db, cache = ("api", "127.0.0.1:3306"), ("api", "127.0.0.1:6379")
    assert {k: p.value for k, p in got[f"{G}.requests"].items()} == {
        (*db, "mysql"): 3, (*cache, "redis"): 1, (*db, "http"): 1,
    }  # fmt: skip
    failed = {k: p.value for k, p in got[f"{G}.requests.failed"].items()}
    assert failed == {(*db, "mysql"): 1, (*cache, "redis"): 1}
    mysql = got[f"{G}.request.duration"][(*db, "mysql")]
    assert mysql.count == 3 and abs(mysql.sum - 0.305) < 1e-9 and mysql.max == 0.3
    assert {k: p.value for k, p in got[f"{G}.bytes"].items()} == {(*db, None): 33, (*cache, None): 10}
    assert {k: p.value for k, p in got[f"{G}.connections"].items()} == {(*db, None): 1, (*cache, None): 1}
    red.close()


def _mirror(c: ConnInfo, process: str) -> ConnInfo:
    """The server's end of a connection the client logged: same bytes, endpoints swapped."""
    return ConnInfo(c.conn_id.replace("loadgen", "api"), c.remote, c.local, Role.SERVER, pid=7,
                    process=process, node=c.node)  # fmt: skip


def _server_batch(b: Batch, conn: ConnInfo) -> Batch:
    io = {Io.SEND: Io.RECV, Io.RECV: Io.SEND}
    frags = [Fragment(conn.conn_id, io[f.io], f.position, f.length, f.data, f.ts_ns, 2, f.source)
             for f in b.fragments]  # fmt: skip
    return Batch(conn, frags, None)


def test_a_client_end_processed_before_its_server_end_is_counted_once_under_both_names() -> None:
    """`l7scope run` parses one connection at a time: the client's exchanges reached the graph before
    the server's end was known, and were counted twice (curl -> 127.0.0.1:PORT and curl -> nginx)."""
    from l7scope.config import Config
    from pipeline.pipeline import Pipeline
    from pipeline.run import new_table
    from pipeline.topology import Topology
    from tests.support.http_traffic import Client, HttpTarget, batches

    with HttpTarget() as target:
        client = Client(target.port, run="sg", per_conn=2, node="n1")
        for _ in range(3):
            client.connection()
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"))
    topology = Topology()
    health = Health()
    table = new_table(Config(), health)
    by_conn: dict[str, list[Batch]] = {}
    for x in client.log:
        by_conn.setdefault(x.conn.conn_id, []).extend(batches(x))
    for conn_batches in by_conn.values():  # the client's connection, then the server's, as run drains them
        server = _mirror(conn_batches[0].conn, "api")
        for b in conn_batches:
            Pipeline(table, [red, topology]).feed([b])
        for b in conn_batches:
            Pipeline(table, [red, topology]).feed([_server_batch(b, server)])
    got = collect(red, reader)
    assert {k: p.value for k, p in got[f"{G}.requests"].items()} == {("loadgen", "api", "http"): 6}
    assert set(got[f"{G}.connections"]) == {("loadgen", "api", None)}
    assert got[f"{G}.connections"][("loadgen", "api", None)].value == 3
    edges = {(e.client, e.server): e.requests for e in topology.snapshot().edges}
    assert edges == {("loadgen", "api"): 6}
    red.close()


def test_an_end_whose_far_end_never_comes_is_counted_by_address_after_the_grace() -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from pipeline.service_graph import ServiceGraphMetrics

    now = [100.0]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    graph = ServiceGraphMetrics(provider.get_meter("t"), grace_s=5.0, clock=lambda: now[0])
    far = ConnInfo("n1/2/5/9", API_OUT, Endpoint("10.9.9.9", 443), Role.CLIENT, process="api", node="n1")
    graph.export([rec(API_C, "mysql", 0.002), rec(far, "http", 0.01)])

    def requests() -> dict[tuple[Any, ...], int]:
        data = reader.get_metrics_data()
        ms = [
            m for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics
        ]
        return {
            (p.attributes["client"], p.attributes["server"]): p.value
            for m in ms if m.name == f"{G}.requests" for p in m.data.data_points
        }  # fmt: skip

    # Another host's address cannot be traced here: counted at once. Loopback waits for its far end.
    assert requests() == {("api", "10.9.9.9:443"): 1}
    now[0] += 4.9
    graph.export([])
    assert ("api", "127.0.0.1:3306") not in requests()
    now[0] += 0.2
    graph.export([])
    assert requests() == {("api", "10.9.9.9:443"): 1, ("api", "127.0.0.1:3306"): 1}
    graph.export([rec(API_C, "mysql", 0.002)])
    graph.flush()  # at close nothing waits any more
    assert requests()[("api", "127.0.0.1:3306")] == 2
    provider.shutdown()


def test_an_untraced_client_is_one_edge_however_many_ephemeral_ports_it_uses() -> None:
    """Naming an untraced client ip:port made one edge (one series) per connection: the graph filled
    its 1024 edges with l7scope's own OTLP/HTTP exports in minutes."""
    from l7scope.config import Config
    from pipeline.pipeline import Pipeline
    from pipeline.run import new_table
    from pipeline.topology import Topology
    from tests.support.http_traffic import Client, HttpTarget, batches

    with HttpTarget() as target:
        client = Client(target.port, run="eph", per_conn=2, node="n1")
        for _ in range(4):
            client.connection()
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"))
    topology = Topology()
    table = new_table(Config(), Health())
    for x in client.log:  # only the server's end is traced
        server = _mirror(x.conn, "api")
        for b in batches(x):
            Pipeline(table, [red, topology]).feed([_server_batch(b, server)])
    red._graph.flush()  # as close() does: no client end will come
    got = collect(red, reader)
    assert {k: p.value for k, p in got[f"{G}.requests"].items()} == {("127.0.0.1", "api", "http"): 8}
    assert {k: p.value for k, p in got[f"{G}.connections"].items()} == {("127.0.0.1", "api", None): 4}
    assert {(e.client, e.server): e.requests for e in topology.snapshot().edges} == {("127.0.0.1", "api"): 8}
    red.close()


def test_a_failure_only_the_client_sees_fails_the_edge_once() -> None:
    """curl got two 404s from nginx (client spans ERROR, server spans not): the graph said 0 failed,
    the map 2. As in the Collector's servicegraph connector, an exchange failed if either end did."""
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"))
    red.export([rec(CURL_C, "http", 0.01, error=True), rec(API_S, "http", 0.01)])  # a 404
    red.export([rec(CURL_C, "http", 0.01, error=True), rec(API_S, "http", 0.01, error=True)])  # a 503
    red.export([rec(CURL_C, "http", 0.01), rec(API_S, "http", 0.01)])
    got = collect(red, reader)
    edge = ("curl", "api", "http")
    assert got[f"{G}.requests"][edge].value == 3
    assert got[f"{G}.requests.failed"][edge].value == 2
    red.close()
