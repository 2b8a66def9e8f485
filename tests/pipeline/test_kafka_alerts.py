"""Alerting with scaled-out pipelines: two `l7scope pipeline` replicas, one `l7scope alerts evaluate`.

Real broker, real HTTP bytes traced from both ends (published as an agent would), real child
processes. The replicas split the connections of one service (`httpd`) by partition; neither holds
enough of its requests for the latency rule (`min_requests`), so a rule evaluated per replica could
never fire. The records topic is keyed by service: the evaluator sees all of `httpd` and the alert
fires exactly once, into an Alertmanager stand-in and the alerts topic, from a window holding every
request of both replicas. The replicas, configured with the same rules, leave alerting to it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.alerts_source import RecordsSource
from pipeline.records_sink import RecordsSink
from probes.health import Health
from probes.publisher import KafkaPublisher
from proto import records_pb2 as pb
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from tests.pipeline.kafka_helpers import assigned, child_env, config_for, read_topic, start_group
from tests.support.http_traffic import Client, HttpTarget, both_ends
from tests.support.kafka_broker import free_port
from tests.support.l7scope_proc import L7scopeProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 6
EXCHANGES = 80  # one per connection: 3 of 4 take 300 ms, the others 2 ms
MIN_REQUESTS = 60  # more than one replica can hold of 80 exchanges spread over its 3 of 6 partitions

RULES = f"""
evaluation_interval: 1s
resend_interval: 1h
rules:
  - alert: HttpdSlow
    match: {{service: httpd, role: server}}
    latency: {{percentile: 50, above_ms: 100}}
    window: 60s
    min_requests: {MIN_REQUESTS}
    annotations: {{requests: "{{requests}}"}}
"""


@contextmanager
def alertmanager_stand_in() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Accepts Alertmanager's v2 POSTs on 127.0.0.1 and keeps every alert posted, in order."""
    posted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/api/v2/alerts":
                posted.extend(body)
            self.send_response(200 if self.path == "/api/v2/alerts" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", posted
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def publish_traffic(bootstrap: str, topic: str, start_ns: int, durations_ms: list[float]) -> None:
    """Real exchanges, one connection each, traced from both ends, 20 ms apart from `start_ns` (the
    wall clock, as the agent stamps them) and taking `durations_ms`."""
    health = Health()
    publisher = KafkaPublisher(config_for(bootstrap, topic, partitions=PARTITIONS).kafka, health)
    with HttpTarget() as target:
        client = Client(target.port, uuid.uuid4().hex[:6])
        for i, ms in enumerate(durations_ms):
            (x,) = client.connection()
            x.sent_ns = start_ns + i * 20_000_000
            x.done_ns = x.sent_ns + int(ms * 1e6)
            first, second = both_ends(x)
            publisher.publish(first)
            publisher.publish(second)
    publisher.close()
    assert health.total("delivered_batches") == 4 * len(durations_ms)


def late_records(port: int) -> float:
    """The evaluator's `alert_records_late` for HttpdSlow, scraped from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "l7scope_alerts_late_records_total" and s.labels.get("l7scope_alert") == "HttpdSlow"
    )


def httpd_server_records(path: Path) -> int:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(1 for r in lines if r["service"] == "httpd" and r["role"] == "server")


def test_a_latency_alert_fires_once_from_a_whole_service_window(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    started = time.monotonic()
    fragments = kafka_topic(partitions=PARTITIONS)
    records = kafka_topic(partitions=PARTITIONS, prefix="rec")
    alerts = kafka_topic(partitions=2, prefix="alerts")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    outs = [tmp_path / f"replica{i}.jsonl" for i in range(2)]
    metrics_port = free_port()
    with alertmanager_stand_in() as (am_url, posted):
        env = child_env(
            kafka_bootstrap,
            L7SCOPE_KAFKA_FRAGMENTS_TOPIC=fragments,
            L7SCOPE_KAFKA_RECORDS_TOPIC=records,
            L7SCOPE_KAFKA_ALERTS_TOPIC=alerts,
            L7SCOPE_KAFKA_GROUP=f"alerting-{uuid.uuid4().hex[:6]}",
            L7SCOPE_EXPORT_RECORDS_TOPIC="on",
            # The replicas get the rules too (one config for all): they must leave them to the evaluator.
            L7SCOPE_EXPORT_ALERT_RULES=str(rules),
            L7SCOPE_EXPORT_ALERTMANAGER_URL=am_url,
        )
        replicas = start_group(2, env, lambda i: ["--export", f"jsonl:{outs[i]}"], PARTITIONS)
        evaluator = L7scopeProcess(
            "alerts", "evaluate", "--rules", str(rules), "--alertmanager", am_url, "--lateness", "3",
            "--group", f"alerts-{uuid.uuid4().hex[:6]}", "--export", f"prometheus:127.0.0.1:{metrics_port}",
            env=env, ready=None,
        )  # fmt: skip
        try:
            assert wait_for(lambda: assigned(evaluator) is not None, 60, every_s=0.5), evaluator.lines
            durations = [2.0 if i % 4 == 0 else 300.0 for i in range(EXCHANGES)]  # 3 in 4 slow
            publish_traffic(kafka_bootstrap, fragments, time.time_ns(), durations)

            def fired() -> bool:
                return any(a["labels"]["alertname"] == "HttpdSlow" for a in posted)

            assert wait_for(fired, 60, every_s=0.5), "".join(evaluator.lines[-20:])
            time.sleep(5)  # five more evaluations: a second notification would show by now
            # A slow exchange from ten minutes ago (a source that far behind): in no window still
            # evaluated, so counted late, on the evaluator's /metrics, and not in the alert.
            publish_traffic(kafka_bootstrap, fragments, time.time_ns() - 600 * 10**9, [900.0])
            assert wait_for(lambda: late_records(metrics_port) == 1, 30, every_s=0.5)
            assert all(assigned(c) for c in replicas)  # no rebalance happened during the run
        finally:
            evaluator.stop()
            for c in replicas:
                c.stop()
    (alert,) = posted  # once, and nothing from the replicas
    assert alert["labels"] == {"alertname": "HttpdSlow", "severity": "warning", "service": "httpd"}
    assert alert["annotations"]["requests"] == str(EXCHANGES)  # every request of both replicas
    assert "p50 latency of httpd" in alert["annotations"]["summary"]
    ends_at = alert["endsAt"]
    assert ends_at > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())  # firing, not resolved

    per_replica = [httpd_server_records(p) for p in outs]
    assert sum(per_replica) == EXCHANGES + 1, per_replica  # and the late one
    assert all(0 < n < MIN_REQUESTS for n in per_replica), per_replica  # neither alone could fire

    published = [pb.Alert.FromString(value) for _, _, _, value in read_topic(kafka_bootstrap, alerts)]
    assert [(a.rule, a.state, a.labels["service"]) for a in published] == [("HttpdSlow", "firing", "httpd")]

    for c in replicas:
        assert any("not evaluated by `l7scope pipeline`" in m for m in c.messages()), c.lines[-10:]
    stopped = [json.loads(line) for line in evaluator.lines if "alert evaluation stopped" in line]
    assert stopped and stopped[0]["records"] >= EXCHANGES and stopped[0]["alert_records_late"] == 1
    assert evaluator.proc.returncode == 0
    assert time.monotonic() - started < 200


def produce(bootstrap: str, topic: str, tag: str, n: int) -> list[str]:
    """`n` records of services s0..s3 to the records topic as the pipeline writes them; their ids."""
    sink = RecordsSink(config_for(bootstrap, "unused", records=topic).kafka, Health())
    ids = []
    for i in range(n):
        conn = ConnInfo(f"c{i}", Endpoint("10.0.0.1", 40000 + i), Endpoint("10.0.0.2", 80), Role.SERVER,
                        process=f"s{i % 4}")  # fmt: skip
        end = time.time_ns()
        sink.export([L7Record("http", Role.SERVER, "GET /", end - 1_000_000, end, conn, "m",
                              record_id=f"{tag}-{i}")])  # fmt: skip
        ids.append(f"{tag}-{i}")
    sink.flush()
    sink.close()
    return ids


def read_until(source: RecordsSource, want: int, timeout_s: float = 30.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += [r.record_id for r in source.poll()]
    return got


def test_a_member_starts_at_its_commit_but_no_further_back_than_its_windows(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """A new group skips what is older than the longest window (it could alert on nothing now); the
    next member of the group goes on from the offsets committed after the records were applied."""
    topic = kafka_topic(partitions=2, prefix="rec")
    kafka = config_for(kafka_bootstrap, "unused", records=topic).kafka
    group = f"alerts-{uuid.uuid4().hex[:6]}"
    produce(kafka_bootstrap, topic, "old", 10)
    time.sleep(2.0)
    first = RecordsSource(kafka, Health(), group, history_s=1.0)
    try:
        assert read_until(first, 1, timeout_s=8) == []  # assigned, and the old ones skipped
        assert first.assignment == {0, 1}
        new = produce(kafka_bootstrap, topic, "new", 6)
        assert sorted(read_until(first, 6)) == sorted(new)
        assert first.commit()
    finally:
        first.close()
    more = produce(kafka_bootstrap, topic, "more", 3)
    second = RecordsSource(kafka, Health(), group, history_s=3600.0)  # an hour back: the commit wins
    try:
        got = read_until(second, 3)
        got += read_until(second, 1, timeout_s=2)  # nothing else comes
        assert sorted(got) == sorted(more)
    finally:
        second.close()


def test_a_rebalance_empties_the_windows_of_the_member_giving_partitions_up(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=2, prefix="rec")
    kafka = config_for(kafka_bootstrap, "unused", records=topic).kafka
    group = f"alerts-{uuid.uuid4().hex[:6]}"
    resets = [0, 0]
    stop = threading.Event()

    def member(i: int, sources: list[RecordsSource]) -> None:
        def reset() -> None:
            resets[i] += 1

        source = RecordsSource(kafka, Health(), group, history_s=60.0, on_revoked=reset)
        sources.append(source)
        try:
            while not stop.is_set():
                source.poll()
        finally:
            source.close()

    sources: list[RecordsSource] = []
    threads = [threading.Thread(target=member, args=(0, sources), daemon=True)]
    threads[0].start()
    try:
        assert wait_for(lambda: bool(sources) and sources[0].assignment == {0, 1}, 30)
        assert resets == [0, 0]
        threads.append(threading.Thread(target=member, args=(1, sources), daemon=True))
        threads[1].start()

        def split() -> bool:
            return len(sources) == 2 and all(len(s.assignment) == 1 for s in sources)

        assert wait_for(split, 40), [s.assignment for s in sources]
        assert resets[0] >= 1  # the first member gave its partitions up: its windows started empty
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
