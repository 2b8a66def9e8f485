"""RED metrics through the OpenTelemetry SDK: names, units, buckets, attributes, health, exemplars,
per-service Resources, and the two real exports (OTLP to a real receiver, Prometheus over HTTP)."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, MetricsData

from pipeline.conn_table import activity_of
from pipeline.otlp import span_ids
from pipeline.prometheus import PrometheusEndpoint, parse_address
from pipeline.red_metrics import (
    DURATION_BUCKETS,
    DURATION_METRICS,
    INSTRUMENTS,
    SIZE_BUCKETS,
    RedMetrics,
    build_meter_provider,
    build_metrics,
    split_by_service,
)
from probes.fragment import Batch, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from tests.support.otlp_receiver import OtlpReceiver

SERVER = ConnInfo(
    "n1/10/4/1", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 51000), Role.SERVER,
    pid=10, process="nginx", node="n1",
)  # fmt: skip
CLIENT = ConnInfo(
    "n1/11/3/1", Endpoint("127.0.0.1", 51000), Endpoint("127.0.0.1", 8080), Role.CLIENT,
    pid=11, process="curl", node="n1",
)  # fmt: skip
HTTP_KEYS = ("http.request.method", "http.response.status_code", "network.protocol.version", "url.scheme")


def http(conn: ConnInfo, status: int, seconds: float, pos: int = 0, **kw: Any) -> L7Record:
    server = conn.role == Role.SERVER
    attrs: dict[str, Any] = {
        "http.request.method": "GET", "url.path": f"/users/{pos}", "url.scheme": "http",
        "http.response.status_code": status, "network.protocol.version": "1.1",
        "http.request.body.size": 0, "http.response.body.size": 300, "client.port": 51000 + pos,
    }  # fmt: skip
    error = str(status) if status >= 500 or (status >= 400 and not server) else None
    return L7Record(
        protocol="http", role=conn.role, name="GET /users/{id}", start_ns=1_000_000_000,
        end_ns=1_000_000_000 + int(seconds * 1e9), conn=conn,
        metric="http.server.request.duration" if server else "http.client.request.duration",
        error_type=error, attributes=attrs, metric_attributes=HTTP_KEYS, record_id=f"{conn.conn_id}/{pos}",
        **kw,
    )  # fmt: skip


def other(metric: str, attrs: dict[str, Any], keys: tuple[str, ...], error: str | None = None) -> L7Record:
    role = Role.SERVER if ".server." in metric else Role.CLIENT
    return L7Record(
        protocol="x", role=role, name="n", start_ns=0, end_ns=30_000_000,
        conn=SERVER if role == Role.SERVER else CLIENT,
        metric=metric, error_type=error, attributes=attrs, metric_attributes=keys, record_id=metric,
    )  # fmt: skip


def collect(
    records: list[L7Record], health: Health | None = None, **kw: Any
) -> tuple[MetricsData, RedMetrics]:
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"), health, **kw)
    red.export(records)
    data = reader.get_metrics_data()
    assert data is not None
    return data, red


def metrics_by_name(data: MetricsData) -> dict[str, Any]:
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def points(data: MetricsData, name: str) -> list[Any]:
    metric = metrics_by_name(data).get(name)
    return list(metric.data.data_points) if metric else []


def test_http_duration_histogram_names_units_buckets_attributes() -> None:
    records = [http(SERVER, 200, 0.003, 1), http(SERVER, 200, 0.2, 2), http(SERVER, 503, 12.0, 3)]
    data, _ = collect(records)
    metric = metrics_by_name(data)["http.server.request.duration"]
    assert metric.unit == "s"
    by_status = {p.attributes["http.response.status_code"]: p for p in metric.data.data_points}
    assert set(by_status) == {200, 503}
    ok, failed = by_status[200], by_status[503]
    assert isinstance(ok, HistogramDataPoint)
    assert tuple(ok.explicit_bounds) == DURATION_BUCKETS
    assert ok.count == 2 and ok.sum == pytest.approx(0.203)
    expected_buckets = [0] * (len(DURATION_BUCKETS) + 1)
    expected_buckets[0] = 1  # 3 ms <= 5 ms
    expected_buckets[DURATION_BUCKETS.index(0.25)] = 1  # 200 ms in (0.1, 0.25]
    assert list(ok.bucket_counts) == expected_buckets
    assert list(failed.bucket_counts)[-1] == 1  # 12 s overflows the last bound
    assert dict(ok.attributes) == {
        "http.request.method": "GET", "http.response.status_code": 200, "network.protocol.version": "1.1",
        "url.scheme": "http", "service.name": "nginx", "host.name": "n1",
    }  # fmt: skip
    assert failed.attributes["error.type"] == "503"
    assert "error.type" not in ok.attributes
    # high-cardinality keys never become metric attributes
    assert all(
        "url.path" not in p.attributes and "client.port" not in p.attributes for p in by_status.values()
    )


def test_client_errors_and_service_name_mapping() -> None:
    # `capture.services` (curl=frontend) names the connection where the process is seen
    named = dataclasses.replace(CLIENT, service="frontend")
    data, _ = collect([http(named, 404, 0.01)])
    (point,) = points(data, "http.client.request.duration")
    assert point.attributes["error.type"] == "404"
    assert point.attributes["service.name"] == "frontend"


def test_body_size_histograms_only_where_body_sizes_exist() -> None:
    rpc = other(
        "rpc.server.call.duration",
        {"rpc.system": "grpc", "rpc.method": "SayHello"},
        ("rpc.system", "rpc.method"),
    )
    data, _ = collect([http(SERVER, 200, 0.01), http(CLIENT, 200, 0.01), rpc])
    names = set(metrics_by_name(data))
    for side in ("server", "client"):
        for kind, size in (("request", 0), ("response", 300)):
            metric = metrics_by_name(data)[f"http.{side}.{kind}.body.size"]
            assert metric.unit == "By"
            (point,) = metric.data.data_points
            assert tuple(point.explicit_bounds) == SIZE_BUCKETS
            assert point.count == 1 and point.sum == size
            assert point.attributes["http.request.method"] == "GET"
    assert not any(n.startswith("rpc.") and n.endswith("size") for n in names)


@pytest.mark.parametrize("metric", DURATION_METRICS)
def test_every_semconv_duration_metric_gets_semconv_buckets(metric: str) -> None:
    attrs = {"db.system.name": "mysql", "db.operation.name": "SELECT", "rpc.system": "grpc", "x.high": "no"}
    keys = ("db.system.name", "db.operation.name", "rpc.system")
    data, _ = collect([other(metric, attrs, keys, error="1062")])
    (point,) = points(data, metric)
    assert metrics_by_name(data)[metric].unit == "s"
    # The conventions' advice, written out: HTTP and RPC share one set, database operations have theirs.
    advice = (
        (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)
        if metric == "db.client.operation.duration"
        else (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
    )
    assert tuple(point.explicit_bounds) == advice
    assert point.count == 1 and point.bucket_counts[advice.index(0.05)] == 1  # 30 ms
    assert {k: point.attributes[k] for k in keys} == {k: attrs[k] for k in keys}
    assert point.attributes["error.type"] == "1062" and "x.high" not in point.attributes


def test_health_counters_and_consumer_lag() -> None:
    health = Health()
    health.count("parse_errors", "http", 3, reason="bad request line")
    health.count("parse_errors", "mysql", 1, reason="bad packet")
    health.count("gaps", "http", 2)
    health.count("capture_lost_events", "kernel", 5)
    health.count("dropped_batches", "embedded_queue", 7, reason="queue full")
    health.count("exchanges", "http", 99)  # not a health metric: must not appear
    records = [http(SERVER, 200, 0.01, 1, truncated=True), http(SERVER, 200, 0.01, 2, degraded=True)]
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader]), health)
    red.export(records)
    red.set_consumer_lag("l7scope.fragments", 3, 42)
    data = reader.get_metrics_data()
    assert data is not None

    def values(name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        return {frozenset(p.attributes.items()): p.value for p in points(data, name)}

    assert values("l7scope.parse.errors") == {
        frozenset({("protocol", "http"), ("reason", "bad request line")}): 3,
        frozenset({("protocol", "mysql"), ("reason", "bad packet")}): 1,
    }
    assert values("l7scope.gaps") == {frozenset({("protocol", "http")}): 2}
    assert values("l7scope.capture.dropped") == {
        frozenset({("l7scope.stage", "kernel")}): 5,
        frozenset({("l7scope.stage", "embedded_queue"), ("reason", "queue full")}): 7,
    }
    assert values("l7scope.capture.truncated") == {frozenset({("protocol", "http"), ("reason", "record")}): 1}
    assert values("l7scope.exchanges.degraded") == {
        frozenset({("protocol", "http"), ("reason", "record")}): 1
    }
    assert values("l7scope.consumer.lag") == {
        frozenset(
            {("messaging.destination.name", "l7scope.fragments"), ("messaging.destination.partition.id", "3")}
        ): 42
    }
    assert metrics_by_name(data)["l7scope.parse.errors"].data.is_monotonic
    health.count("gaps", "http", 1)  # counters are cumulative across collections
    again = reader.get_metrics_data()
    assert again is not None
    assert {p.value for p in points(again, "l7scope.gaps")} == {3}


def test_exemplars_link_to_the_exported_span() -> None:
    propagated = http(
        SERVER, 200, 0.02, 1, trace_id="4bf92f3577b34da6a3ce929d0e0e4736", parent_span_id="00f067aa0ba902b7"
    )
    own = http(SERVER, 500, 0.02, 2)
    data, _ = collect([propagated, own])
    by_status = {
        p.attributes["http.response.status_code"]: p for p in points(data, "http.server.request.duration")
    }
    for record, status in ((propagated, 200), (own, 500)):
        trace_id, span_id, _ = span_ids(record)
        (exemplar,) = by_status[status].exemplars
        assert exemplar.trace_id == int.from_bytes(trace_id, "big")
        assert exemplar.span_id == int.from_bytes(span_id, "big")
        assert exemplar.value == pytest.approx(0.02)
    assert by_status[200].exemplars[0].trace_id == int(propagated.trace_id, 16)


def test_exemplars_off_records_none() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], exemplars=False), exemplars=False)
    red.export([http(SERVER, 200, 0.02)])
    data = reader.get_metrics_data()
    assert data is not None
    assert [list(p.exemplars) for p in points(data, "http.server.request.duration")] == [[]]


def test_split_by_service_moves_service_name_onto_resources() -> None:
    health = Health()
    health.count("gaps", "http", 1)
    data, _ = collect([http(SERVER, 200, 0.01), http(CLIENT, 200, 0.01)], health)
    split = split_by_service(data)
    by_service: dict[str, dict[str, Any]] = {}
    for rm in split.resource_metrics:
        service = str(rm.resource.attributes["service.name"])
        assert service not in by_service  # one ResourceMetrics per service
        by_service[service] = {m.name: m for sm in rm.scope_metrics for m in sm.metrics}
        for metrics in by_service[service].values():
            for p in metrics.data.data_points:
                assert "service.name" not in p.attributes and "host.name" not in p.attributes
    assert set(by_service) == {"nginx", "curl", "l7scope"}
    assert set(by_service["nginx"]) == {
        "http.server.request.duration", "http.server.request.body.size", "http.server.response.body.size",
    }  # fmt: skip
    assert "http.client.request.duration" in by_service["curl"]
    # the pipeline's own health and the service graph (edges span services) stay on l7scope's Resource
    assert set(by_service["l7scope"]) == {
        "l7scope.gaps", "l7scope.service_graph.requests", "l7scope.service_graph.request.duration",
    }  # fmt: skip
    nginx = next(rm for rm in split.resource_metrics if rm.resource.attributes["service.name"] == "nginx")
    assert nginx.resource.attributes["host.name"] == "n1"


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address(":9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "host:", "host:99999", "127.0.0.1:x"):
        with pytest.raises(ValueError, match=r"export\.prometheus"):
            parse_address(bad)


def test_prometheus_endpoint_serves_and_stops() -> None:
    endpoint = PrometheusEndpoint("127.0.0.1:0")
    red = RedMetrics(build_meter_provider([endpoint.reader]), Health())
    red.export([http(SERVER, 200, 0.003), http(SERVER, 503, 0.2, 2)])
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("http_server_request_duration_seconds_")]
    bucket_005 = [
        line for line in lines if "_bucket{" in line and 'le="0.005"' in line and 'status_code="200"' in line
    ]
    assert len(bucket_005) == 1 and bucket_005[0].endswith(" 1.0")
    (count_503,) = [
        line
        for line in lines
        if line.startswith("http_server_request_duration_seconds_count{") and 'error_type="503"' in line
    ]
    assert 'service_name="nginx"' in count_503 and count_503.endswith(" 1.0")
    red.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", endpoint.port), timeout=1):
        pass


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_to_a_real_receiver(otlp_receiver: OtlpReceiver, protocol: str) -> None:
    endpoint = (
        f"http://127.0.0.1:{otlp_receiver.grpc_port if protocol == 'grpc' else otlp_receiver.http_port}"
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    health = Health()
    health.count("parse_errors", "http", 2, reason="bad request line")
    red = build_metrics(env, health, node="n1")
    assert red is not None
    red.export([http(SERVER, 200, 0.003, 1), http(SERVER, 200, 0.2, 2), http(SERVER, 503, 0.06, 3)])
    got = otlp_receiver.wait_for_metric("http.server.request.duration", timeout_s=10)
    red.close()
    assert got, "no http.server.request.duration arrived"
    assert set(otlp_receiver.transports) == {"grpc" if protocol == "grpc" else "http"}
    metrics = otlp_receiver.metrics()
    duration = [m for m in metrics if m["name"] == "http.server.request.duration"]
    assert all(
        m["unit"] == "s" and m["kind"] == "histogram" and m["resource"]["service.name"] == "nginx"
        for m in duration
    )
    assert duration[0]["resource"]["host.name"] == "n1"
    latest = {p["attributes"]["http.response.status_code"]: p for p in duration[-1]["points"]}
    assert latest[200]["attributes"] == {
        "http.request.method": "GET", "http.response.status_code": 200, "network.protocol.version": "1.1",
        "url.scheme": "http",
    }  # fmt: skip
    assert latest[200]["explicit_bounds"] == list(DURATION_BUCKETS)
    assert latest[200]["count"] == 2 and latest[200]["bucket_counts"][0] == 1
    assert latest[200]["bucket_counts"][DURATION_BUCKETS.index(0.25)] == 1
    assert latest[503]["attributes"]["error.type"] == "503"
    assert latest[503]["bucket_counts"][DURATION_BUCKETS.index(0.075)] == 1
    sizes = [m for m in metrics if m["name"] == "http.server.response.body.size"]
    assert sizes and sizes[-1]["unit"] == "By"
    size_points = {p["attributes"]["http.response.status_code"]: p for p in sizes[-1]["points"]}
    assert (size_points[200]["count"], size_points[200]["sum"], size_points[503]["sum"]) == (2, 600, 300)
    errors = [m for m in metrics if m["name"] == "l7scope.parse.errors"]
    assert errors and errors[-1]["resource"]["service.name"] == "l7scope"
    assert errors[-1]["points"][0]["attributes"] == {"protocol": "http", "reason": "bad request line"}
    assert errors[-1]["points"][0]["value"] == 2
    assert health.total("exported") >= 1 and health.total("export_failed") == 0


def test_instruments_list_is_what_red_metrics_creates() -> None:
    """INSTRUMENTS (the dashboard test's source) names exactly the instruments a full run emits."""
    health = Health()
    counted = (
        ("parse_errors", "http"), ("gaps", "http"), ("capture_lost_events", "kernel"),
        ("parser_stuck", "http"), ("unmatched_frames", "http"), ("evicted_connections", "memory"),
        ("export_failed", "otlp_spans"), ("export_dropped", "otlp_spans"), ("capture_file_errors", "pcap"),
        ("alert_records_late", "SomeRule"), ("chain_links", "thread"), ("chain_unlinked", "http"),
    )  # fmt: skip
    for name, label in counted:
        health.count(name, label)
    rpc = {"rpc.system": "grpc"}
    records = [
        http(SERVER, 200, 0.01, 1, truncated=True), http(CLIENT, 200, 0.01, 2, degraded=True),
        other("rpc.server.call.duration", rpc, ("rpc.system",), error="14"),  # a failed service graph request
        other("rpc.client.call.duration", rpc, ("rpc.system",), error="14"),  # its client end saw it too
        other("db.client.operation.duration", {"db.system.name": "mysql"}, ("db.system.name",)),
    ]  # fmt: skip
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader]), health)
    red.export(records)
    red.export_activity([activity_of(Batch(SERVER, [Fragment(SERVER.conn_id, Io.RECV, 0, 10, b"", 1)]))])
    red.set_consumer_lag("t", 0, 1)
    data = reader.get_metrics_data()
    assert data is not None
    emitted = {(m.name, m.unit) for m in metrics_by_name(data).values()}
    assert emitted == {(i.name, i.unit) for i in INSTRUMENTS}
    kinds = {m.name: type(m.data).__name__ for m in metrics_by_name(data).values()}
    expected_kind = {"histogram": "Histogram", "counter": "Sum", "gauge": "Gauge"}
    assert all(kinds[i.name] == expected_kind[i.kind] for i in INSTRUMENTS)


def test_every_loss_counter_is_a_reason_labelled_metric() -> None:
    """Export losses (with the exporter), stuck parsers, unmatched frames, evictions: all exported."""
    health = Health()
    health.count("export_failed", "otlp_spans", 1024, reason="timeout")
    health.count("export_dropped", "otlp_spans", 300, reason="queue full")
    health.count("export_dropped", "otlp_spans", 20, reason="shutdown")
    health.count("export_failed", "otlp_metrics", reason="not accepted")
    health.count("dropped_records", "kafka", 5, reason="queue full")
    health.count("alerts_failed", "alertmanager", 2, reason="URLError")
    health.count("parser_stuck", "http", reason="no progress")
    health.count("unmatched_frames", "mysql", 3)
    health.count("evicted_connections", "memory", 4)
    data, _ = collect([], health)

    def values(name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        return {frozenset(p.attributes.items()): p.value for p in points(data, name)}

    assert values("l7scope.export.failed") == {
        frozenset({("l7scope.exporter", "otlp_spans"), ("reason", "timeout")}): 1024,
        frozenset({("l7scope.exporter", "otlp_metrics"), ("reason", "not accepted")}): 1,
        frozenset({("l7scope.exporter", "alertmanager"), ("reason", "URLError")}): 2,
    }
    assert values("l7scope.export.dropped") == {
        frozenset({("l7scope.exporter", "otlp_spans"), ("reason", "queue full")}): 300,
        frozenset({("l7scope.exporter", "otlp_spans"), ("reason", "shutdown")}): 20,
        frozenset({("l7scope.exporter", "records_topic"), ("reason", "queue full")}): 5,
    }
    assert values("l7scope.parser.stuck") == {frozenset({("protocol", "http"), ("reason", "no progress")}): 1}
    assert values("l7scope.frames.unmatched") == {frozenset({("protocol", "mysql")}): 3}
    assert values("l7scope.connections.evicted") == {frozenset({("reason", "memory")}): 4}


def test_kernel_truncations_join_record_truncations() -> None:
    health = Health()
    health.count("capture_truncated", "kernel", 4)  # drain_forever's CaptureLosses feeds these
    data, _ = collect([http(SERVER, 200, 0.01, 1, truncated=True)], health)
    assert {frozenset(p.attributes.items()): p.value for p in points(data, "l7scope.capture.truncated")} == {
        frozenset({("l7scope.stage", "kernel")}): 4,
        frozenset({("protocol", "http"), ("reason", "record")}): 1,
    }


def test_services_are_bounded_and_overflow_is_counted() -> None:
    health = Health()
    conns = [
        ConnInfo(f"n1/{i}/4/1", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 51000), Role.SERVER,
                 pid=i, process=f"p{i}", node="n1")
        for i in range(3)
    ]  # fmt: skip
    data, _ = collect([http(c, 200, 0.01, i) for i, c in enumerate(conns)], health, max_services=2)
    services = {p.attributes["service.name"]: p.count for p in points(data, "http.server.request.duration")}
    assert services == {"p0": 1, "p1": 1, "l7scope.overflow": 1}
    assert health.total("metrics_services_overflow") == 1


def test_cli_export_flag_and_config_validation() -> None:
    import argparse

    from l7scope.cli import _apply_flags
    from l7scope.config import Config, ConfigError, load

    args = argparse.Namespace(export=["prometheus:127.0.0.1:9464", "jsonl:-"])
    export = _apply_flags(Config(), args).export
    assert (export.prometheus, export.jsonl, export.otlp_metrics) == ("127.0.0.1:9464", "-", True)
    assert load(None, {"L7SCOPE_EXPORT_PROMETHEUS": ":9464"}).export.prometheus == ":9464"
    with pytest.raises(ConfigError, match=r"export\.prometheus"):
        load(None, {"L7SCOPE_EXPORT_PROMETHEUS": "127.0.0.1"})


def test_prometheus_exposition_passes_promtool_with_help_escaped_labels_and_unique_series() -> None:
    """promtool (Prometheus' own linter) flagged every RED histogram: 'no help text'."""
    import shutil
    import subprocess

    from prometheus_client.parser import text_string_to_metric_families

    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (package prometheus) is part of the test environment"
    endpoint = PrometheusEndpoint("127.0.0.1:0")
    red = RedMetrics(build_meter_provider([endpoint.reader]), Health())
    odd = 'shop "main"\\\nx'  # a quote, a backslash and a newline in a label value
    db = {"db.system.name": "mysql", "db.namespace": odd, "db.operation.name": "SELECT"}
    rpc = {"rpc.system": "grpc", "rpc.method": "Get"}
    red.export(
        [http(SERVER, 200, 0.003), http(CLIENT, 404, 0.01, 1),
         other("rpc.server.call.duration", rpc, tuple(rpc)),
         other("db.client.operation.duration", db, tuple(db))]
    )  # fmt: skip
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    red.close()
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("http_server_request_duration_seconds", "db_client_operation_duration_seconds",
                 "http_client_response_body_size_bytes", "rpc_server_call_duration_seconds"):  # fmt: skip
        assert families[name].type == "histogram" and families[name].documentation, name
    (count,) = [
        s for s in families["db_client_operation_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert count.labels["db_namespace"] == odd and count.value == 1
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in families.values() for s in f.samples]
    assert len(series) == len(set(series))
