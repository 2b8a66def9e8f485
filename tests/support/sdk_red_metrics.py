"""The previous RED path, per exchange through the OpenTelemetry SDK (one `Histogram.record()` per
histogram and exchange, an exemplar context holding the record's span), kept only as the reference the
own aggregation is checked against (tests/pipeline/test_red_metrics_equivalence.py) and measured against
(bench/red_metrics.py); and the varied records both feed it."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pipeline.otlp import span_ids
from pipeline.red_metrics import (
    OVERFLOW_SERVICE,
    SCOPE,
    VERSION,
    body_size_metrics,
    description,
    metric_attributes,
)
from protocols.base import ConnInfo, Endpoint, L7Record, Role, service_name


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
