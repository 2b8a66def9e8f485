"""Latency and error alerting on the records stream: bounded per-rule windows, evaluated on a timer.

Each rule keeps, per group (service, plus its `group_by` fields), a ring of time slices holding
counts and a log-bucketed latency histogram, so memory does not grow with traffic. Alerts go to
Alertmanager's v2 API (firing, re-sent while firing, then resolved), to the alerts topic as the
protobuf `Alert`, and to the log.

Time is the records' own (their end, Unix time), not their arrival: a record lands in the slice of
when the exchange happened, however late it reached the evaluator. The windows are evaluated at the
watermark, the newest record time seen minus `lateness_s` (the wall clock minus `lateness_s` once no
record has come for that long), so records up to `lateness_s` late are all in the window when it is
evaluated; older ones still count in the windows that cover them, and records older than the
watermark minus a rule's window can count in nothing and are counted as `alert_records_late`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.alert_rules import Rule, RuleSet, field_value
from pipeline.exporter import Exporter
from pipeline.health import Health
from pipeline.latency_buckets import bucket_of, percentile_ms
from pipeline.root_cause import CallHistory
from protocols.base import L7Record

log = logging.getLogger("l7scope.alerts")

SLICES_PER_SHORTEST = 10  # slices per shortest window of a rule
MAX_SLICES = 720
MAX_GROUPS_PER_RULE = 1000
EMBEDDED_LATENESS_S = 2.0  # `l7scope run`/`replay`: records reach the evaluator in-process, ~at once
GroupKey = tuple[str, ...]


def record_time(r: L7Record) -> float:
    """When the exchange happened, in Unix seconds: its response's last byte (else its first byte)."""
    return (r.end_ns or r.start_ns) / 1e9


@dataclass(slots=True)
class Slice:
    index: int  # time slot number: int(t / width)
    requests: int = 0
    errors: int = 0
    bad: int = 0  # an error, or slower than the rule's slow_ms (the burn-rate SLI)
    latency: Counter[int] = field(default_factory=Counter)


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    bad: int = 0
    latency: Counter[int] = field(default_factory=Counter)

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.latency, q)


class Window:
    """A ring of time slices covering a rule's longest window, plus `lateness_s` ahead of the
    watermark (records newer than it wait there until the watermark passes them)."""

    def __init__(self, rule: Rule, lateness_s: float = 0.0) -> None:
        self.rule = rule
        self.width = rule.shortest_s / SLICES_PER_SHORTEST
        span = rule.horizon_s + lateness_s
        slots = math.ceil(span / self.width) + 2
        if slots > MAX_SLICES:  # very long windows: coarser slices
            self.width = span / (MAX_SLICES - 2)
            slots = MAX_SLICES
        self.slices: list[Slice | None] = [None] * slots
        self.keep_latency = rule.kind == "latency"

    def add(self, t: float, r: L7Record) -> bool:
        """Count `r` in the slice of time `t`; False when the ring has moved past it (too old)."""
        index = int(t / self.width)
        pos = index % len(self.slices)
        s = self.slices[pos]
        if s is not None and s.index > index:
            return False
        if s is None or s.index != index:
            s = self.slices[pos] = Slice(index)
        s.requests += 1
        s.errors += r.error
        ms = r.duration_s * 1000.0
        s.bad += r.error or bool(self.rule.slow_ms and ms > self.rule.slow_ms)
        if self.keep_latency:
            s.latency[bucket_of(ms)] += 1
        return True

    def totals(self, now: float, seconds: float) -> Totals:
        newest = int(now / self.width)
        oldest = newest - max(1, round(seconds / self.width)) + 1
        t = Totals()
        for s in self.slices:
            if s is not None and oldest <= s.index <= newest:
                t.requests += s.requests
                t.errors += s.errors
                t.bad += s.bad
                if self.keep_latency:
                    t.latency.update(s.latency)
        return t

    def empty(self, now: float) -> bool:
        """Nothing in the rule's horizon at `now`, nor waiting ahead of it."""
        oldest = int(now / self.width) - max(1, round(self.rule.horizon_s / self.width)) + 1
        return not any(s is not None and s.index >= oldest and s.requests for s in self.slices)


@dataclass(frozen=True, slots=True)
class Measure:
    active: bool  # the condition holds
    value: float
    value_text: str
    threshold_text: str
    requests: int


def measure(rule: Rule, window: Window, now: float) -> Measure:
    if rule.kind == "burn_rate":
        return _burn(rule, window, now)
    t = window.totals(now, rule.window_s)
    if rule.kind == "latency":
        value = t.percentile_ms(rule.percentile / 100) if t.requests else 0.0
        return Measure(
            t.requests >= rule.min_requests and value > rule.threshold,
            value, f"{value:.1f} ms", f"{rule.threshold:g} ms", t.requests,
        )  # fmt: skip
    value = t.errors / t.requests if t.requests else 0.0
    return Measure(
        t.requests >= rule.min_requests and value > rule.threshold,
        value, f"{value * 100:.2f}%", f"{rule.threshold * 100:g}%", t.requests,
    )  # fmt: skip


def _burn(rule: Rule, window: Window, now: float) -> Measure:
    budget = 1.0 - rule.slo
    best, active, requests = 0.0, False, 0
    for w in rule.burn_windows:
        long_t, short_t = window.totals(now, w.long_s), window.totals(now, w.short_s)
        if long_t.requests < rule.min_requests or not short_t.requests:
            continue
        long_burn = long_t.bad / long_t.requests / budget
        short_burn = short_t.bad / short_t.requests / budget
        if long_burn > w.factor and short_burn > w.factor:
            active = True
        best, requests = max(best, long_burn), max(requests, long_t.requests)
    factors = "/".join(f"{w.factor:g}x" for w in rule.burn_windows)
    return Measure(active, best, f"burn rate {best:.1f}x", factors, requests)


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    state: str  # "firing" or "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float  # wall-clock seconds
    ends_at: float  # when firing: the time Alertmanager should consider it gone if not re-sent
    value: float


class Notifier(Protocol):
    def notify(self, alerts: list[Alert]) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _State:
    since: float  # when the condition started to hold (watermark: record time)
    starts_at: float = 0.0  # wall-clock firing start
    firing: bool = False
    last_sent: float = 0.0  # monotonic


def _label_name(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


class AlertEvaluator(Exporter):
    """Exporter keeping per-rule windows in record time; `evaluate()` runs on its own timer thread
    after `start()`, at the watermark (`watermark()`)."""

    def __init__(
        self,
        ruleset: RuleSet,
        health: Health,
        notifiers: list[Notifier],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        lateness_s: float = 0.0,
    ) -> None:
        self.ruleset = ruleset
        self.health = health
        self.notifiers = notifiers
        self.clock, self.wall = clock, wall
        self.lateness_s = lateness_s
        self._windows: dict[str, dict[GroupKey, Window]] = {r.alert: {} for r in ruleset.rules}
        # What each service served and called, for the root cause of an alert that fires: the alert
        # window and the one before it, at the finest slicing of any rule.
        self._history = CallHistory(
            min((r.shortest_s for r in ruleset.rules), default=60.0) / SLICES_PER_SHORTEST,
            2 * max((r.horizon_s for r in ruleset.rules), default=60.0) + lateness_s,
        )
        self._states: dict[tuple[str, GroupKey], _State] = {}
        self._newest = 0.0  # the newest record time seen (never ahead of the wall clock)
        self._last_arrival = -math.inf  # monotonic time of the last records
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AlertEvaluator:
        self._thread = threading.Thread(target=self._loop, name="l7scope-alerts", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.ruleset.evaluation_interval_s):
            try:
                self.evaluate()
            except Exception:  # one bad round must not end alerting
                log.exception("alert evaluation failed")
                self.health.count("alert_evaluation_failed", "alerts")

    def export(self, records: list[L7Record]) -> None:
        if not records:
            return
        wall = self.wall()
        # A record stamped ahead of this clock (a skewed agent) counts as now: it must not carry the
        # watermark past the other records.
        times = [min(record_time(r) or wall, wall) for r in records]
        late: Counter[str] = Counter()
        with self._lock:
            self._last_arrival = self.clock()
            watermarks = []  # each record is judged by the watermark of the records before it
            for r, t in zip(records, times, strict=True):
                self._newest = max(self._newest, t)
                watermarks.append(self._newest - self.lateness_s)
                self._history.add(t, r)
            for rule in self.ruleset.rules:
                windows = self._windows[rule.alert]
                for r, t, watermark in zip(records, times, watermarks, strict=True):
                    if not rule.match.matches(r):
                        continue
                    if t < watermark - rule.horizon_s:  # it can count in no window any more
                        late[rule.alert] += 1
                        continue
                    key = tuple(field_value(r, g) for g in rule.group_by)
                    window = windows.get(key)
                    if window is None:
                        if len(windows) >= MAX_GROUPS_PER_RULE:
                            self.health.count("alert_groups_dropped", rule.alert)
                            continue
                        window = windows[key] = Window(rule, self.lateness_s)
                    if not window.add(t, r):
                        late[rule.alert] += 1
        for alert, n in late.items():
            self.health.count("alert_records_late", alert, n, reason="older than window + lateness")

    def watermark(self) -> float:
        """The record time the windows are evaluated at: the newest record time seen minus the
        lateness allowance; once no record has come for that long, the wall clock minus it."""
        with self._lock:
            return self._watermark()

    def _watermark(self) -> float:
        if self.clock() - self._last_arrival >= self.lateness_s:  # idle: time goes on without records
            self._newest = max(self._newest, self.wall())
        return self._newest - self.lateness_s

    def reset(self) -> None:
        """Forget every window and alert state (e.g. the records' partitions moved to another
        evaluator): firing alerts are neither re-sent nor resolved from here; Alertmanager lets them
        expire at their endsAt unless their new owner fires them again."""
        with self._lock:
            for windows in self._windows.values():
                windows.clear()
            self._states.clear()

    def evaluate(self) -> list[Alert]:
        """One round: state changes and re-sends, handed to every notifier; returns what was sent."""
        mono, wall = self.clock(), self.wall()
        out: list[Alert] = []
        with self._lock:
            now = self._watermark()
            for rule in self.ruleset.rules:
                windows = self._windows[rule.alert]
                for key, window in list(windows.items()):
                    alert = self._step(rule, key, measure(rule, window, now), now, mono, wall)
                    if alert is not None:
                        out.append(alert)
                    if (rule.alert, key) not in self._states and window.empty(now):
                        del windows[key]  # nothing left to remember for this group
        if out:
            for notifier in self.notifiers:
                notifier.notify(out)
        return out

    def _step(
        self, rule: Rule, key: GroupKey, m: Measure, now: float, mono: float, wall: float
    ) -> Alert | None:
        """`now`: the watermark (`for` is record time); `mono`: for re-sends; `wall`: for Alertmanager."""
        state = self._states.get((rule.alert, key))
        if not m.active:
            if state is None:
                return None
            del self._states[(rule.alert, key)]
            return self._alert(rule, key, m, "resolved", state.starts_at, wall, now) if state.firing else None
        if state is None:
            state = self._states[(rule.alert, key)] = _State(since=now)
        if not state.firing and now - state.since >= rule.for_s:
            state.firing, state.starts_at, state.last_sent = True, wall, mono
        elif state.firing and mono - state.last_sent >= self.ruleset.resend_interval_s:
            state.last_sent = mono
        else:
            return None
        # Alertmanager drops an alert not re-sent by endsAt, so a stopped l7scope does not leave it firing.
        ends_at = wall + 4 * self.ruleset.resend_interval_s
        return self._alert(rule, key, m, "firing", state.starts_at, ends_at, now)

    def _alert(
        self, rule: Rule, key: GroupKey, m: Measure, state: str, starts_at: float, ends_at: float, now: float
    ) -> Alert:
        group = dict(zip(rule.group_by, key, strict=True))
        labels = {"alertname": rule.alert, "severity": "warning"}
        labels |= {_label_name(k): v for k, v in group.items()} | dict(rule.labels)
        labels["service"] = group["service"]
        what = {"latency": f"p{rule.percentile:g} latency", "error_ratio": "error ratio"}.get(
            rule.kind, "SLO burn rate"
        )
        scope = " ".join(v for k, v in group.items() if k != "service" and v)
        values = {
            "alertname": rule.alert, "value": m.value, "value_text": m.value_text,
            "threshold": rule.threshold, "threshold_text": m.threshold_text, "requests": m.requests,
            "window": f"{rule.window_s:g}s", "percentile": f"{rule.percentile:g}",
            **{f: "" for f in ("protocol", "role", "name", "node")}, **group,
        }  # fmt: skip
        annotations = {
            "summary": f"{rule.alert}: {what} of {group['service']}{' ' + scope if scope else ''} is "
            f"{m.value_text} (threshold {m.threshold_text})",
            "description": f"{what} of {group['service']}{' (' + scope + ')' if scope else ''} over the "
            f"last {_window_text(rule)} is {m.value_text}, threshold {m.threshold_text}; "
            f"{m.requests} requests.",
        }
        values["root_cause"] = ""
        if state == "firing":
            latency = rule.kind == "latency" or (rule.kind == "burn_rate" and bool(rule.slow_ms))
            kind = "latency" if latency else "errors"
            cause = self._history.explain(group["service"], kind, now, rule.window_s)
            values["root_cause"] = annotations["root_cause"] = cause.summary()
            annotations["root_cause_evidence"] = cause.evidence()
        for name, template in rule.annotations:
            annotations[name] = template.format_map(values)
        return Alert(rule.alert, state, labels, annotations, starts_at, ends_at, m.value)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for notifier in self.notifiers:
            notifier.close()


def _window_text(rule: Rule) -> str:
    if rule.kind != "burn_rate":
        return f"{rule.window_s:g}s"
    return ", ".join(f"{w.long_s:g}s/{w.short_s:g}s" for w in rule.burn_windows)


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertmanagerNotifier:
    """POST /api/v2/alerts; failures are logged and counted, never raised into the evaluator."""

    def __init__(self, url: str, health: Health, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.health = health
        self.timeout_s = timeout_s

    def notify(self, alerts: list[Alert]) -> None:
        body = json.dumps([self.payload(a) for a in alerts]).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
            self.health.count("alerts_sent", "alertmanager", len(alerts))
        except (urllib.error.URLError, OSError) as e:
            self.health.count("alerts_failed", "alertmanager", len(alerts), reason=type(e).__name__)
            log.warning("cannot send %d alerts to %s: %s", len(alerts), self.url, e)

    @staticmethod
    def payload(a: Alert) -> dict[str, Any]:
        return {
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": rfc3339(a.starts_at),
            "endsAt": rfc3339(a.ends_at),
        }

    def close(self) -> None:
        pass


class LogNotifier:
    def notify(self, alerts: list[Alert]) -> None:
        for a in alerts:
            level = logging.WARNING if a.state == "firing" else logging.INFO
            log.log(level, "alert %s %s: %s", a.rule, a.state, a.annotations.get("summary", ""))

    def close(self) -> None:
        pass


class KafkaAlertNotifier:
    """The protobuf `Alert` on the alerts topic, keyed by service; bounded and counted like records."""

    def __init__(self, kafka: Any, health: Health, **producer_overrides: Any) -> None:
        from pipeline.bounded_send import KafkaSender

        self.sender = KafkaSender(
            kafka, kafka.alerts_topic, health, unit="alerts", client_id="l7scope-alerts", **producer_overrides
        )

    def notify(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.sender.send(a.labels.get("service", "").encode(), encode_alert(a))

    def close(self) -> None:
        self.sender.close()


def encode_alert(a: Alert) -> bytes:
    from proto import records_pb2 as pb

    return pb.Alert(
        schema_version=1, rule=a.rule, state=a.state, labels=a.labels, annotations=a.annotations,
        starts_at_ns=int(a.starts_at * 1e9), ends_at_ns=int(a.ends_at * 1e9), value=a.value,
    ).SerializeToString()  # fmt: skip


def build_alerting(
    rules_path: str,
    alertmanager_url: str,
    health: Health,
    kafka: Any = None,
    lateness_s: float = EMBEDDED_LATENESS_S,
) -> AlertEvaluator:
    """Rules file -> a started evaluator with the log, Alertmanager (if a URL) and Kafka (if given)."""
    from pipeline.alert_rules import load_rules

    notifiers: list[Notifier] = [LogNotifier()]
    if alertmanager_url:
        notifiers.append(AlertmanagerNotifier(alertmanager_url, health))
    if kafka is not None:
        notifiers.append(KafkaAlertNotifier(kafka, health))
    return AlertEvaluator(load_rules(rules_path), health, notifiers, lateness_s=lateness_s).start()
