"""Alert root cause over a three-tier system (frontend -> api -> mariadbd) in record time."""

from __future__ import annotations

from pipeline.alert_rules import parse_rules
from pipeline.alerts import AlertEvaluator
from pipeline.health import Health
from pipeline.root_cause import CallHistory
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from tests.pipeline.test_alerts import Collect

T0 = 1_000_000.0  # record time of the first window (Unix seconds)
FRONT, API, DB = Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 8001), Endpoint("127.0.0.1", 3306)


def ex(
    service: str, role: Role, local: Endpoint, remote: Endpoint, t: float, ms: float, err: bool
) -> L7Record:
    conn = ConnInfo(f"n/{service}/{role.name}", local, remote, role, process=service, node="n")
    protocol = "mysql" if DB in (local, remote) else "http"
    end = int(t * 1e9)
    return L7Record(protocol, role, "op", end - int(ms * 1e6), end, conn, "m", "500" if err else None)


def request(t: float, db_ms: float = 1.0, api_error: bool = False, own_ms: float = 0.5) -> list[L7Record]:
    """One page: loadgen -> frontend -> api -> mariadbd, each hop adding a little; every end traced
    except loadgen's."""
    api_ms = db_ms + 1.0
    front_ms = api_ms + own_ms
    client = Endpoint("127.0.0.1", 50000)
    return [
        ex("mariadbd", Role.SERVER, DB, Endpoint("127.0.0.1", 50001), t, db_ms, False),
        ex("api", Role.CLIENT, Endpoint("127.0.0.1", 50001), DB, t, db_ms + 0.1, False),
        ex("api", Role.SERVER, API, Endpoint("127.0.0.1", 50002), t, api_ms, api_error),
        ex("frontend", Role.CLIENT, Endpoint("127.0.0.1", 50002), API, t, api_ms + 0.1, api_error),
        ex("frontend", Role.SERVER, FRONT, client, t, front_ms, api_error),
    ]


def history(after: dict[str, object], window_s: float = 10.0) -> CallHistory:
    """A window of normal pages, then a window of pages changed by `after`."""
    h = CallHistory(window_s / 10, 3 * window_s)
    for i in range(100):
        for r in request(T0 + i * window_s / 100):
            h.add(r.end_ns / 1e9, r)
        for r in request(T0 + window_s + i * window_s / 100, **after):  # type: ignore[arg-type]
            h.add(r.end_ns / 1e9, r)
    return h


def test_a_slow_database_two_hops_down_is_named() -> None:
    cause = history({"db_ms": 200.0}).explain("frontend", "latency", T0 + 19.99, 10.0)
    assert [(h.client, h.server) for h in cause.chain] == [("frontend", "api"), ("api", "mariadbd")]
    assert cause.summary() == "the call api -> mariadbd"
    assert cause.chain[-1].before.p99_ms < 2 and cause.chain[-1].after.p99_ms > 190
    assert "frontend served: mean" in cause.evidence() and "api -> mariadbd: mean 1.1 ms" in cause.evidence()


def test_errors_from_the_api_itself_name_the_call_to_it() -> None:
    cause = history({"api_error": True}).explain("frontend", "errors", T0 + 19.99, 10.0)
    assert cause.summary() == "the call frontend -> api"  # api's own calls did not fail
    assert (cause.chain[-1].before.errors, cause.chain[-1].after.errors) == (0, 100)


def test_a_service_slow_on_its_own_is_the_cause() -> None:
    cause = history({"own_ms": 300.0}).explain("frontend", "latency", T0 + 19.99, 10.0)
    assert cause.chain == () and cause.summary() == "frontend itself: no call it made explains the change"


def test_an_address_no_traced_server_named_stays_an_address() -> None:
    h = CallHistory(1.0, 30.0)
    for i in range(20):
        t = T0 + i
        h.add(
            t,
            ex(
                "api",
                Role.CLIENT,
                Endpoint("10.0.0.5", 40000),
                Endpoint("10.0.0.9", 5432),
                t,
                1 + 20 * (i >= 10),
                False,
            ),
        )
        h.add(t, ex("api", Role.SERVER, API, Endpoint("10.0.0.2", 1), t, 2 + 20 * (i >= 10), False))
    assert h.explain("api", "latency", T0 + 19.5, 10.0).summary() == "the call api -> 10.0.0.9:5432"


def test_the_firing_alert_carries_the_root_cause() -> None:
    rules, errors = parse_rules("""
rules:
  - alert: FrontendSlow
    match: {service: frontend, role: server}
    latency: {percentile: 99, above_ms: 100}
    window: 10s
""")
    assert rules is not None, errors
    out = Collect()
    now = [T0]
    ev = AlertEvaluator(rules, Health(), [out], clock=lambda: now[0], wall=lambda: now[0])
    for i in range(200):  # as they happen: a normal window, then one with a slow database
        now[0] = T0 + i * 0.1
        ev.export(request(now[0], db_ms=200.0 if i >= 100 else 1.0))
    now[0] = T0 + 20.5
    (alert,) = ev.evaluate()
    assert alert.state == "firing"
    assert alert.annotations["root_cause"] == "the call api -> mariadbd"
    evidence = alert.annotations["root_cause_evidence"]
    assert "api -> mariadbd: mean " in evidence and "mean 200.1 ms, p99 203.2 ms, 0/90 errors now" in evidence
