"""The evaluator on a controlled clock: pending, firing, re-sent, resolved; windows stay bounded."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.alert_rules import parse_rules
from pipeline.alerts import (
    MAX_SLICES,
    Alert,
    AlertEvaluator,
    AlertmanagerNotifier,
    Window,
    encode_alert,
)
from pipeline.health import Health
from pipeline.latency_buckets import bucket_of, bucket_value_ms
from proto import records_pb2 as pb
from protocols.base import ConnInfo, Endpoint, L7Record, Role

RULES = """
evaluation_interval: 1s
resend_interval: 10s
rules:
  - alert: WorkSlow
    match: {role: server, name: "GET /work"}
    group_by: [name]
    latency: {percentile: 90, above_ms: 100}
    window: 5s
    for: 2s
    labels: {severity: page, team: web}
    annotations: {runbook: "p{percentile} of {service} {name} = {value_text}"}
  - alert: WorkErrors
    match: {role: server}
    error_ratio: {above: 0.2}
    window: 5s
    min_requests: 5
  - alert: WorkBurn
    match: {role: server}
    burn_rate: {slo: 0.99, slow_ms: 100, windows: [{long: 60s, short: 5s, factor: 10}]}
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Collect:
    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def notify(self, alerts: list[Alert]) -> None:
        self.sent += alerts

    def close(self) -> None:
        pass


def rec(ms: float, service: str = "python3", name: str = "GET /work", error: bool = False) -> L7Record:
    conn = ConnInfo("c", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), Role.SERVER, process=service)
    return L7Record("http", Role.SERVER, name, 0, int(ms * 1e6), conn, "m", "500" if error else None)


def feed(ev: AlertEvaluator, records: list[L7Record]) -> None:
    """The records as they happen now: each ends at the evaluator's wall clock."""
    end = int(ev.wall() * 1e9)
    ev.export([dataclasses.replace(r, start_ns=end - (r.end_ns - r.start_ns), end_ns=end) for r in records])


def evaluator(rules: str = RULES) -> tuple[AlertEvaluator, Clock, Collect]:
    ruleset, errors = parse_rules(rules)
    assert ruleset is not None, errors
    clock, out = Clock(), Collect()
    return AlertEvaluator(ruleset, Health(), [out], clock=clock, wall=lambda: clock.t + 1e9), clock, out


def test_bucket_resolution() -> None:
    for ms in (0.05, 1, 99, 100, 250, 5000):
        assert abs(bucket_value_ms(bucket_of(ms)) - ms) / ms < 0.05


def test_latency_rule_pending_firing_resent_resolved() -> None:
    ev, clock, _ = evaluator()
    for _ in range(10):
        feed(ev, [rec(300), rec(250)])
        clock.t += 0.2
    assert [a for a in ev.evaluate() if a.rule == "WorkSlow"] == []  # pending: `for: 2s` not passed
    clock.t += 2.0
    feed(ev, [rec(300)])
    (alert,) = [a for a in ev.evaluate() if a.rule == "WorkSlow"]
    assert alert.state == "firing" and 285 < alert.value < 315
    assert alert.labels == {
        "alertname": "WorkSlow", "service": "python3", "name": "GET /work", "severity": "page", "team": "web",
    }  # fmt: skip
    assert alert.annotations["runbook"].startswith("p90 of python3 GET /work = 3")
    assert "p90 latency of python3 (GET /work) over the last 5s is" in alert.annotations["description"]
    assert alert.ends_at == alert.starts_at + 40  # 4 x resend_interval: expires if l7scope stops
    clock.t += 1
    feed(ev, [rec(300)])
    assert [a.rule for a in ev.evaluate()] == []  # still firing, not re-sent before resend_interval
    clock.t += 3
    feed(ev, [rec(300)] * 3)
    clock.t += 7
    feed(ev, [rec(300)])
    resent = [a for a in ev.evaluate() if a.rule == "WorkSlow"]
    assert [a.state for a in resent] == ["firing"] and resent[0].starts_at == alert.starts_at
    clock.t += 1
    feed(ev, [rec(2)] * 50)  # fast again: the 5 s window still holds slow ones
    clock.t += 5.5
    feed(ev, [rec(2)] * 50)
    (resolved,) = [a for a in ev.evaluate() if a.rule == "WorkSlow"]
    assert resolved.state == "resolved" and resolved.ends_at == clock.t + 1e9
    assert resolved.value < 5


def test_other_routes_and_services_are_separate_groups() -> None:
    ev, clock, _ = evaluator()
    feed(ev, [rec(300, name="GET /other"), rec(300, service="nginx")])
    ev.evaluate()
    clock.t += 3
    feed(ev, [rec(300, name="GET /other"), rec(300, service="nginx")])
    alerts = [a for a in ev.evaluate() if a.rule == "WorkSlow"]
    assert [a.labels["service"] for a in alerts] == ["nginx"]


def test_error_ratio_needs_min_requests() -> None:
    ev, _, _ = evaluator()
    feed(ev, [rec(1, error=True)] * 4)
    assert [a.rule for a in ev.evaluate() if a.rule == "WorkErrors"] == []  # 4 < min_requests
    feed(ev, [rec(1)] * 6)
    (alert,) = [a for a in ev.evaluate() if a.rule == "WorkErrors"]
    assert alert.value == pytest.approx(0.4) and "40.00%" in alert.annotations["summary"]


def test_burn_rate_needs_both_windows() -> None:
    ev, clock, _ = evaluator()
    feed(ev, [rec(150)] * 5 + [rec(1)] * 95)  # 5% bad = burn 5x: below factor 10
    assert [a.rule for a in ev.evaluate() if a.rule == "WorkBurn"] == []
    clock.t += 30
    feed(ev, [rec(150)] * 30 + [rec(1)] * 70)  # long: 35/200 = 17.5x, short: 30%: 30x
    (alert,) = [a for a in ev.evaluate() if a.rule == "WorkBurn"]
    assert alert.value == pytest.approx(17.5) and alert.labels["alertname"] == "WorkBurn"
    clock.t += 10
    feed(ev, [rec(1)] * 100)  # short window healthy again: resolves though the long one burns
    (resolved,) = [a for a in ev.evaluate() if a.rule == "WorkBurn"]
    assert resolved.state == "resolved"


def test_windows_are_bounded() -> None:
    ruleset, _ = parse_rules(
        "rules:\n  - alert: B\n    burn_rate: {slo: 0.9, windows: [{long: 30d, short: 1s, factor: 1}]}\n"
    )
    assert ruleset is not None
    assert len(Window(ruleset.rules[0]).slices) == MAX_SLICES
    ev, clock, _ = evaluator()
    for i in range(1500):
        feed(ev, [rec(1, service=f"s{i}")])
    assert len(ev._windows["WorkBurn"]) == 1000 and ev.health.total("alert_groups_dropped") > 0
    clock.t += 120
    ev.evaluate()
    assert ev._windows["WorkBurn"] == {}  # empty groups are forgotten


def test_alert_protobuf() -> None:
    a = Alert("R", "firing", {"alertname": "R", "service": "s"}, {"summary": "x"}, 10.5, 20.0, 3.0)
    msg = pb.Alert()
    msg.ParseFromString(encode_alert(a))
    assert (msg.rule, msg.state, dict(msg.labels), msg.value) == ("R", "firing", a.labels, 3.0)
    assert msg.starts_at_ns == 10_500_000_000


def test_alertmanager_payload_over_http() -> None:
    got: list[object] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    health = Health()
    try:
        notifier = AlertmanagerNotifier(f"http://127.0.0.1:{server.server_port}/", health)
        notifier.notify([Alert("R", "resolved", {"alertname": "R"}, {"summary": "s"}, 0.0, 1.25, 1.0)])
    finally:
        server.shutdown()
        server.server_close()
    assert got == [("/api/v2/alerts", [{
        "labels": {"alertname": "R"}, "annotations": {"summary": "s"},
        "startsAt": "1970-01-01T00:00:00.000Z", "endsAt": "1970-01-01T00:00:01.250Z",
    }])]  # fmt: skip
    assert health.total("alerts_sent") == 1
    AlertmanagerNotifier("http://127.0.0.1:9", health).notify([Alert("R", "firing", {}, {}, 0.0, 1.0, 1.0)])
    assert health.total("alerts_failed") == 1


def test_the_service_label_is_the_spans_service_name_not_the_process() -> None:
    """A container (or `capture.services`) names the service: spans and RED metrics said `checkout`,
    alerts said `python3`, so a rule matching `checkout*` never fired."""

    from protocols.base import service_name

    rules = RULES.replace('{role: server, name: "GET /work"}', '{service: "checkout*", role: server}')
    ev, clock, _ = evaluator(rules)
    slow = rec(300)
    slow = dataclasses.replace(slow, conn=dataclasses.replace(slow.conn, service="checkout-api"))
    feed(ev, [slow])
    ev.evaluate()
    clock.t += 3
    feed(ev, [slow])
    (alert,) = [a for a in ev.evaluate() if a.rule == "WorkSlow"]
    assert alert.labels["service"] == service_name(slow.conn) == "checkout-api"
