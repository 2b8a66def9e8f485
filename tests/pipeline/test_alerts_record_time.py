"""Alert windows in record time: the watermark, lateness, and records too old for any window.

A record counts at the time its exchange happened (its end), not when it reached the evaluator, so an
evaluator or a pipeline replica running behind does not move traffic between windows.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from l7scope.config import Config
from pipeline.alert_rules import parse_rules
from pipeline.alerts import Alert, AlertEvaluator, Window, record_time
from pipeline.records_sink import RecordsSink
from pipeline.run import build_exporters
from probes.health import LOSSES, Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role

T = 1_750_000_000.0  # a wall-clock second (Unix time)

RULES = """
evaluation_interval: 1s
resend_interval: 1h
rules:
  - alert: Slow
    match: {role: server}
    latency: {percentile: 50, above_ms: 100}
    window: 10s
    min_requests: 5
"""


class Clocks:
    """The evaluator's monotonic and wall clocks, moved together by the test."""

    def __init__(self) -> None:
        self.wall = T

    def mono(self) -> float:
        return self.wall - T + 500.0

    def now(self) -> float:
        return self.wall


class Collect:
    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    def notify(self, alerts: list[Alert]) -> None:
        self.sent += [(a.state, a.value) for a in alerts]

    def close(self) -> None:
        pass


def at(t: float, ms: float, service: str = "checkout") -> L7Record:
    """A server exchange of `ms` milliseconds that ended at Unix time `t`."""
    conn = ConnInfo("c", Endpoint("10.0.0.1", 40000), Endpoint("10.0.0.2", 80), Role.SERVER, process=service)
    end = int(t * 1e9)
    return L7Record("http", Role.SERVER, "GET /pay", end - int(ms * 1e6), end, conn, "m")


def evaluator(lateness_s: float = 5.0, rules: str = RULES) -> tuple[AlertEvaluator, Clocks, Collect]:
    ruleset, errors = parse_rules(rules)
    assert ruleset is not None, errors
    clocks, out = Clocks(), Collect()
    ev = AlertEvaluator(ruleset, Health(), [out], clock=clocks.mono, wall=clocks.now, lateness_s=lateness_s)
    return ev, clocks, out


def test_record_time_is_the_end_of_the_exchange() -> None:
    r = at(T, 250)
    assert record_time(r) == pytest.approx(T)
    assert record_time(dataclasses.replace(r, end_ns=0)) == pytest.approx(T - 0.25)


def test_the_watermark_is_the_newest_record_time_minus_lateness_then_the_clock_when_idle() -> None:
    ev, clocks, _ = evaluator(lateness_s=5.0)
    clocks.wall = T + 60
    ev.export([at(T, 1), at(T + 3, 1)])  # an evaluator 57 s behind the records' producers
    assert ev.watermark() == pytest.approx(T + 3 - 5)
    clocks.wall += 4.9  # records may still come: the watermark waits for them
    assert ev.watermark() == pytest.approx(T - 2)
    clocks.wall += 0.2  # nothing for `lateness`: caught up, time goes on with the clock
    assert ev.watermark() == pytest.approx(clocks.wall - 5)


def test_records_ahead_of_the_watermark_count_once_it_passes_them() -> None:
    """Slow records not yet `lateness` old are kept (their window is not forgotten) and fire when the
    watermark reaches them."""
    ev, clocks, out = evaluator(lateness_s=5.0)
    ev.export([at(T - 1, 300) for _ in range(6)])
    assert ev.evaluate() == [] and out.sent == []  # watermark T-5: the records are in its future
    clocks.wall += 5.0  # no more records: the watermark moves to T, past them
    assert [a.state for a in ev.evaluate()] == ["firing"]
    assert out.sent[0][1] == pytest.approx(300, rel=0.05)


def test_a_lagging_evaluator_sees_each_window_as_it_was() -> None:
    """A backlog read at once (the evaluator restarted, or ran behind) keeps its time order: a slow
    10 s then a fast 30 s fire and resolve as they happened, not as one mixed window."""
    ev, clocks, out = evaluator(lateness_s=2.0)
    clocks.wall = T + 300  # five minutes behind
    ev.export([at(T + i / 2, 300) for i in range(20)])  # T .. T+9.5: slow
    assert [a.state for a in ev.evaluate()] == ["firing"]  # watermark T+7.5: the slow window
    ev.export([at(T + 10 + i / 2, 2) for i in range(60)])  # T+10 .. T+39.5: fast
    assert [a.state for a in ev.evaluate()] == ["resolved"]  # watermark T+37.5: fast only
    assert [s for s, _ in out.sent] == ["firing", "resolved"]
    assert ev.health.total("alert_records_late") == 0


def test_a_replica_running_behind_within_lateness_is_in_the_window() -> None:
    """Two pipeline replicas feed one service, one of them 4 s behind (lateness 5 s): its records
    join the other's in the window they belong to; only together do they cross the threshold."""
    ev, clocks, _ = evaluator(lateness_s=5.0)
    for second in range(8):
        clocks.wall = T + second
        ev.export([at(clocks.wall, 2)])  # replica A, on time: a fast request a second
        if second >= 4:
            ev.export([at(clocks.wall - 4, 300)] * 3)  # replica B, 4 s behind: three slow ones a second
    clocks.wall = T + 12  # idle: watermark T+7, the window T-3 .. T+7
    (alert,) = ev.evaluate()
    assert alert.state == "firing" and alert.annotations["description"].endswith("; 20 requests.")
    assert ev.health.total("alert_records_late") == 0


def test_records_older_than_the_window_plus_lateness_are_counted_late_not_binned_as_now() -> None:
    """A replica 40 s behind delivers slow records: they can count in no window still open (10 s +
    5 s of lateness), so they are counted late, per rule, and do not fire a false alert now."""
    ev, clocks, out = evaluator(lateness_s=5.0)
    for second in range(40):
        clocks.wall = T + second
        ev.export([at(clocks.wall, 2)])  # on time, fast
    ev.export([at(T + 1 + i / 10, 900) for i in range(30)])  # 35-39 s old, slow
    assert ev.evaluate() == [] and out.sent == []
    assert ev.health.snapshot()[("alert_records_late", "Slow", "older than window + lateness")] == 30
    assert "alert_records_late" in LOSSES  # in every stop summary and the losses it details
    ev.export([at(clocks.wall - 14, 900)])  # within window + lateness of the watermark: counted
    assert ev.health.total("alert_records_late") == 30


def test_a_record_from_a_clock_ahead_counts_as_now() -> None:
    """An agent whose clock runs an hour ahead must not move the watermark past everyone else."""
    ev, clocks, _ = evaluator(lateness_s=5.0)
    ev.export([at(T + 3600, 300)])
    assert ev.watermark() == pytest.approx(T - 5)
    ev.export([at(T - 1, 300) for _ in range(5)])
    assert ev.health.total("alert_records_late") == 0
    clocks.wall += 5
    (alert,) = ev.evaluate()
    assert alert.state == "firing" and "6 requests" in alert.annotations["description"]


def test_the_ring_refuses_a_slot_it_has_moved_past() -> None:
    ruleset, _ = parse_rules(RULES)
    assert ruleset is not None
    window = Window(ruleset.rules[0], lateness_s=5.0)
    span = len(window.slices) * window.width
    assert span >= 10 + 5  # the window and the lateness ahead of the watermark
    assert window.add(T, at(T, 1))
    assert not window.add(T - span, at(T - span, 1))  # same slot, older: not over the newer slice
    assert window.totals(T, 10).requests == 1


def test_reset_forgets_windows_and_states_without_resolving() -> None:
    ev, clocks, out = evaluator(lateness_s=0.0)
    ev.export([at(T, 300) for _ in range(6)])
    assert [a.state for a in ev.evaluate()] == ["firing"]
    ev.reset()  # the partition moved to another evaluator
    clocks.wall += 1
    assert ev.evaluate() == [] and [s for s, _ in out.sent] == ["firing"]
    ev.export([at(clocks.wall, 300) for _ in range(6)])  # owned again: one window to fire again
    assert [a.state for a in ev.evaluate()] == ["firing"]


def test_for_is_measured_in_record_time() -> None:
    """Catching up a backlog, `for: 5s` is five seconds of the records' time, not of reading them."""
    ev, clocks, _ = evaluator(lateness_s=1.0, rules=RULES.replace("min_requests: 5", "for: 5s"))
    clocks.wall = T + 600
    ev.export([at(T + i / 4, 300) for i in range(8)])  # T .. T+1.75
    assert ev.evaluate() == []  # pending since the watermark T+0.75
    ev.export([at(T + 2 + i / 4, 300) for i in range(21)])  # .. T+7
    assert [a.state for a in ev.evaluate()] == ["firing"]  # watermark T+6: held 5.25 s


def _config(records_topic: str, rules: str) -> Config:
    config = Config(node="test")
    config = dataclasses.replace(config, kafka=dataclasses.replace(config.kafka, bootstrap="127.0.0.1:1"))
    export = dataclasses.replace(
        config.export, otlp=False, live_table=False, records_topic=records_topic, alert_rules=rules,
        alertmanager_url="",
    )  # fmt: skip
    return dataclasses.replace(config, export=export)


@pytest.mark.parametrize(
    ("consuming", "records_topic", "evaluates", "says"),
    [
        (True, "auto", False, "not evaluated by `l7scope pipeline`"),  # scaled out: `alerts evaluate`
        (True, "off", True, "over its own partitions only"),  # no records topic to evaluate on
        (False, "off", True, ""),  # `l7scope run`: in-process, as before
    ],
)
def test_the_pipeline_leaves_alerting_to_the_records_topic(
    tmp_path: object, caplog: pytest.LogCaptureFixture, consuming: bool, records_topic: str,
    evaluates: bool, says: str,
) -> None:  # fmt: skip
    from pathlib import Path

    rules = Path(str(tmp_path)) / "rules.yaml"
    rules.write_text(RULES)
    with caplog.at_level(logging.WARNING, logger="l7scope.run"):
        exporters = build_exporters(_config(records_topic, str(rules)), {}, Health(), consuming=consuming)
    try:
        assert any(isinstance(e, AlertEvaluator) for e in exporters) == evaluates
        warnings = [r.getMessage() for r in caplog.records if r.name == "l7scope.run"]
        if says:
            assert any(says in w for w in warnings), warnings
        else:
            assert warnings == []
    finally:
        for e in exporters:
            e.close(timeout_s=0.5) if isinstance(e, RecordsSink) else e.close()  # no broker: not 10 s
