"""Records -> OTLP trace requests, built directly with opentelemetry-proto and sent over gRPC or HTTP.

One SDK span object per exchange tops out near 8.5k/s once encoded (PLATFORM.md); building the
ExportTraceServiceRequest from records in batches is several times faster. Endpoint, protocol,
headers and timeout follow the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsvc
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.resource.v1 import resource_pb2 as resource
from opentelemetry.proto.trace.v1 import trace_pb2 as trace

from pipeline.health import Health
from protocols.base import AttrValue, ConnInfo, L7Record, Role

log = logging.getLogger("l7scope.otlp")

SCOPE = common.InstrumentationScope(name="l7scope", version="0.1.0")
_KIND = {Role.SERVER: trace.Span.SPAN_KIND_SERVER, Role.CLIENT: trace.Span.SPAN_KIND_CLIENT}


@dataclass(frozen=True, slots=True)
class OtlpEndpoint:
    protocol: str  # "grpc" or "http/protobuf"
    url: str  # http(s)://host:port[/v1/traces]
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 10.0
    insecure: bool = True

    @staticmethod
    def from_env(env: Mapping[str, str], signal: str = "traces") -> OtlpEndpoint | None:
        """The endpoint the standard variables name, or None when none is configured."""
        sig = signal.upper()
        specific = env.get(f"OTEL_EXPORTER_OTLP_{sig}_ENDPOINT")
        generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not (specific or generic):
            return None
        protocol = env.get(f"OTEL_EXPORTER_OTLP_{sig}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        protocol = protocol or "http/protobuf"  # the specification's default
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'grpc' or 'http/protobuf'")
        url = specific or str(generic)
        if "://" not in url:
            url = "http://" + url
        if protocol == "http/protobuf" and not specific:
            url = url.rstrip("/") + f"/v1/{signal}"
        raw_headers = env.get(f"OTEL_EXPORTER_OTLP_{sig}_HEADERS") or env.get(
            "OTEL_EXPORTER_OTLP_HEADERS", ""
        )
        headers = tuple(
            (unquote(k).strip().lower(), unquote(v).strip())
            for k, _, v in (h.partition("=") for h in raw_headers.split(",") if "=" in h)
        )
        timeout = (
            env.get(f"OTEL_EXPORTER_OTLP_{sig}_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT") or "10000"
        )
        insecure_var = env.get(f"OTEL_EXPORTER_OTLP_{sig}_INSECURE") or env.get("OTEL_EXPORTER_OTLP_INSECURE")
        insecure = url.startswith("http://") or (insecure_var or "").lower() == "true"
        return OtlpEndpoint(protocol, url, headers, int(timeout) / 1000, insecure)


# -- building -------------------------------------------------------------------------------------


def any_value(v: AttrValue) -> common.AnyValue:
    if isinstance(v, bool):
        return common.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common.AnyValue(int_value=v)
    if isinstance(v, float):
        return common.AnyValue(double_value=v)
    return common.AnyValue(string_value=str(v))


def key_values(attrs: Mapping[str, AttrValue]) -> list[common.KeyValue]:
    return [common.KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def service_name(conn: ConnInfo, names: Mapping[str, str]) -> str:
    """The capture's label (config mapping, pod labels), else a pipeline-side mapping, else the process."""
    return conn.service or names.get(conn.process) or conn.process or "unknown_service"


def resource_attributes(conn: ConnInfo, names: Mapping[str, str]) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {"service.name": service_name(conn, names)}
    for key, value in (
        ("host.name", conn.node),
        ("process.pid", conn.pid),
        ("process.executable.name", conn.process),
        ("process.executable.path", conn.executable),
        ("container.id", conn.container_id),
        ("k8s.pod.name", conn.k8s_pod),
        ("k8s.namespace.name", conn.k8s_namespace),
        ("k8s.container.name", conn.k8s_container),
    ):
        if value:
            attrs[key] = value
    return attrs


def span_ids(record: L7Record) -> tuple[bytes, bytes, bytes]:
    """(trace id, span id, parent span id): deterministic, so re-processing yields the same span."""
    digest = hashlib.blake2b(record.record_id.encode(), digest_size=24).digest()
    trace_id = bytes.fromhex(record.trace_id) if record.trace_id else digest[:16]
    parent = bytes.fromhex(record.parent_span_id) if record.parent_span_id else b""
    return trace_id, digest[16:], parent


def span_attributes(record: L7Record) -> dict[str, AttrValue]:
    attrs = dict(record.attributes)
    if record.error_type is not None:
        attrs["error.type"] = record.error_type
    for flag, value in (
        ("l7scope.truncated", record.truncated),
        ("l7scope.degraded", record.degraded),
        ("l7scope.role_inferred", record.conn.role_inferred),
    ):
        if value:
            attrs[flag] = True
    return attrs


def to_span(record: L7Record) -> trace.Span:
    trace_id, span_id, parent = span_ids(record)
    status = trace.Status(code=trace.Status.STATUS_CODE_ERROR) if record.error else trace.Status()
    return trace.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=record.name,
        kind=_KIND.get(record.role, trace.Span.SPAN_KIND_INTERNAL),
        start_time_unix_nano=record.start_ns,
        end_time_unix_nano=max(record.end_ns, record.start_ns),
        attributes=key_values(span_attributes(record)),
        status=status,
    )


def build_trace_request(
    records: list[L7Record], service_names: Mapping[str, str] | None = None
) -> tsvc.ExportTraceServiceRequest:
    """One ResourceSpans per process (service); `service_names` maps process name -> service.name."""
    names = service_names or {}
    by_resource: dict[tuple[tuple[str, AttrValue], ...], list[trace.Span]] = {}
    for r in records:
        key = tuple(resource_attributes(r.conn, names).items())
        by_resource.setdefault(key, []).append(to_span(r))
    return tsvc.ExportTraceServiceRequest(
        resource_spans=[
            trace.ResourceSpans(
                resource=resource.Resource(attributes=key_values(dict(key))),
                scope_spans=[trace.ScopeSpans(scope=SCOPE, spans=spans)],
            )
            for key, spans in by_resource.items()
        ]
    )


# -- sending --------------------------------------------------------------------------------------


def send(endpoint: OtlpEndpoint, request: tsvc.ExportTraceServiceRequest, channel: object = None) -> None:
    """One export call; raises on failure (the caller counts it)."""
    if endpoint.protocol == "grpc":
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(request, timeout=endpoint.timeout_s, metadata=endpoint.headers)
        return
    body = request.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf", **dict(endpoint.headers)}
    req = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=endpoint.timeout_s) as resp:
        resp.read()


def grpc_channel(endpoint: OtlpEndpoint) -> object:
    import grpc

    target = urlparse(endpoint.url).netloc or endpoint.url
    if endpoint.insecure:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials())


@dataclass
class OtlpSpanExporter:
    """Exports records as spans from a background thread; never blocks the caller (bounded queue)."""

    endpoint: OtlpEndpoint
    health: Health
    service_names: Mapping[str, str] = field(default_factory=dict)
    max_batch: int = 2048
    max_queued: int = 256  # batches waiting; past it, batches are dropped and counted

    def __post_init__(self) -> None:
        self._queue: queue.Queue[list[L7Record] | None] = queue.Queue(self.max_queued)
        self._channel = grpc_channel(self.endpoint) if self.endpoint.protocol == "grpc" else None
        self._thread = threading.Thread(target=self._run, name="otlp-spans", daemon=True)
        self._thread.start()

    def export(self, records: list[L7Record]) -> None:
        for i in range(0, len(records), self.max_batch):
            chunk = records[i : i + self.max_batch]
            try:
                self._queue.put_nowait(chunk)
            except queue.Full:
                self.health.count("export_dropped", "otlp_spans", len(chunk), reason="queue full")

    def _run(self) -> None:
        while (records := self._queue.get()) is not None:
            try:
                send(self.endpoint, build_trace_request(records, self.service_names), self._channel)
                self.health.count("exported", "otlp_spans", len(records))
            except Exception as e:  # a collector that is down must not stop the pipeline
                self.health.count("export_failed", "otlp_spans", len(records), reason=type(e).__name__)
                log.warning("OTLP span export to %s failed: %s", self.endpoint.url, e)

    def close(self) -> None:
        """Send what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=self.endpoint.timeout_s + 5)
