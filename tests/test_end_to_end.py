"""The walking skeleton, end to end with real parts: eBPF capture of curl <-> nginx on 127.0.0.1,
a real Kafka broker, the pipeline consumer group, and a real OTLP receiver; then the same through
`l7scope run` with no Kafka."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.l7scope_proc import L7scopeProcess, base_env
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.servers import curl_keepalive_three, nginx

pytestmark = pytest.mark.kernel

EXPECTED = {("GET", "/ok", 200), ("GET", "/missing", 404), ("POST", "/submit", 201)}


def by_role(records: list[tuple[str, str, str, int]]) -> dict[str, set[tuple[str, str, int]]]:
    found: dict[str, set[tuple[str, str, int]]] = {"server": set(), "client": set()}
    for role, method, path, status in records:
        found[role].add((method, path, status))
    return found


def test_agent_kafka_pipeline_otlp(tmp_path: Path, kafka_bootstrap: str, otlp_receiver: OtlpReceiver) -> None:
    run_id = uuid.uuid4().hex[:8]
    env = base_env(
        L7SCOPE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        L7SCOPE_KAFKA_FRAGMENTS_TOPIC=f"e2e-fragments-{run_id}",
        L7SCOPE_KAFKA_PARTITIONS="3",
        L7SCOPE_KAFKA_GROUP=f"e2e-{run_id}",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    with (
        nginx(tmp_path / "nginx") as port,
        L7scopeProcess("agent", env=env),
        L7scopeProcess("pipeline", env=env, ready="consuming"),
    ):
        sent_ns = time.time_ns()
        curl_keepalive_three(port)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            spans = [s for s in otlp_receiver.spans() if s["attributes"].get("server.port") == port]
            if len(spans) >= 6:
                break
            time.sleep(0.25)
        time.sleep(1.0)  # anything extra (duplicates) would arrive now
        spans = [s for s in otlp_receiver.spans() if s["attributes"].get("server.port") == port]
    kinds = sorted(s["kind"] for s in spans)
    assert kinds == ["CLIENT"] * 3 + ["SERVER"] * 3, spans
    for kind in ("SERVER", "CLIENT"):
        got = {
            (
                s["attributes"]["http.request.method"],
                s["attributes"]["url.path"],
                s["attributes"]["http.response.status_code"],
            )
            for s in spans
            if s["kind"] == kind
        }
        assert got == EXPECTED
    server_spans = [s for s in spans if s["kind"] == "SERVER"]
    client_spans = [s for s in spans if s["kind"] == "CLIENT"]
    assert {s["resource"]["process.executable.name"] for s in server_spans} == {"nginx"}
    assert {s["resource"]["process.executable.name"] for s in client_spans} == {"curl"}
    client_ports = {s["attributes"]["client.port"] for s in spans}
    assert len(client_ports) == 1  # one keep-alive connection, seen from both ends
    for s in spans:
        assert s["attributes"]["server.address"] == "127.0.0.1"
        assert 0 < s["end_ns"] - s["start_ns"] < 5e9
        assert 0 <= s["start_ns"] - sent_ns < 30e9  # Unix epoch times, as OTLP requires
        assert s["status"] == (
            "ERROR"
            if s["kind"] == "CLIENT" and s["attributes"]["http.response.status_code"] == 404
            else "UNSET"
        )


def test_embedded_run_writes_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    with (
        nginx(tmp_path / "nginx") as port,
        L7scopeProcess("run", "--export", f"jsonl:{out}", "--no-table", env=base_env()),
    ):
        curl_keepalive_three(port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if out.exists() and sum(f":{port}" in line for line in out.read_text().splitlines()) >= 6:
                break
            time.sleep(0.25)
        time.sleep(0.5)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [r for r in records if r["server"] == f"127.0.0.1:{port}"]
    for r in mine:
        assert {
            "protocol",
            "role",
            "name",
            "start_ns",
            "end_ns",
            "client",
            "server",
            "pid",
            "process",
            "attributes",
        } <= r.keys()
        assert r["protocol"] == "http" and r["end_ns"] >= r["start_ns"] > 0
    found = by_role(
        [
            (
                r["role"],
                r["attributes"]["http.request.method"],
                r["attributes"]["url.path"],
                r["attributes"]["http.response.status_code"],
            )
            for r in mine
        ]
    )
    assert found == {"server": EXPECTED, "client": EXPECTED}
    assert len(mine) == 6
    assert {r["process"] for r in mine if r["role"] == "server"} == {"nginx"}
    assert {r["process"] for r in mine if r["role"] == "client"} == {"curl"}
    # service.name, as spans, metrics, the map and the records key name it: no mapping, no pod here
    assert {(r["role"], r["service"]) for r in mine} == {("server", "nginx"), ("client", "curl")}


SECRETS = ("tok-7f3a9e1b", "cookie-51c2d8", "apikey-88d1f0")


def test_traceparent_joins_the_trace_and_no_secret_leaves(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    out = tmp_path / "records.jsonl"
    env = base_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_METRIC_EXPORT_INTERVAL="500",
    )
    with (
        nginx(tmp_path / "nginx") as port,
        L7scopeProcess("run", "--export", f"jsonl:{out}", "--no-table", env=env) as proc,
    ):
        headers = [f"traceparent: 00-{trace_id}-{parent}-01", f"Authorization: Bearer {SECRETS[0]}",
                   f"Cookie: session={SECRETS[1]}"]  # fmt: skip
        url = f"http://127.0.0.1:{port}/ok?api_key={SECRETS[2]}&page=2"
        subprocess.run(["curl", "-sS", "-o", "/dev/null", *(a for h in headers for a in ("-H", h)), url],
                       check=True, timeout=20)  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            spans = [s for s in otlp_receiver.spans() if s["attributes"].get("server.port") == port]
            if len(spans) >= 2 and otlp_receiver.metric_requests:
                break
            time.sleep(0.25)
    log = proc.text()
    assert sorted(s["kind"] for s in spans) == ["CLIENT", "SERVER"]
    assert {(s["trace_id"], s["parent_span_id"]) for s in spans} == {(trace_id, parent)}
    assert {s["attributes"]["url.query"] for s in spans} == {"api_key=REDACTED&page=2"}
    everything = (
        out.read_text() + repr(otlp_receiver.trace_requests) + repr(otlp_receiver.metric_requests) + log
    )
    assert "REDACTED" in everything
    for secret in SECRETS:
        assert secret not in everything
