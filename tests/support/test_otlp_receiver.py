"""The OTLP receiver, driven by the real OpenTelemetry SDK exporters over gRPC and HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support.otlp_receiver import OtlpReceiver

RESOURCE = Resource.create({"service.name": "l7scope-test", "k8s.namespace.name": "demo"})


def _emit_span(exporter: SpanExporter) -> tuple[str, str, str]:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("l7scope.test")
    attrs = {"http.response.status_code": 503, "ok": False}
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent,
        tracer.start_as_current_span("GET /users", kind=SpanKind.CLIENT, attributes=attrs) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "upstream"))
        child.add_event("retry")
    provider.shutdown()
    ctx, pctx = child.get_span_context(), parent.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{pctx.span_id:016x}"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_span_round_trip(otlp_receiver: OtlpReceiver, transport: str) -> None:
    exporter: SpanExporter = (
        GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=5)
        if transport == "grpc"
        else HttpSpanExporter(endpoint=otlp_receiver.http_traces_url, timeout=5)
    )
    trace_id, span_id, parent_id = _emit_span(exporter)
    spans = otlp_receiver.wait_for_spans(2, timeout_s=10)
    assert set(otlp_receiver.transports) == {transport}
    by_name = {s["name"]: s for s in spans}
    child = by_name["GET /users"]
    assert child["kind"] == "CLIENT"
    assert child["trace_id"] == trace_id
    assert child["span_id"] == span_id
    assert child["parent_span_id"] == parent_id
    assert child["status"] == "ERROR" and child["status_message"] == "upstream"
    assert child["attributes"] == {"http.response.status_code": 503, "ok": False}
    assert child["events"] == ["retry"]
    assert child["resource"]["service.name"] == "l7scope-test"
    assert child["scope"] == "l7scope.test"
    assert 0 < child["start_ns"] <= child["end_ns"]
    assert by_name["parent"]["kind"] == "SERVER" and by_name["parent"]["parent_span_id"] == ""


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_histogram_round_trip(otlp_receiver: OtlpReceiver, transport: str) -> None:
    exporter: MetricExporter = (
        GrpcMetricExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=5)
        if transport == "grpc"
        else HttpMetricExporter(endpoint=otlp_receiver.http_metrics_url, timeout=5)
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    hist = provider.get_meter("l7scope.test").create_histogram("http.server.request.duration", unit="s")
    for v in (0.003, 0.02, 0.02, 1.5):
        hist.record(v, {"http.request.method": "GET"})
    hist.record(0.5, {"http.request.method": "POST"})
    provider.shutdown()  # flushes one export
    points = otlp_receiver.wait_for_metric("http.server.request.duration", timeout_s=10)
    by_method = {p["attributes"]["http.request.method"]: p for p in points}
    get = by_method["GET"]
    assert get["kind"] == "histogram" and get["unit"] == "s"
    assert get["count"] == 4
    assert get["sum"] == pytest.approx(1.543)
    assert get["min"] == pytest.approx(0.003) and get["max"] == pytest.approx(1.5)
    assert sum(get["bucket_counts"]) == 4
    assert len(get["bucket_counts"]) == len(get["explicit_bounds"]) + 1
    assert by_method["POST"]["count"] == 1
    assert set(otlp_receiver.transports) == {transport}


def test_http_rejects_garbage_and_unknown_paths(otlp_receiver: OtlpReceiver) -> None:
    def post(url: str, body: bytes) -> int:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert post(otlp_receiver.http_traces_url, b"\xff\xff\xff") == 400
    assert post(f"{otlp_receiver.http_endpoint}/v1/nope", b"") == 404
    assert post(otlp_receiver.http_traces_url, b"") == 200  # an empty export is valid protobuf
    assert otlp_receiver.spans() == []


def test_raw_receiver_acknowledges_sdk_spans_and_stamps_them_in_another_process() -> None:
    from tests.support.otlp_receiver import RawOtlpReceiver

    receiver = RawOtlpReceiver(stamp=True).start()
    try:
        _emit_span(GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True))
        assert receiver.stamped() == 2
        assert receiver.stats()["trace_requests"] == 2  # SimpleSpanProcessor: one request per span
    finally:
        stats, stamps = receiver.stop()
    assert stats["trace_bytes"] > 0
    assert len(stamps) == 2 and all(arrival > 0 and end > 0 for arrival, end in stamps)
