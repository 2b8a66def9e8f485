"""RED metrics end to end with real parts: nginx + curl captured by `l7scope run` (eBPF), scraped from
its `/metrics` by a real Prometheus server and read back through Prometheus' HTTP API, label by label;
the same run pushes OTLP metrics to a real receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.red_metrics import DURATION_BUCKETS
from tests.support.kafka_broker import free_port
from tests.support.l7scope_proc import L7scopeProcess, base_env
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.servers import curl_keepalive_three, nginx, terminate, wait_for_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.kernel

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
EXPECTED = {("GET", "200"), ("GET", "404"), ("POST", "201")}


@contextmanager
def renamed_nginx(work: Path, name: str) -> Iterator[int]:
    """nginx run from a copy named `name`, so its series (service_name = process name) are only ours."""
    work.mkdir(parents=True, exist_ok=True)
    binary = work / name
    shutil.copy("/usr/sbin/nginx", binary)
    with nginx(work, binary=str(binary)) as port:
        yield port


@contextmanager
def prometheus_server(work: Path, target: str) -> Iterator[str]:
    """Debian's `prometheus` on a free loopback port scraping `target` every second; yields its URL."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install -y prometheus)")
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        f"scrape_configs:\n  - job_name: l7scope\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("w"),
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(proc)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for_series(base: str, promql: str, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The series `promql` selects once `count` of them have a value of at least 1 (or at the timeout)."""
    result: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal result
        result = query(base, promql)
        return len(result) >= count and all(float(r["value"][1]) >= 1 for r in result)

    wait_for(enough, timeout_s, every_s=0.5)
    return result


def live_map(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/map.svg", timeout=10) as r:
        assert r.headers["Content-Type"] == "image/svg+xml"
        return str(r.read().decode())


def test_prometheus_scrapes_red_metrics_of_real_http(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    service = f"ngx{uuid.uuid4().hex[:8]}"  # other tests may run nginx meanwhile
    metrics_port = free_port()
    env = base_env(
        L7SCOPE_EXPORT_PROMETHEUS=f"127.0.0.1:{metrics_port}",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="grpc",
        OTEL_METRIC_EXPORT_INTERVAL="500",
    )
    with (
        renamed_nginx(tmp_path / "nginx", service) as port,
        L7scopeProcess("run", "--no-table", env=env),
        prometheus_server(tmp_path / "prom", f"127.0.0.1:{metrics_port}") as prom,
    ):
        wait_for_port(metrics_port)
        curl_keepalive_three(port)
        server = wait_for_series(
            prom, f'http_server_request_duration_seconds_count{{service_name="{service}"}}', 3
        )
        client_selector = f'{{service_name="curl", server_port="{port}"}}'
        client = wait_for_series(prom, f"http_client_request_duration_seconds_count{client_selector}", 3)
        buckets = query(prom, f'http_server_request_duration_seconds_bucket{{service_name="{service}"}}')
        body = query(prom, f'http_server_response_body_size_bytes_count{{service_name="{service}"}}')
        otlp_points = otlp_receiver.wait_for_metric("http.server.request.duration", timeout_s=10)
        # The service map, live beside /metrics: curl -> the renamed nginx.
        assert wait_for(lambda: service in live_map(metrics_port), 15), live_map(metrics_port)
        drawn = ET.fromstring(live_map(metrics_port))

    texts = {t.text for t in drawn.iter("{http://www.w3.org/2000/svg}text")}
    assert {"curl", service} <= texts and any(t and t.startswith("http · ") for t in texts), texts
    assert len(server) == 3, server
    by_request = {
        (s["metric"]["http_request_method"], s["metric"]["http_response_status_code"]): s for s in server
    }
    assert set(by_request) == EXPECTED
    for (method, status), series in by_request.items():
        labels = series["metric"]
        assert labels["__name__"] == "http_server_request_duration_seconds_count"
        assert labels["job"] == "l7scope" and labels["instance"] == f"127.0.0.1:{metrics_port}"
        assert labels["service_name"] == service
        assert labels["network_protocol_name"] == "http"
        assert labels["network_protocol_version"] == "1.1"
        assert labels["url_scheme"] == "http"
        assert "error_type" not in labels  # a 404 is not a server error
        assert "url_path" not in labels and "client_port" not in labels  # high cardinality stays out
        assert float(series["value"][1]) == 1.0, (method, status, series)

    assert len(client) == 3, client
    for series in client:
        labels = series["metric"]
        assert labels["server_address"] == "127.0.0.1" and labels["server_port"] == str(port)
        assert labels["network_protocol_version"] == "1.1"
        status = labels["http_response_status_code"]
        assert labels.get("error_type") == ("404" if status == "404" else None), labels
        assert float(series["value"][1]) == 1.0
    assert {
        (s["metric"]["http_request_method"], s["metric"]["http_response_status_code"]) for s in client
    } == EXPECTED

    les = {float(b["metric"]["le"]) for b in buckets}
    assert les == {*DURATION_BUCKETS, float("inf")}
    inf = [b for b in buckets if b["metric"]["le"] == "+Inf"]
    assert sorted(float(b["value"][1]) for b in inf) == [1.0, 1.0, 1.0]
    assert len(body) == 3 and all(float(b["value"][1]) == 1.0 for b in body)

    mine = [p for p in otlp_points if p["attributes"].get("http.request.method")]
    assert {
        (p["attributes"]["http.request.method"], str(p["attributes"]["http.response.status_code"]))
        for p in mine
    } >= EXPECTED
    nginx_metrics = [
        m for m in otlp_receiver.metrics() if m["name"] == "http.server.request.duration"
        and m["resource"].get("service.name") == service
    ]  # fmt: skip
    assert nginx_metrics and all(
        p["explicit_bounds"] == list(DURATION_BUCKETS) for p in nginx_metrics[-1]["points"]
    )
    assert sum(p["count"] for p in nginx_metrics[-1]["points"]) >= 3


def test_grpc_and_mysql_spans_and_metrics(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    """Real grpcio and MariaDB traffic: spans at the OTLP receiver and series in Prometheus, key by key."""
    import pymysql

    from tests.support.grpc_echo import CALLS, SERVICE, echo_server
    from tests.support.grpc_echo import calls as make_calls
    from tests.support.servers import app_user, mariadb

    password, literal = "Db-pw-90210", "literal-7q1"
    metrics_port = free_port()
    env = base_env(
        L7SCOPE_EXPORT_PROMETHEUS=f"127.0.0.1:{metrics_port}",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_METRIC_EXPORT_INTERVAL="500",
    )
    tables = [
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64))",
        "INSERT INTO shop.items VALUES (1, 'a')",
    ]
    with (
        mariadb(tmp_path / "db", [*app_user(password), *tables]) as db_port,
        echo_server() as grpc_port,
        L7scopeProcess("run", "--no-table", env=env),
        prometheus_server(tmp_path / "prom", f"127.0.0.1:{metrics_port}") as prom,
    ):
        make_calls(grpc_port)
        db = pymysql.connect(host="127.0.0.1", port=db_port, user="app", password=password, database="shop")
        with db.cursor() as c:
            c.execute(f"SELECT name FROM items WHERE name = '{literal}'")
            with pytest.raises(pymysql.err.ProgrammingError):
                c.execute("SELEC broken")
        db.close()
        rpc = wait_for_series(
            prom, f'rpc_server_call_duration_seconds_count{{rpc_service="{SERVICE}"}}', len(CALLS)
        )
        dbq = 'db_client_operation_duration_seconds_count{db_system_name="mysql", db_operation_name="SELECT"}'
        db_series = wait_for_series(prom, dbq, 1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            spans = otlp_receiver.spans()
            grpc_spans = [s for s in spans if s["attributes"].get("server.port") == grpc_port]
            db_spans = [s for s in spans if s["attributes"].get("server.port") == db_port]
            if len(grpc_spans) >= 2 * sum(CALLS.values()) and len(db_spans) >= 6:
                break
            time.sleep(0.25)

    # gRPC spans: both sides of every call, method by method
    for kind in ("SERVER", "CLIENT"):
        mine = [s for s in grpc_spans if s["kind"] == kind]
        assert sorted(s["attributes"]["rpc.method"] for s in mine) == sorted(
            m for m, n in CALLS.items() for _ in range(n)
        )
        for s in mine:
            a = s["attributes"]
            assert (a["rpc.system"], a["rpc.service"], s["name"]) == (
                "grpc",
                SERVICE,
                f"{SERVICE}/{a['rpc.method']}",
            )
            failed = a["rpc.method"] == "Fail"
            assert a["rpc.grpc.status_code"] == (5 if failed else 0)
            error = failed and kind == "CLIENT"  # NOT_FOUND is the caller's error, not the server's
            assert a.get("error.type") == ("NOT_FOUND" if error else None)
            assert s["status"] == ("ERROR" if error else "UNSET")
    # gRPC metrics: one series per method, labelled by semconv keys, counting the calls
    by_method = {s["metric"]["rpc_method"]: s for s in rpc}
    assert set(by_method) == set(CALLS)
    for method, series in by_method.items():
        labels = series["metric"]
        assert labels["rpc_system"] == "grpc" and labels["rpc_grpc_status_code"] == (
            "5" if method == "Fail" else "0"
        )
        assert "error_type" not in labels  # server series: NOT_FOUND is not a server error
        assert float(series["value"][1]) == CALLS[method]

    # MySQL spans: the query with its literal replaced, the error code, never the password or literal
    selects = [s for s in db_spans if s["attributes"].get("db.operation.name") == "SELECT"]
    assert {s["kind"] for s in selects} == {"SERVER", "CLIENT"}
    for s in selects:
        a = s["attributes"]
        assert (a["db.system.name"], a["db.namespace"], s["name"]) == ("mysql", "shop", "SELECT items")
        assert a["db.query.text"] == "SELECT name FROM items WHERE name = ?"
    errors = [s for s in db_spans if s["attributes"].get("error.type") == "1064"]
    assert {s["kind"] for s in errors} == {"SERVER", "CLIENT"}
    assert all(s["attributes"]["db.response.status_code"] == "1064" for s in errors)
    everything = repr(otlp_receiver.trace_requests) + repr(otlp_receiver.metric_requests)
    assert password not in everything and literal not in everything
    # MySQL metrics
    assert {s["metric"]["db_system_name"] for s in db_series} == {"mysql"}
    assert sum(float(s["value"][1]) for s in db_series) >= 2  # the SELECT, seen from both sides
