"""Records -> RED metrics (duration and body-size histograms) and pipeline health, via the OpenTelemetry SDK.

The histograms are aggregated in `pipeline.red_aggregate` (a few dict and list operations per
exchange instead of SDK calls) and added to each reader's collection by the callback `RedMetrics`
gives it; the SDK's instruments keep the health counters, the consumer lag and the service graph.

Per-service identity: one MeterProvider for the whole pipeline; while recording, `service.name` and
`host.name` ride on each point, and `split_by_service` moves them onto one Resource per service just
before OTLP export (where the semantic conventions put them), while Prometheus, where one target
exposes many services, keeps them as `service_name`/`host_name` labels. One provider means the SDK's
own readers unchanged (PeriodicExportingMetricReader, PrometheusMetricReader), one export thread and
one request per interval however many services there are; the number of services is bounded.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    TraceBasedExemplarFilter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pipeline.conn_table import ConnActivity
from pipeline.exporter import BoundedExporter
from pipeline.otlp import OtlpEndpoint
from pipeline.red_aggregate import RedAggregator
from pipeline.service_graph import GRACE_S, SERVICE_GRAPH_INSTRUMENTS, ServiceGraphMetrics
from probes.health import Health
from protocols.base import AttrValue, ConnInfo, L7Record, service_name

if TYPE_CHECKING:
    from pipeline.prometheus import Page

log = logging.getLogger("l7scope.metrics")

SCOPE, VERSION = "l7scope", "0.1.0"
# The semantic conventions' advice for HTTP and RPC duration histograms (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Their advice for db.client.operation.duration: database calls are faster, so it starts at 1 ms.
DB_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
DURATION_METRICS = (
    "http.server.request.duration",
    "http.client.request.duration",
    "rpc.server.call.duration",
    "rpc.client.call.duration",
    "db.client.operation.duration",
)
# The conventions give no advice for body sizes: powers of four from 0 B to 16 MiB.
SIZE_BUCKETS = (
    0.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
)
BODY_SIZES = ("request.body.size", "response.body.size")
# HELP text (Prometheus) and description (OTLP): promtool flags a metric without one.
_WHAT = {"http": "HTTP", "rpc": "RPC", "db": "database"}


def description(metric: str) -> str:
    """`http.server.request.duration` -> 'Duration of HTTP server requests.', and the like."""
    namespace, side, *_ = metric.split(".")
    what = f"{_WHAT.get(namespace, namespace)} {side}"
    if metric.endswith(".body.size"):
        return f"Size of {what} {metric.split('.')[-3]} bodies."
    unit = {"http": "requests", "rpc": "calls", "db": "operations"}.get(namespace, "exchanges")
    return f"Duration of {what} {unit}."


RESOURCE_KEYS = ("service.name", "host.name")  # carried on points, moved onto Resources for OTLP
OVERFLOW_SERVICE = "l7scope.overflow"  # services past `max_services` share this name

Temporality = dict[type, AggregationTemporality]
CUMULATIVE: Temporality = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge,
    )
}  # fmt: skip


def duration_buckets(metric: str) -> tuple[float, ...]:
    """The conventions' bucket advice for a duration histogram (database operations have their own)."""
    return DB_DURATION_BUCKETS if metric.startswith("db.") else DURATION_BUCKETS


def views() -> list[View]:
    """Each duration histogram in seconds gets its conventions' buckets; `*.body.size` in bytes, ours."""
    # One View per name: an instrument two Views match would be exported twice.
    durations = [i.name for i in INSTRUMENTS if i.kind == "histogram" and i.unit == "s"]
    return [
        *(
            View(
                instrument_type=Histogram, instrument_name=name, instrument_unit="s",
                aggregation=ExplicitBucketHistogramAggregation(duration_buckets(name)),
            )
            for name in durations
        ),
        View(
            instrument_type=Histogram, instrument_name="*.body.size", instrument_unit="By",
            aggregation=ExplicitBucketHistogramAggregation(SIZE_BUCKETS),
        ),
    ]  # fmt: skip


def build_meter_provider(
    readers: Sequence[MetricReader], node: str = "", exemplars: bool = True
) -> MeterProvider:
    """The pipeline's MeterProvider: its own Resource is l7scope's (health metrics stay on it)."""
    resource = Resource.create({"service.name": "l7scope", "host.name": node or socket.gethostname()})
    return MeterProvider(
        metric_readers=list(readers), resource=resource, views=views(),
        exemplar_filter=TraceBasedExemplarFilter() if exemplars else AlwaysOffExemplarFilter(),
    )  # fmt: skip


# -- per record ------------------------------------------------------------------------------------


def metric_attributes(record: L7Record) -> dict[str, AttrValue]:
    """The record's low-cardinality keys, plus `error.type` when it failed."""
    attrs = {k: record.attributes[k] for k in record.metric_attributes if k in record.attributes}
    if record.error_type is not None:
        attrs["error.type"] = record.error_type
    return attrs


def body_size_metrics(metric: str) -> tuple[tuple[str, str], ...]:
    """(attribute key, metric name) pairs for a request-duration metric: `http.server.request.body.size`."""
    if not metric.endswith(".request.duration"):
        return ()
    namespace, prefix = metric.split(".", 1)[0], metric.removesuffix(".request.duration")
    return tuple((f"{namespace}.{size}", f"{prefix}.{size}") for size in BODY_SIZES)


# -- health -> observations ------------------------------------------------------------------------

Snapshot = Mapping[tuple[str, str, str], int]
Observed = list[tuple[int, dict[str, str]]]


def _attrs(**kv: str) -> dict[str, str]:
    return {k.replace("_", "."): v for k, v in kv.items() if v}


def dropped(snapshot: Snapshot) -> Observed:
    """Events the kernel ring had no room for, and batches dropped on the way (queue full, Kafka down)."""
    out: Observed = []
    for (name, label, reason), value in snapshot.items():
        if name == "capture_lost_events":
            out.append((value, _attrs(l7scope_stage=label or "kernel", reason=reason)))
        elif name == "dropped_batches":
            out.append((value, _attrs(l7scope_stage=label, reason=reason)))
    return out


def by_protocol(counter: str) -> Callable[[Snapshot], Observed]:
    def pick(snapshot: Snapshot) -> Observed:
        return [
            (v, _attrs(protocol=label, reason=r)) for (n, label, r), v in snapshot.items() if n == counter
        ]

    return pick


def by_stage(counter: str) -> Callable[[Snapshot], Observed]:
    def pick(snapshot: Snapshot) -> Observed:
        return [
            (v, _attrs(l7scope_stage=label, reason=r))
            for (n, label, r), v in snapshot.items()
            if n == counter
        ]

    return pick


def truncated(snapshot: Snapshot) -> Observed:
    """Kernel events cut at the copy limit, and exchanges the parsers marked truncated."""
    out: Observed = []
    for (name, label, reason), value in snapshot.items():
        if name == "capture_truncated":
            out.append((value, _attrs(l7scope_stage=label or "kernel", reason=reason)))
        elif name == "truncated_exchanges":
            out.append((value, _attrs(protocol=label, reason=reason)))
    return out


def by_link(counter: str) -> Callable[[Snapshot], Observed]:
    """Call-chain links, labelled with how the parent was found (pipeline/call_chains.py)."""

    def pick(snapshot: Snapshot) -> Observed:
        return [(v, _attrs(l7scope_link=label)) for (n, label, _), v in snapshot.items() if n == counter]

    return pick


def by_reason(counter: str) -> Callable[[Snapshot], Observed]:
    """A counter whose label is itself the reason (e.g. evicted_connections: count, memory)."""

    def pick(snapshot: Snapshot) -> Observed:
        return [(v, _attrs(reason=r or label)) for (n, label, r), v in snapshot.items() if n == counter]

    return pick


def by_alert_rule(counter: str) -> Callable[[Snapshot], Observed]:
    """A counter labelled with the alert rule it concerns (e.g. alert_records_late)."""

    def pick(snapshot: Snapshot) -> Observed:
        return [
            (v, _attrs(l7scope_alert=label, reason=r))
            for (n, label, r), v in snapshot.items()
            if n == counter
        ]

    return pick


# Loss counters of exporters, and the exporter each names (their label, else the one given here).
_EXPORT_FAILED = {"export_failed": "", "alerts_failed": "alertmanager"}
_EXPORT_DROPPED = {"export_dropped": "", "dropped_records": "records_topic", "dropped_alerts": "alerts_topic"}


def by_exporter(counters: Mapping[str, str]) -> Callable[[Snapshot], Observed]:
    """Export losses, labelled with the exporter (`otlp_spans`, `otlp_metrics`, ...) and the reason."""

    def pick(snapshot: Snapshot) -> Observed:
        return [
            (v, _attrs(l7scope_exporter=counters[n] or label, reason=r))
            for (n, label, r), v in snapshot.items()
            if n in counters
        ]

    return pick


HEALTH_COUNTERS: tuple[tuple[str, str, str, Callable[[Snapshot], Observed]], ...] = (
    ("l7scope.capture.dropped", "{item}", "events lost in the kernel ring and batches dropped", dropped),
    ("l7scope.capture.truncated", "{item}", "payloads only partly captured", truncated),
    (
        "l7scope.exchanges.degraded",
        "{exchange}",
        "exchanges parsed without full state",
        by_protocol("degraded_exchanges"),
    ),
    ("l7scope.parse.errors", "{error}", "bytes no parser could read", by_protocol("parse_errors")),
    ("l7scope.gaps", "{gap}", "holes in a captured byte stream", by_protocol("gaps")),
    (
        "l7scope.capture.file_errors",
        "{error}",
        "capture files read only in part (replay): damaged, or with an unsupported link type",
        by_stage("capture_file_errors"),
    ),
    (
        "l7scope.parser.stuck",
        "{connection}",
        "connections dropped because their parser made no progress",
        by_protocol("parser_stuck"),
    ),
    (
        "l7scope.frames.unmatched",
        "{frame}",
        "requests without a response, or responses without a request",
        by_protocol("unmatched_frames"),
    ),
    (
        "l7scope.connections.evicted",
        "{connection}",
        "connections whose state was dropped to stay within bounds",
        by_reason("evicted_connections"),
    ),
    (
        "l7scope.export.failed",
        "{item}",
        "records, spans or metric exports the destination did not accept",
        by_exporter(_EXPORT_FAILED),
    ),
    (
        "l7scope.export.dropped",
        "{item}",
        "records or spans an exporter dropped before sending (queue full, still queued at exit)",
        by_exporter(_EXPORT_DROPPED),
    ),
    (
        "l7scope.chains.links",
        "{span}",
        "spans given a parent by l7scope.link (header, connection, thread)",
        by_link("chain_links"),
    ),
    (
        "l7scope.chains.unlinked",
        "{span}",
        "spans left without a parent they may have (multiplexed threads, window, pressure): by reason",
        by_reason("chain_unlinked"),
    ),
    (
        "l7scope.alerts.late_records",
        "{record}",
        "records older than the watermark minus an alert rule's window: in none of its windows",
        by_alert_rule("alert_records_late"),
    ),
)


class Instrument(NamedTuple):
    name: str
    kind: str  # "histogram", "counter" or "gauge"
    unit: str


# Every instrument RedMetrics creates: the Grafana dashboard test checks its queries against these.
INSTRUMENTS: tuple[Instrument, ...] = (
    *(Instrument(m, "histogram", "s") for m in DURATION_METRICS),
    *(Instrument(n, "histogram", "By") for m in DURATION_METRICS for _, n in body_size_metrics(m)),
    *(Instrument(name, "counter", unit) for name, unit, _, _ in HEALTH_COUNTERS),
    Instrument("l7scope.consumer.lag", "gauge", "{message}"),
    *(Instrument(name, kind, unit) for name, kind, unit, _ in SERVICE_GRAPH_INSTRUMENTS),
)


# -- the exporter ----------------------------------------------------------------------------------


@dataclass
class RedMetrics(BoundedExporter):
    """The records exporter that feeds the histograms; readers on `provider` decide where they go."""

    provider: MeterProvider
    health: Health | None = None
    exemplars: bool = True
    max_services: int = 256
    max_edges: int = 1024  # service graph edges; the rest share one overflow edge
    otlp_exporters: Sequence[ByServiceExporter] = ()  # the readers' OTLP exporters (their last export)
    graph_grace_s: float = GRACE_S  # how long a connection end waits for its far end (service graph)

    def __post_init__(self) -> None:
        self._meter = self.provider.get_meter(SCOPE, VERSION)
        self._graph = ServiceGraphMetrics(
            self._meter, self.health, max_edges=self.max_edges, grace_s=self.graph_grace_s
        )
        self._services: dict[tuple[str, str], tuple[str, str]] = {}  # (service, node) -> resource keys
        readers: Sequence[MetricReader] = self.provider._metric_readers  # the SDK keeps no public list
        self._red = RedAggregator(
            len(readers), self._service, metric_attributes, duration_buckets, body_size_metrics, description,
            size_buckets=SIZE_BUCKETS, exemplars=self.exemplars,
        )  # fmt: skip
        for i, reader in enumerate(readers):
            reader._set_collect_callback(self._collector(reader, i))  # type: ignore[arg-type]
        self._lag: dict[tuple[str, int], int] = {}
        self._flags = Health()  # truncated/degraded records, observed beside the pipeline's own counters
        for name, unit, text, pick in HEALTH_COUNTERS:
            self._meter.create_observable_counter(name, [self._observe(pick)], unit, text)
        self._meter.create_observable_gauge(
            "l7scope.consumer.lag",
            [self._observe_lag],
            "{message}",
            "records behind the log end, per partition",
        )

    def _service(self, conn: ConnInfo) -> tuple[str, str]:
        """(service.name, host.name) of a connection's end; past `max_services`, the overflow service."""
        key = (service_name(conn), conn.node)
        found = self._services.get(key)
        if found is None:
            if len(self._services) >= self.max_services:  # bounded: short-lived processes must not grow it
                if self.health is not None:
                    self.health.count("metrics_services_overflow", "metrics")
                return OVERFLOW_SERVICE, conn.node or "unknown"
            found = self._services[key] = (key[0], conn.node or "unknown")
        return found

    def _collector(self, reader: MetricReader, index: int) -> Callable[..., MetricsData | None]:
        """The reader's collect callback: the SDK's collection, and the RED histograms in l7scope's scope."""
        sdk_collect: Any = reader._collect  # the MeterProvider's (its annotation in the SDK is not right)
        assert sdk_collect is not None
        temporality = next(
            t for k, t in reader._instrument_class_temporality.items() if issubclass(k, Histogram)
        )

        def collect(reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
            data = sdk_collect(reader, timeout_millis=timeout_millis)
            resource = self.provider._sdk_config.resource  # as the SDK's collection has it (forks update it)
            return merge(data, resource, SCOPE_ID, self._red.collect(index, temporality))

        return collect

    def _observe(
        self, pick: Callable[[Snapshot], Observed]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            snapshot = self._flags.snapshot() | (self.health.snapshot() if self.health is not None else {})
            return [Observation(v, a) for v, a in pick(snapshot)]

        return callback

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(v, {"messaging.destination.name": t, "messaging.destination.partition.id": str(p)})
            for (t, p), v in list(self._lag.items())
        ]

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """The hook a Kafka source calls after a poll: messages between its position and the log end."""
        self._lag[(topic, partition)] = lag

    def export(self, records: list[L7Record]) -> None:
        self._red.add(records)
        for r in records:
            if r.truncated:
                self._flags.count("truncated_exchanges", r.protocol, reason="record")
            if r.degraded:
                self._flags.count("degraded_exchanges", r.protocol, reason="record")
        self._graph.export(records)

    def export_activity(self, activity: list[ConnActivity]) -> None:
        """Connections (parsed or not) for the service graph's bytes and connection counters."""
        self._graph.export_activity(activity)

    def close(self) -> None:
        self.close_within(10.0)

    def close_within(self, timeout_s: float) -> None:
        """Readers flush (a last OTLP export) and stop (the Prometheus endpoint closes), within
        `timeout_s`: a last export still waiting on the collector then is counted as failed."""
        self._graph.flush()  # ends still waiting for their far end are counted before the last export
        try:
            self.provider.shutdown(timeout_millis=max(1.0, timeout_s * 1000))
        except Exception as e:  # a reader that ran out of time (the SDK raises): the exit goes on
            log.warning("metrics: not every reader shut down in %.1f s: %s", timeout_s, e)
        for exporter in self.otlp_exporters:
            exporter.abandon()


# -- collection -------------------------------------------------------------------------------------

SCOPE_ID = InstrumentationScope(SCOPE, VERSION)  # the scope `provider.get_meter(SCOPE, VERSION)` has


def merge(
    data: MetricsData | None, resource: Resource, scope: InstrumentationScope, metrics: list[Metric]
) -> MetricsData | None:
    """`metrics` added to `scope` in the SDK's collection `data` (one ResourceMetrics: the provider's)."""
    if not metrics:
        return data
    if data is None or not data.resource_metrics:
        own = ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or "")
        return MetricsData(
            [ResourceMetrics(resource=resource, scope_metrics=[own], schema_url=resource.schema_url)]
        )
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    at = next((i for i, sm in enumerate(scopes) if sm.scope == scope), None)
    if at is None:
        scopes.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or ""))
    else:
        scopes[at] = dataclasses.replace(scopes[at], metrics=[*scopes[at].metrics, *metrics])
    return MetricsData([dataclasses.replace(first, scope_metrics=scopes), *rest])


# -- OTLP -------------------------------------------------------------------------------------------


def split_by_service(data: MetricsData) -> MetricsData:
    """Moves RESOURCE_KEYS from points onto one Resource per service; points without them keep theirs."""
    resources: dict[tuple[tuple[str, Any], ...], dict[Any, dict[Any, list[Any]]]] = {}
    schema: dict[Any, str] = {}
    for rm in data.resource_metrics:
        base = dict(rm.resource.attributes)
        for sm in rm.scope_metrics:
            schema[sm.scope] = sm.schema_url
            for m in sm.metrics:
                for p in m.data.data_points:
                    attrs = dict(p.attributes or {})
                    moved = {k: attrs.pop(k) for k in RESOURCE_KEYS if k in attrs}
                    key = tuple(sorted((base | moved).items()))
                    metric_key = (m.name, m.description, m.unit, id(m.data))
                    scopes = resources.setdefault(key, {})
                    metrics = scopes.setdefault(sm.scope, {})
                    metrics.setdefault(metric_key, [m]).append(dataclasses.replace(p, attributes=attrs))
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(dict(key)),
                scope_metrics=[
                    ScopeMetrics(
                        scope=scope,
                        metrics=[
                            Metric(
                                m.name, m.description, m.unit, dataclasses.replace(m.data, data_points=pts)
                            )
                            for m, *pts in metrics.values()
                        ],
                        schema_url=schema[scope],
                    )
                    for scope, metrics in scopes.items()
                ],
                schema_url="",
            )
            for key, scopes in resources.items()
        ]
    )


class ByServiceExporter(MetricExporter):
    """Wraps the SDK's OTLPMetricExporter: one Resource per service, health counted per export."""

    def __init__(self, inner: MetricExporter, health: Health | None = None) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner, self.health = inner, health
        self._lock = threading.Lock()
        self._in_flight = False
        self._abandoned = False  # a stop gave up waiting: the export under way was counted then

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with self._lock:
            self._in_flight = True
        reason = "not accepted"  # the SDK exporter logs why; it returns only FAILURE
        try:
            result = self.inner.export(split_by_service(metrics_data), timeout_millis=timeout_millis)
        except Exception as e:  # a collector that is down must not stop the pipeline
            log.warning("OTLP metric export failed: %s", e)
            result, reason = MetricExportResult.FAILURE, type(e).__name__
        with self._lock:
            self._in_flight = False
            if self._abandoned:
                return result
        if self.health is not None:
            if result is MetricExportResult.SUCCESS:
                self.health.count("exported", "otlp_metrics")
            else:
                self.health.count("export_failed", "otlp_metrics", reason=reason)
        return result

    def abandon(self) -> None:
        """A stop that cannot wait longer: an export still under way is counted as failed now, once."""
        with self._lock:
            counted = self._in_flight and not self._abandoned
            self._abandoned = True
        if counted and self.health is not None:
            self.health.count("export_failed", "otlp_metrics", reason="shutdown")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


def temporality_preference(env: Mapping[str, str]) -> Temporality:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: cumulative (default), delta or lowmemory."""
    choice = env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").strip().lower()
    delta = {"delta": (Counter, Histogram, ObservableCounter), "lowmemory": (Counter, Histogram)}.get(
        choice, ()
    )
    return {k: AggregationTemporality.DELTA if k in delta else v for k, v in CUMULATIVE.items()}


def otlp_metric_exporter(endpoint: OtlpEndpoint, temporality: Temporality) -> MetricExporter:
    """The SDK's OTLPMetricExporter for the endpoint the OTEL_* variables name (gRPC or HTTP/protobuf)."""
    headers = dict(endpoint.headers)
    if endpoint.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(
            endpoint=endpoint.url, insecure=endpoint.insecure, headers=headers, timeout=endpoint.timeout_s,
            preferred_temporality=temporality,
        )  # fmt: skip
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(
        endpoint=endpoint.url, headers=headers, timeout=endpoint.timeout_s, preferred_temporality=temporality
    )


def build_metrics(
    env: Mapping[str, str],
    health: Health | None = None,
    node: str = "",
    prometheus: str = "",
    otlp: bool = True,
    pages: Mapping[str, Page] | None = None,
) -> RedMetrics | None:
    """RED metrics to OTLP (when an OTEL_EXPORTER_OTLP_*ENDPOINT is set) and/or a Prometheus endpoint
    (serving `pages` beside /metrics)."""
    readers: list[MetricReader] = []
    exporters: list[ByServiceExporter] = []
    wanted = otlp and "none" not in env.get("OTEL_METRICS_EXPORTER", "otlp").lower()
    endpoint = OtlpEndpoint.from_env(env, "metrics") if wanted else None
    if endpoint is not None:
        exporter = ByServiceExporter(otlp_metric_exporter(endpoint, temporality_preference(env)), health)
        exporters.append(exporter)
        readers.append(
            PeriodicExportingMetricReader(
                exporter,
                export_interval_millis=float(env.get("OTEL_METRIC_EXPORT_INTERVAL") or 60_000),
                export_timeout_millis=float(env.get("OTEL_METRIC_EXPORT_TIMEOUT") or 30_000),
            )
        )
        log.info("metrics: OTLP %s to %s", endpoint.protocol, endpoint.url)
    if prometheus:
        from pipeline.prometheus import PrometheusEndpoint

        readers.insert(0, PrometheusEndpoint(prometheus, pages or {}).reader)  # shuts down first: never waits
    if not readers:
        return None
    provider = build_meter_provider(readers, node=node)
    return RedMetrics(provider, health, otlp_exporters=exporters)


def build_metrics_exporter(
    config: Any, env: Mapping[str, str], health: Health, pages: Mapping[str, Page] | None = None
) -> RedMetrics | None:
    """`build_exporters`' entry: the [export] keys `prometheus` and `otlp_metrics`."""
    export = config.export
    return build_metrics(
        env, health, node=config.node, prometheus=getattr(export, "prometheus", ""),
        otlp=getattr(export, "otlp_metrics", True), pages=pages,
    )  # fmt: skip
