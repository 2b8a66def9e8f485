"""The RED histograms l7scope aggregates itself export the points the OpenTelemetry SDK exported for the
same records: names, units, descriptions, attributes, Resources per service, bucket counts, sums (to the
bit), counts, min/max and exemplars, over several collections, cumulative and delta, one or two readers.

`SdkReference` is the previous per-exchange path (one `Histogram.record()` per histogram and exchange,
an exemplar context holding the record's span), kept here only as the reference."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
    MetricsData,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pipeline.health import Health
from pipeline.otlp import span_ids
from pipeline.red_aggregate import CARDINALITY_LIMIT
from pipeline.red_metrics import (
    DURATION_METRICS,
    INSTRUMENTS,
    OVERFLOW_SERVICE,
    SCOPE,
    VERSION,
    RedMetrics,
    body_size_metrics,
    build_meter_provider,
    description,
    metric_attributes,
    split_by_service,
)
from protocols.base import ConnInfo, Endpoint, L7Record, Role, service_name

RED = {i.name for i in INSTRUMENTS if i.kind == "histogram" and not i.name.startswith("l7scope.")}
DELTA = {Histogram: AggregationTemporality.DELTA}


def exemplar_context(record: L7Record) -> Context:
    trace_id, span_id, _ = span_ids(record)
    span = SpanContext(
        trace_id=int.from_bytes(trace_id, "big"), span_id=int.from_bytes(span_id, "big"), is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )  # fmt: skip
    return trace.set_span_in_context(NonRecordingSpan(span))


class SdkReference:
    """The SDK path as it was: per exchange, `record()` on the duration and body-size histograms."""

    def __init__(self, provider: MeterProvider, exemplars: bool = True, max_services: int = 256) -> None:
        self.meter = provider.get_meter(SCOPE, VERSION)
        self.exemplars, self.max_services = exemplars, max_services
        self.histograms: dict[str, Any] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}

    def service(self, conn: ConnInfo) -> dict[str, Any]:
        key = (service_name(conn), conn.node)
        attrs = self.services.get(key)
        if attrs is None:
            if len(self.services) >= self.max_services:
                return {"service.name": OVERFLOW_SERVICE, "host.name": conn.node or "unknown"}
            attrs = self.services[key] = {"service.name": key[0], "host.name": conn.node or "unknown"}
        return attrs

    def histogram(self, name: str, unit: str) -> Any:
        if name not in self.histograms:
            self.histograms[name] = self.meter.create_histogram(name, unit, description(name))
        return self.histograms[name]

    def export(self, records: list[L7Record]) -> None:
        for r in records:
            attrs = self.service(r.conn) | metric_attributes(r)
            ctx = exemplar_context(r) if self.exemplars else None
            self.histogram(r.metric, "s").record(r.duration_s, attrs, context=ctx)
            for key, name in body_size_metrics(r.metric):
                size = r.attributes.get(key)
                if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                    self.histogram(name, "By").record(size, attrs)


# -- records -----------------------------------------------------------------------------------------

HTTP_KEYS = ("http.request.method", "http.response.status_code", "network.protocol.version", "url.scheme")
RPC_KEYS = ("rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code")
DB_KEYS = ("db.system.name", "db.operation.name", "db.namespace")
# durations on and around bucket bounds, zero, negative (end before start) and past the last bound
EDGES_NS = (0, -5, 1_000_000, 5_000_000, 5_000_001, 100_000_000, 10_000_000_000, 12_345_678_901)


def conn(rng: random.Random, role: Role) -> ConnInfo:
    n = rng.randrange(6)
    return ConnInfo(
        f"n{n % 2}/{n}/3/1", Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 50000 + n), role,
        pid=100 + n, process=("nginx", "api", "worker", "db-proxy", "cron", "")[n],
        node=("n1", "n2", "")[n % 3],
        service="frontend" if n == 4 else "", k8s_container="box" if n == 5 else "",
    )  # fmt: skip


def body_size(rng: random.Random) -> Any:
    return rng.choice((0, 1, 64, 65, 300, 4096, 70_000, 20_000_000, -1, True, "12", None))


def record(rng: random.Random, i: int) -> L7Record:
    kind = rng.choice(("http", "grpc", "mysql"))
    role = rng.choice((Role.SERVER, Role.CLIENT))
    side = "server" if role == Role.SERVER else "client"
    error: str | None = None
    if kind == "http":
        status = rng.choice((200, 200, 201, 404, 500, 503))
        attrs: dict[str, Any] = {
            "http.request.method": rng.choice(("GET", "POST", "_OTHER")), "url.scheme": "http",
            "http.response.status_code": status, "network.protocol.version": rng.choice(("1.1", "2")),
            "url.path": f"/u/{i}",
        }  # fmt: skip
        keys: tuple[str, ...] = HTTP_KEYS if rng.random() > 0.1 else HTTP_KEYS[:2]
        metric = f"http.{side}.request.duration"
        error = str(status) if status >= 500 or (status >= 400 and side == "client") else None
    elif kind == "grpc":
        code = rng.choice((0, 0, 2, 14))
        attrs = {"rpc.system": "grpc", "rpc.service": "demo.Greeter", "rpc.method": rng.choice(("A", "B"))}
        if rng.random() > 0.2:
            attrs["rpc.grpc.status_code"] = code
        keys, metric = RPC_KEYS, f"rpc.{side}.call.duration"
        error = str(code) if code else None
    else:
        attrs = {"db.system.name": "mysql", "db.operation.name": rng.choice(("SELECT", "INSERT")), "x": i}
        keys, metric = DB_KEYS, "db.client.operation.duration"
        error = rng.choice((None, None, "1062"))
    for size_key in ("http.request.body.size", "http.response.body.size", "rpc.request.body.size"):
        if rng.random() > 0.3:
            attrs[size_key] = body_size(rng)
    start = 1_700_000_000_000_000_000 + i * 1000
    length = rng.choice(EDGES_NS) if rng.random() < 0.2 else int(rng.lognormvariate(16, 2.5))
    return L7Record(
        protocol=kind, role=role, name="n", start_ns=start, end_ns=start + length, conn=conn(rng, role),
        metric=metric, error_type=error, attributes=attrs, metric_attributes=keys,
        truncated=rng.random() < 0.05, record_id=f"c{i % 97}/{i}",
        trace_id=f"{rng.getrandbits(128):032x}" if rng.random() < 0.5 else "",
    )  # fmt: skip


def records(n: int, seed: int = 7) -> list[L7Record]:
    rng = random.Random(seed)
    return [record(rng, i) for i in range(n)]


# -- comparison ------------------------------------------------------------------------------------


def exact(x: Any) -> tuple[str, str]:
    return type(x).__name__, repr(x)  # floats to the bit, ints as ints


def flatten(data: MetricsData | None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The RED points by (Resource, scope, metric, attributes), after the OTLP split by service."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    if data is None:  # the SDK's collection when no instrument has a point
        return out
    for rm in split_by_service(data).resource_metrics:
        resource = tuple(sorted(rm.resource.attributes.items()))
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name not in RED:
                    continue
                for p in m.data.data_points:
                    key = (
                        resource,
                        sm.scope.name,
                        sm.scope.version,
                        m.name,
                        tuple(sorted(p.attributes.items())),
                    )
                    assert key not in out, key
                    assert p.start_time_unix_nano <= p.time_unix_nano
                    out[key] = {
                        "metric": (m.unit, m.description, type(m.data).__name__,
                                   m.data.aggregation_temporality),
                        "attributes": list(p.attributes.items()),  # order too
                        "count": p.count, "sum": exact(p.sum), "min": exact(p.min), "max": exact(p.max),
                        "buckets": tuple(p.bucket_counts), "bounds": tuple(p.explicit_bounds),
                        "exemplars": [
                            (e.filtered_attributes, exact(e.value), e.span_id, e.trace_id)
                            for e in p.exemplars
                        ],
                    }  # fmt: skip
    return out


def assert_same(ours: MetricsData | None, sdk: MetricsData | None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Both collections' RED points, which must be the same; returns them."""
    a, b = flatten(ours), flatten(sdk)
    assert sorted(a) == sorted(b)
    for key in b:
        assert a[key] == b[key], key
    return b


class Paths:
    """RedMetrics and the SDK reference, each on its own provider with the same kind of readers."""

    def __init__(
        self, temporalities: list[dict[type, AggregationTemporality] | None], exemplars: bool = True
    ):
        self.ours = [InMemoryMetricReader(preferred_temporality=t) for t in temporalities]
        self.sdk = [InMemoryMetricReader(preferred_temporality=t) for t in temporalities]
        self.red = RedMetrics(
            build_meter_provider(list[MetricReader](self.ours), exemplars=exemplars),
            Health(),
            exemplars=exemplars,
        )
        self.reference = SdkReference(
            build_meter_provider(list[MetricReader](self.sdk), exemplars=exemplars), exemplars
        )

    def export(self, batch: list[L7Record]) -> None:
        self.red.export(batch)
        self.reference.export(batch)

    def compare(self, reader: int) -> dict[tuple[Any, ...], dict[str, Any]]:
        return assert_same(self.ours[reader].get_metrics_data(), self.sdk[reader].get_metrics_data())


def batches(items: list[L7Record], size: int) -> Iterator[list[L7Record]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("temporality", [None, DELTA], ids=["cumulative", "delta"])
def test_same_points_as_the_sdk_over_several_collections(temporality: Any) -> None:
    paths = Paths([temporality])
    compared: list[dict[tuple[Any, ...], dict[str, Any]]] = []
    for n, batch in enumerate(batches(records(3000), 500)):
        paths.export(batch)
        if n % 2:  # collect after every other batch: folds across collections and empty intervals
            compared.append(paths.compare(0))
    paths.export(records(200, seed=8)[:100])
    compared.append(paths.compare(0))
    compared.append(paths.compare(0))  # nothing new: cumulative points again, no delta points
    assert len(compared[-1]) == (len(compared[-2]) if temporality is None else 0)
    # every kind of histogram took part, for several services, with errors, exemplars, min and max
    points = compared[0]
    assert len(points) > 100
    names = {key[3] for key in points}
    assert {*DURATION_METRICS, "http.server.request.body.size", "http.client.response.body.size"} <= names
    assert len({dict(key[0])["service.name"] for key in points}) >= 5
    assert any(("error.type", "503") in key[-1] for key in points)
    assert sum(len(p["exemplars"]) for p in points.values()) > 100


def test_same_points_with_two_readers_cumulative_and_delta_collected_at_different_times() -> None:
    paths = Paths([None, DELTA])
    for n, batch in enumerate(batches(records(2000, seed=3), 250)):
        paths.export(batch)
        assert paths.compare(n % 2)  # each reader its own intervals, sums and exemplars
    assert len(paths.compare(0)) > 100 and len(paths.compare(1)) == 0  # delta: none since its last


def test_same_points_without_exemplars() -> None:
    paths = Paths([None], exemplars=False)
    paths.export(records(1000, seed=5))
    points = paths.compare(0)
    assert len(points) > 100 and all(p["exemplars"] == [] for p in points.values())


def test_exemplars_are_the_last_record_per_bucket_with_its_span_ids() -> None:
    paths = Paths([None])
    batch = records(1500, seed=11)
    paths.export(batch)
    paths.compare(0)
    data = flatten(paths.ours[0].get_metrics_data())
    assert sum(len(p["exemplars"]) for p in data.values()) == 0  # taken by the first collection
    paths.export(batch[:1])
    (point,) = [p for p in flatten(paths.ours[0].get_metrics_data()).values() if p["exemplars"]]
    trace_id, span_id, _ = span_ids(batch[0])
    ((_, _, span, trace_),) = point["exemplars"]
    assert (span, trace_) == (int.from_bytes(span_id, "big"), int.from_bytes(trace_id, "big"))


def test_overflow_series_past_the_cardinality_limit_and_services_past_the_cap() -> None:
    """Past CARDINALITY_LIMIT attribute sets a histogram gets one `otel.metric.overflow` series (whose
    exemplars keep the attributes), as in the SDK; past `max_services`, the overflow service."""
    base = records(1, seed=1)[0]
    many = [
        dataclasses.replace(
            base, metric="db.client.operation.duration",
            attributes={"db.namespace": f"n{i}", "db.system.name": "m"},
            metric_attributes=DB_KEYS, record_id=f"o/{i}", start_ns=0, end_ns=i * 1000,
            conn=dataclasses.replace(base.conn, process=f"p{i % 300}", service="", k8s_container=""),
        )
        for i in range(CARDINALITY_LIMIT + 150)
    ]  # fmt: skip
    ours = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([ours]), Health(), max_services=256)
    sdk = InMemoryMetricReader()
    reference = SdkReference(build_meter_provider([sdk]), max_services=256)
    red.export(many)
    reference.export(many)
    points = assert_same(ours.get_metrics_data(), sdk.get_metrics_data())
    assert len(points) == CARDINALITY_LIMIT + 1
    (overflow,) = [p for key, p in points.items() if ("otel.metric.overflow", True) in key[-1]]
    assert overflow["count"] == 150 and overflow["exemplars"][0][0]["db.namespace"] == f"n{len(many) - 1}"
    assert any(dict(key[0]).get("service.name") == OVERFLOW_SERVICE for key in points)
