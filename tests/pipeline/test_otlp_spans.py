"""Records -> OTLP spans built directly with opentelemetry-proto (pipeline/otlp.py)."""

from __future__ import annotations

import dataclasses

from opentelemetry.proto.trace.v1 import trace_pb2 as trace

from pipeline.otlp import OtlpEndpoint, build_trace_request
from protocols.base import ConnInfo, Endpoint, L7Record, Role, service_name

CONN = ConnInfo("n/10/3/1", Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 5555), Role.SERVER, pid=10,
                process="nginx", node="n", container_id="abc", executable="/usr/sbin/nginx")  # fmt: skip


def record(**changes: object) -> L7Record:
    base = L7Record("http", Role.SERVER, "GET /x", 1_000, 3_000, CONN, "http.server.request.duration",
                    attributes={"http.request.method": "GET", "http.response.status_code": 200},
                    record_id="n/10/3/1/0")  # fmt: skip
    return dataclasses.replace(base, **changes)


def attrs(kvs: object) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}  # type: ignore[attr-defined]


def test_one_resource_per_service_with_process_and_k8s_attributes() -> None:
    pod = dataclasses.replace(CONN, conn_id="n/11/3/1", pid=11, service="checkout", k8s_pod="checkout-1",
                              k8s_namespace="shop", k8s_container="app")  # fmt: skip
    req = build_trace_request([record(), record(record_id="n/10/3/1/9"), record(conn=pod, record_id="p/0")])
    resources = {attrs(rs.resource.attributes)["service.name"]: rs for rs in req.resource_spans}
    assert set(resources) == {"nginx", "checkout"}
    assert len(resources["nginx"].scope_spans[0].spans) == 2
    assert attrs(resources["nginx"].resource.attributes) == {
        "service.name": "nginx", "host.name": "n", "process.pid": 10, "process.executable.name": "nginx",
        "process.executable.path": "/usr/sbin/nginx", "container.id": "abc",
    }  # fmt: skip
    assert attrs(resources["checkout"].resource.attributes)["k8s.namespace.name"] == "shop"


def test_span_fields_status_and_flags() -> None:
    ok, failed = record(), record(error_type="500", truncated=True, record_id="n/10/3/1/5")
    spans = [s for rs in build_trace_request([ok, failed]).resource_spans for s in rs.scope_spans[0].spans]
    assert [s.kind for s in spans] == [trace.Span.SPAN_KIND_SERVER] * 2
    assert (spans[0].start_time_unix_nano, spans[0].end_time_unix_nano, spans[0].name) == (
        1_000,
        3_000,
        "GET /x",
    )
    assert spans[0].status.code == trace.Status.STATUS_CODE_UNSET
    assert spans[1].status.code == trace.Status.STATUS_CODE_ERROR
    assert attrs(spans[1].attributes)["error.type"] == "500"
    assert attrs(spans[1].attributes)["l7scope.truncated"] is True
    assert "l7scope.truncated" not in attrs(spans[0].attributes)


def test_ids_are_deterministic_and_a_traceparent_is_joined() -> None:
    a, b = build_trace_request([record()]), build_trace_request([record()])
    assert a.SerializeToString() == b.SerializeToString()
    joined = record(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", parent_span_id="00f067aa0ba902b7")
    span = build_trace_request([joined]).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"
    assert len(span.span_id) == 8 and span.span_id != bytes(8)


def test_service_name_precedence() -> None:
    assert service_name(CONN) == "nginx"
    # `capture.services` (nginx=web) is resolved where the process is seen, into conn.service
    assert service_name(dataclasses.replace(CONN, service="web")) == "web"
    assert service_name(dataclasses.replace(CONN, service="edge", k8s_container="app")) == "edge"
    assert service_name(dataclasses.replace(CONN, k8s_container="app")) == "app"
    # OpenTelemetry's fallback names the executable (was a bare "unknown_service" beside a known one)
    assert service_name(dataclasses.replace(CONN, process="")) == "unknown_service:nginx"
    assert service_name(dataclasses.replace(CONN, process="", executable="")) == "unknown_service"


def test_endpoint_from_standard_variables() -> None:
    assert OtlpEndpoint.from_env({}) is None
    http = OtlpEndpoint.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%20y"}
    )
    assert http is not None and http.protocol == "http/protobuf" and http.url == "http://c:4318/v1/traces"
    assert http.headers == (("a", "1"), ("b", "x y"))
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
    }
    grpc = OtlpEndpoint.from_env(env)
    assert grpc is not None and grpc.protocol == "grpc" and not grpc.insecure and grpc.timeout_s == 2.5


def _reference_span(r: L7Record) -> trace.Span:
    """The span built field by field with opentelemetry-proto messages: what the wire encoder must match."""
    from opentelemetry.proto.common.v1 import common_pb2 as common

    from pipeline.otlp import span_attributes, span_ids

    def value(v: object) -> common.AnyValue:
        if isinstance(v, bool):
            return common.AnyValue(bool_value=v)
        if isinstance(v, int):
            return common.AnyValue(int_value=v)
        if isinstance(v, float):
            return common.AnyValue(double_value=v)
        return common.AnyValue(string_value=str(v))

    trace_id, span_id, parent = span_ids(r)
    kind = {Role.SERVER: trace.Span.SPAN_KIND_SERVER, Role.CLIENT: trace.Span.SPAN_KIND_CLIENT}
    return trace.Span(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=r.name,
        kind=kind.get(r.role, trace.Span.SPAN_KIND_INTERNAL), start_time_unix_nano=r.start_ns,
        end_time_unix_nano=max(r.end_ns, r.start_ns),
        attributes=[common.KeyValue(key=k, value=value(v)) for k, v in span_attributes(r).items()],
        status=trace.Status(code=trace.Status.STATUS_CODE_ERROR) if r.error else trace.Status(),
    )  # fmt: skip


def test_wire_encoding_matches_the_message_built_span_for_every_value_kind() -> None:
    from pipeline.otlp import encode_span

    odd = {
        "s": "é" * 200,
        "neg": -5,
        "big": 2**40,
        "f": 1.5,
        "t": True,
        "no": False,
        "one": 1,
        "l7scope.truncated": False,
    }
    records = [
        record(),
        record(attributes=odd, error_type="500", truncated=True, degraded=True, name="x" * 20_000),
        record(role=Role.UNKNOWN, conn=dataclasses.replace(CONN, role_inferred=True), start_ns=0, end_ns=0,
               trace_id="0af7651916cd43dd8448eb211c80319c", parent_span_id="b7ad6b7169203331"),
        record(start_ns=5_000, end_ns=4_000, attributes={"error.type": "x", "a": "b"}, error_type="timeout"),
    ]  # fmt: skip
    for _ in range(2):  # the second round is served from the encoder's key/value cache
        for r in records:
            assert encode_span(r) == _reference_span(r).SerializeToString()
