"""A real OTLP receiver for tests: gRPC (TraceService, MetricsService) and HTTP/protobuf on 127.0.0.1.

Every decoded export request is kept in a thread-safe list; `spans()` and `metric_points()` flatten
them into plain dicts that assertions can compare without protobuf knowledge.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.http_server import HttpServer, Reply, Request

ExportTraceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportMetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest

_SPAN_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUS = {Status.STATUS_CODE_UNSET: "UNSET", Status.STATUS_CODE_OK: "OK", Status.STATUS_CODE_ERROR: "ERROR"}


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def flatten_spans(requests: list[ExportTraceRequest]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for req in requests:
        for rs in req.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append({
                        "name": s.name,
                        "kind": _SPAN_KINDS.get(s.kind, str(s.kind)),
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "status": _STATUS.get(s.status.code, str(s.status.code)),
                        "status_message": s.status.message,
                        "attributes": attributes(s.attributes),
                        "events": [e.name for e in s.events],
                        "resource": resource,
                        "scope": ss.scope.name,
                    })  # fmt: skip
    return out


def _points(metric: Any) -> tuple[str, list[dict[str, Any]]]:
    kind = metric.WhichOneof("data") or ""
    data = getattr(metric, kind) if kind else None
    points: list[dict[str, Any]] = []
    for p in getattr(data, "data_points", ()):
        point: dict[str, Any] = {
            "attributes": attributes(p.attributes),
            "start_ns": p.start_time_unix_nano,
            "time_ns": p.time_unix_nano,
        }
        if kind in ("gauge", "sum"):
            point["value"] = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
        elif kind == "histogram":
            point.update(
                count=p.count, sum=p.sum, bucket_counts=list(p.bucket_counts),
                explicit_bounds=list(p.explicit_bounds),
                min=p.min if p.HasField("min") else None, max=p.max if p.HasField("max") else None,
            )  # fmt: skip
        elif kind == "exponential_histogram":
            point.update(count=p.count, sum=p.sum, scale=p.scale, zero_count=p.zero_count)
        elif kind == "summary":
            point.update(count=p.count, sum=p.sum)
        points.append(point)
    return kind, points


def flatten_metrics(requests: list[ExportMetricsRequest]) -> list[dict[str, Any]]:
    """One dict per metric per export: name, kind, unit, resource, scope and its data points."""
    out: list[dict[str, Any]] = []
    for req in requests:
        for rm in req.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind, points = _points(m)
                    out.append({
                        "name": m.name, "kind": kind, "unit": m.unit, "description": m.description,
                        "resource": resource, "scope": sm.scope.name, "points": points,
                    })  # fmt: skip
    return out


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Callable[[ExportTraceRequest, str], None]) -> None:
        self._sink = sink

    def Export(self, request: ExportTraceRequest, context: grpc.ServicerContext) -> Any:
        self._sink(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: Callable[[ExportMetricsRequest, str], None]) -> None:
        self._sink = sink

    def Export(self, request: ExportMetricsRequest, context: grpc.ServicerContext) -> Any:
        self._sink(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _decode_body(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class OtlpReceiver:
    """Collects OTLP exports; `start()` binds both servers on 127.0.0.1, `stop()` shuts them down."""

    def __init__(self, grpc_port: int = 0, http_port: int = 0) -> None:
        """Ports 0: free ones; a given port is taken over (e.g. a collector that comes back)."""
        self._cond = threading.Condition()
        self.trace_requests: list[ExportTraceRequest] = []
        self.metric_requests: list[ExportMetricsRequest] = []
        self.transports: list[str] = []  # "grpc" or "http" per request received, in arrival order
        self.http_peers: list[int] = []  # the client port of each HTTP request: one per connection used
        self.close_after_response = False  # close each HTTP connection after its response, unannounced
        self.grpc_port = grpc_port
        self.http_port = http_port
        self._grpc: grpc.Server | None = None
        self._http: HttpServer | None = None

    # -- endpoints -------------------------------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_traces_url(self) -> str:
        return f"{self.http_endpoint}/v1/traces"

    @property
    def http_metrics_url(self) -> str:
        return f"{self.http_endpoint}/v1/metrics"

    # -- collection ------------------------------------------------------------------------------
    def _add_traces(self, req: ExportTraceRequest, transport: str) -> None:
        with self._cond:
            self.trace_requests.append(req)
            self.transports.append(transport)
            self._cond.notify_all()

    def _add_metrics(self, req: ExportMetricsRequest, transport: str) -> None:
        with self._cond:
            self.metric_requests.append(req)
            self.transports.append(transport)
            self._cond.notify_all()

    def spans(self) -> list[dict[str, Any]]:
        with self._cond:
            reqs = list(self.trace_requests)
        return flatten_spans(reqs)

    def metrics(self) -> list[dict[str, Any]]:
        with self._cond:
            reqs = list(self.metric_requests)
        return flatten_metrics(reqs)

    def metric_points(self, name: str) -> list[dict[str, Any]]:
        """Every data point received for metric `name`, each with the metric's kind and unit added."""
        return [
            {"name": m["name"], "kind": m["kind"], "unit": m["unit"], **p}
            for m in self.metrics()
            if m["name"] == name
            for p in m["points"]
        ]

    def clear(self) -> None:
        with self._cond:
            self.trace_requests.clear()
            self.metric_requests.clear()
            self.transports.clear()
            self.http_peers.clear()

    def _wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_for_spans(self, count: int = 1, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `count` spans arrived; returns them (fewer only on timeout)."""
        self._wait(lambda: sum(len(flatten_spans([r])) for r in self.trace_requests) >= count, timeout_s)
        return self.spans()

    def wait_for_metric(self, name: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Block until a data point of metric `name` arrived; returns its points ([] on timeout)."""
        self._wait(
            lambda: any(m["name"] == name and m["points"] for m in flatten_metrics(self.metric_requests)),
            timeout_s,
        )
        return self.metric_points(name)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._add_traces), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self._add_metrics), server
        )
        self.grpc_port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        server.start()
        self._grpc = server

        self._http = HttpServer(self._on_http, self.http_port).start()
        self.http_port = self._http.port
        return self

    def _on_http(self, request: Request) -> Reply:
        """OTLP/HTTP: protobuf bodies (gzip or deflate too) on /v1/traces and /v1/metrics."""
        self.http_peers.append(request.client_port)
        text, close = (("Content-Type", "text/plain"),), self.close_after_response
        try:
            body = _decode_body(request.body, (request.headers.get("Content-Encoding") or "").lower())
            if request.path == "/v1/traces":
                req = ExportTraceRequest.FromString(body)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self._add_traces(req, "http")
            elif request.path == "/v1/metrics":
                mreq = ExportMetricsRequest.FromString(body)
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self._add_metrics(mreq, "http")
            else:
                return Reply(404, b"not found", text, close=close)
        except Exception as exc:  # a malformed body is the client's error, not the receiver's
            return Reply(400, str(exc).encode(), text, close=close)
        return Reply(200, reply, (("Content-Type", "application/x-protobuf"),), close=close)

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=1).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a receiver in its own process, for benchmarks -------------------------------------------------

_TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


def _serve_raw(pipe: Any, stamp: bool) -> None:
    """Child process: acknowledge every export; with `stamp`, decode spans for (arrival, end) times."""
    lock = threading.Lock()
    stats = {"trace_requests": 0, "trace_bytes": 0, "metric_requests": 0}
    stamps: list[tuple[int, int]] = []

    def traces(body: bytes, context: grpc.ServicerContext) -> bytes:
        now = time.time_ns()  # spans carry Unix epoch times
        ends = []
        if stamp:
            req = ExportTraceRequest.FromString(body)
            ends = [
                s.end_time_unix_nano for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]
        with lock:
            stats["trace_requests"] += 1
            stats["trace_bytes"] += len(body)
            stamps.extend((now, end) for end in ends)
        return b""  # an empty ExportTraceServiceResponse

    def metrics(body: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            stats["metric_requests"] += 1
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = [
        grpc.method_handlers_generic_handler(service, {"Export": grpc.unary_unary_rpc_method_handler(fn)})
        for service, fn in ((_TRACE_SERVICE, traces), (_METRICS_SERVICE, metrics))
    ]  # no (de)serializers: bodies stay bytes
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    pipe.send(port)
    while (command := pipe.recv()) != "stop":
        with lock:
            pipe.send(len(stamps) if command == "stamped" else dict(stats))
    server.stop(grace=1).wait(5)
    with lock:
        pipe.send((dict(stats), stamps))


class RawOtlpReceiver:
    """OTLP/gRPC traces and metrics acknowledged by a separate process, without decoding by default.

    For throughput benchmarks: the receiver's work must not land in the measured process (one GIL),
    and decoding every request would compete for the CPU. `stamp=True` decodes spans and keeps
    (arrival epoch ns, span end ns) pairs, for latency.
    """

    def __init__(self, stamp: bool = False) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_raw, args=(child, stamp), daemon=True)
        self.grpc_port = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 30.0) -> RawOtlpReceiver:
        self._proc.start()
        if not self._pipe.poll(timeout_s):
            self._proc.kill()
            raise TimeoutError("raw OTLP receiver did not start")
        self.grpc_port = int(self._pipe.recv())
        return self

    def stats(self) -> dict[str, int]:
        """Requests (and bytes) received so far."""
        self._pipe.send("stats")
        return dict(self._pipe.recv())

    def stamped(self) -> int:
        """Spans decoded so far (stamp=True)."""
        self._pipe.send("stamped")
        return int(self._pipe.recv())

    def stop(self) -> tuple[dict[str, int], list[tuple[int, int]]]:
        """Stops the process; returns the final stats and the (arrival ns, end ns) pairs."""
        self._pipe.send("stop")
        result = self._pipe.recv() if self._pipe.poll(15) else ({}, [])
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        return result

    def __enter__(self) -> RawOtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc.is_alive():
            self.stop()
