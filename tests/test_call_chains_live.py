"""Passive call chains, live: a test application of five services and MariaDB logs its own call tree;
the spans l7scope exports to a real OTLP receiver are checked against it, edge by edge.

    loadgen (this process, 4 threads) -> gateway -> inventory -> MariaDB
                                                 -> pricing   -> rates -> leaf
                                                              -> MariaDB

All thread-per-request (ThreadingHTTPServer, keep-alive, a connection per serving thread), except
`rates` in the event-loop tests (asyncio, requests overlapping on one thread). Without trace headers
>= 95% of child exchanges must carry the right parent (and trace id), none a wrong one; the calls an
event loop makes are unlinked (counted), never wrong; with `traceparent` every HTTP exchange is linked
by its header and the SQL calls join the header's trace by thread.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.l7scope_proc import L7scopeProcess
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.servers import app_user, mariadb, terminate

pytestmark = pytest.mark.kernel

APP = Path(__file__).resolve().parent / "support" / "call_tree_app.py"
LOAD_THREADS, REQUESTS_PER_THREAD = 4, 25
SETUP = [*app_user("app"), "CREATE TABLE shop.stock (id INT PRIMARY KEY, qty INT)",
         "INSERT INTO shop.stock VALUES (1, 7)"]  # fmt: skip


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
    cache = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope")
    return (
        env | {"L7SCOPE_CAPTURE_HEADER_CACHE": cache + "/headers", "PYTHONPATH": str(APP.parents[2])} | extra
    )


@contextmanager
def service(name: str, log: Path, *args: str) -> Iterator[int]:
    """One service of the application as its own process (named by OTEL_SERVICE_NAME); yields its port."""
    env = base_env(OTEL_SERVICE_NAME=name)
    proc = subprocess.Popen([sys.executable, str(APP), name, str(log), *args], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port
    finally:
        terminate(proc)


@contextmanager
def application(work: Path, log: Path, event_loop: bool, propagate: bool) -> Iterator[int]:
    """MariaDB and the five services, started leaf first; yields the gateway's port."""
    flags = ["--propagate"] if propagate else []
    with ExitStack() as stack:
        db = stack.enter_context(mariadb(work / "db", SETUP))
        sql = ["--sql", "--db", str(db)]
        leaf = stack.enter_context(service("leaf", log, *flags))
        rates = stack.enter_context(
            service("rates", log, *flags, "--call", f"leaf={leaf}", *(["--asyncio"] if event_loop else []))
        )
        inventory = stack.enter_context(service("inventory", log, *flags, *sql))
        pricing = stack.enter_context(service("pricing", log, *flags, "--call", f"rates={rates}", *sql))
        yield stack.enter_context(
            service(
                "gateway", log, *flags, "--call", f"inventory={inventory}", "--call", f"pricing={pricing}"
            )
        )


def load(port: int, propagate: bool) -> list[dict[str, str]]:
    """The load generator's own log: each request's path (and traceparent)."""
    sent: list[dict[str, str]] = []
    lock = threading.Lock()

    def one_thread() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        for _ in range(REQUESTS_PER_THREAD):
            path = f"/gateway/{secrets.token_hex(8)}"
            tp = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01" if propagate else ""
            conn.request("GET", path, headers={"traceparent": tp} if tp else {})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            with lock:
                sent.append({"path": path, "traceparent": tp})
        conn.close()

    threads = [threading.Thread(target=one_thread) for _ in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return sent


@dataclass
class Edge:
    """A child exchange and the parent the application's log says it has."""

    child: tuple[str, str]  # (kind, key): key is the url.path, or the SQL alias
    parent: tuple[str, str]
    how: str  # the link expected: "connection" or "thread"
    caller: str  # the service whose process makes the link (thread: the caller; connection: the callee)


@dataclass
class Score:
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    unlinked: int = 0
    missing: int = 0

    @property
    def total(self) -> int:
        return self.right + len(self.wrong) + self.unlinked + self.missing


def expected_edges(sent: list[dict[str, str]], log: list[dict[str, Any]]) -> list[Edge]:
    edges = [Edge(("SERVER", r["path"]), ("CLIENT", r["path"]), "connection", "gateway") for r in sent]
    for entry in log:
        inbound = ("SERVER", entry["path"])
        for call in entry["calls"]:
            if call["kind"] == "http":
                edges.append(Edge(("CLIENT", call["path"]), inbound, "thread", entry["service"]))
                callee = call["path"].split("/")[1]
                edges.append(Edge(("SERVER", call["path"]), ("CLIENT", call["path"]), "connection", callee))
            else:
                edges.append(Edge(("CLIENT", call["alias"]), inbound, "thread", entry["service"]))
                edges.append(
                    Edge(("SERVER", call["alias"]), ("CLIENT", call["alias"]), "connection", "mariadb")
                )
    return edges


def span_key(span: dict[str, Any]) -> tuple[str, str] | None:
    attrs = span["attributes"]
    if "url.path" in attrs:
        return span["kind"], attrs["url.path"]
    text = str(attrs.get("db.query.text", ""))
    if " AS c_" in text:
        return span["kind"], text.split(" AS ")[1].split(" ")[0]
    return None


def score(edges: list[Edge], spans: dict[tuple[str, str], dict[str, Any]]) -> Score:
    result = Score()
    for edge in edges:
        child, parent = spans.get(edge.child), spans.get(edge.parent)
        if child is None or parent is None:
            result.missing += 1
        elif not child["parent_span_id"]:
            result.unlinked += 1
        elif (child["parent_span_id"], child["trace_id"]) == (parent["span_id"], parent["trace_id"]):
            assert child["attributes"].get("l7scope.link") == edge.how, (edge, child)
            result.right += 1
        else:
            result.wrong.append(f"{edge}: parent {child['parent_span_id']}, expected {parent['span_id']}")
    return result


def collect(
    receiver: OtlpReceiver, want: set[tuple[str, str]], timeout_s: float
) -> dict[tuple[str, str], Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = {k: s for s in receiver.spans() if (k := span_key(s)) is not None and k in want}
        if len(spans) >= len(want) or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def wanted(edges: list[Edge]) -> set[tuple[str, str]]:
    return {e.child for e in edges} | {e.parent for e in edges}


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


Command = tuple[tuple[str, ...], str]  # l7scope's arguments, and the log line saying it is ready


def run_app(
    tmp_path: Path, receiver: OtlpReceiver, l7scope_args: list[Command], env: dict[str, str],
    event_loop: bool, propagate: bool = False,
) -> tuple[list[Edge], dict[tuple[str, str], Any], list[dict[str, Any]], list[L7scopeProcess]]:  # fmt: skip
    """l7scope (the given commands) around the application under load; returns the expected edges, the
    spans received by key, the application's log and the stopped l7scope processes."""
    log = tmp_path / "calls.jsonl"
    procs = [L7scopeProcess(*args, env=env, ready=ready) for args, ready in l7scope_args]
    try:
        with application(tmp_path, log, event_loop, propagate) as gateway:
            sent = load(gateway, propagate)
            time.sleep(0.5)  # the last log lines
            entries = read_log(log)
            edges = expected_edges(sent, entries)
            spans = collect(receiver, wanted(edges), timeout_s=60)
    finally:
        for proc in reversed(procs):
            proc.stop()
    spans = collect(receiver, wanted(edges), timeout_s=3)
    return edges, spans, entries, procs


def otlp_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return base_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        L7SCOPE_EXPORT_OTLP_METRICS="false",
        **extra,
    )


def report(name: str, result: Score) -> str:
    return (f"{name}: {result.right}/{result.total} right, {len(result.wrong)} wrong, "
            f"{result.unlinked} unlinked, {result.missing} missing")  # fmt: skip


def check_chains(
    edges: list[Edge], spans: dict[tuple[str, str], Any], event_loop: bool
) -> tuple[Score, Score]:
    """(the thread-per-request edges, the edges an event loop decides); asserts the issue's figures."""
    decided_by_loop = [e for e in edges if event_loop and e.how == "thread" and e.caller == "rates"]
    others = [e for e in edges if e not in decided_by_loop]
    main, loop = score(others, spans), score(decided_by_loop, spans)
    print(report("thread-per-request", main), report("event loop", loop))
    assert not main.wrong and not loop.wrong, main.wrong + loop.wrong
    assert main.right >= 0.95 * main.total, report("thread-per-request", main)
    return main, loop


def test_run_links_the_call_tree_without_headers(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    env = otlp_env(otlp_receiver)
    edges, spans, _, (run,) = run_app(tmp_path, otlp_receiver, [(("run", "--no-table"), "capturing")], env,
                                      event_loop=True)  # fmt: skip
    _, loop = check_chains(edges, spans, event_loop=True)
    summary = run.log("pipeline stopped")
    print({k: v for k, v in summary.items() if k.startswith("chains")})
    assert "multiplexed=" in summary["chains_unlinked"]  # the event loop's calls: counted
    assert loop.unlinked > 0 and loop.right + loop.unlinked == loop.total


def test_agent_kafka_pipeline_links_the_call_tree_without_headers(
    tmp_path: Path, otlp_receiver: OtlpReceiver, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    env = otlp_env(
        otlp_receiver,
        L7SCOPE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        L7SCOPE_KAFKA_FRAGMENTS_TOPIC=f"chains-{run_id}",
        L7SCOPE_KAFKA_PARTITIONS="3",
        L7SCOPE_KAFKA_GROUP=f"chains-{run_id}",
        L7SCOPE_EXPORT_RECORDS_TOPIC="off",
    )
    commands = [(("pipeline",), "consuming"), (("agent",), "capturing")]
    edges, spans, _, (pipeline, _) = run_app(tmp_path, otlp_receiver, commands, env, event_loop=True)
    _, loop = check_chains(edges, spans, event_loop=True)
    summary = pipeline.log("pipeline stopped")
    print({k: v for k, v in summary.items() if k.startswith("chains")})
    assert "multiplexed=" in summary["chains_unlinked"]
    assert loop.right + loop.unlinked == loop.total


def test_run_with_traceparent_links_every_http_exchange_by_its_header(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    env = otlp_env(otlp_receiver)
    edges, spans, entries, _ = run_app(tmp_path, otlp_receiver, [(("run", "--no-table"), "capturing")], env,
                                       event_loop=False, propagate=True)  # fmt: skip
    sent_headers = {c["path"]: c["traceparent"] for e in entries for c in e["calls"] if c["kind"] == "http"}
    gateway_headers = {e["path"]: e["traceparent"] for e in entries if e["service"] == "gateway"}
    http_spans = [s for k, s in spans.items() if k[1].startswith("/")]
    assert len(http_spans) == 2 * (len(sent_headers) + len(gateway_headers))
    for s in http_spans:
        header = sent_headers.get(s["attributes"]["url.path"]) or gateway_headers[s["attributes"]["url.path"]]
        _, trace_id, parent, _ = header.split("-")
        assert (s["trace_id"], s["parent_span_id"]) == (trace_id, parent)
        assert s["attributes"]["l7scope.link"] == "header"
    sql = [e for e in edges if e.child[1].startswith("c_")]
    result = score(sql, spans)
    print(report("sql", result))
    assert not result.wrong and result.right >= 0.95 * result.total
