"""Rules files: the example validates; every mistake is one line naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alert_rules import RulesError, check_rules, load_rules, parse_duration, parse_rules
from protocols.base import ConnInfo, Endpoint, L7Record, Role

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "alerts.example.yaml"


def test_example_file_is_valid() -> None:
    assert check_rules(str(EXAMPLE)) == []
    rules = load_rules(str(EXAMPLE))
    assert [r.kind for r in rules.rules] == ["latency", "error_ratio", "burn_rate", "latency"]
    assert rules.rules[0].group_by == ("service", "name")
    assert rules.rules[2].burn_windows[0].long_s == 3600 and rules.rules[2].slo == 0.999


@pytest.mark.parametrize(
    ("value", "seconds"), [("500ms", 0.5), ("5s", 5), ("1.5m", 90), ("2h", 7200), (3, 3.0), ("5", None)]
)
def test_durations(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


BAD = """
evaluation_interval: soon
rules:
  - alert: Slow Checkout
    match: {service: 7, role: sideways}
    latency: {percentile: 150, above_ms: 100}
  - alert: Both
    latency: {percentile: 90, above_ms: 1}
    error_ratio: {above: 0.1}
    window: 1m
  - alert: Burn
    burn_rate: {slo: 1.5, windows: [{long: 5m, short: 1h, factor: 2}]}
    labels: {bad-label: x}
    annotations: {summary: "{nope} is high"}
    colour: red
"""


def test_every_mistake_is_one_line_with_key_and_fix() -> None:
    ruleset, errors = parse_rules(BAD)
    assert ruleset is None
    expected = [
        "evaluation_interval: 'soon' is not a duration",
        "rules[0].alert: 'Slow Checkout': give a name",
        "rules[0] (invalid).match.service: 7 must be a string",
        "rules[0] (invalid).match.role: 'sideways': use client or server",
        "rules[0] (invalid).latency.percentile: 150 is not a number between 0 and 100",
        "rules[0] (invalid).window: missing",
        "rules[1] (Both): give exactly one of latency, error_ratio, burn_rate (found latency, error_ratio)",
        "rules[2] (Burn).colour: unknown key",
        "rules[2] (Burn).burn_rate.slo: 1.5 is not a number between 0 and 1",
        "rules[2] (Burn).burn_rate.windows[0].short: must be shorter than long",
        "rules[2] (Burn).labels.bad-label: label names are letters",
        "rules[2] (Burn).annotations.summary: unknown placeholder {nope}",
    ]
    for start in expected:
        assert any(e.startswith(start) for e in errors), (start, errors)
    assert len(errors) == len(expected), errors
    assert all("\n" not in e for e in errors)


def test_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("rules: [\n  - alert: x\n")
    (line,) = check_rules(str(bad))
    assert line.startswith("line ") and "fix the syntax" in line
    (line,) = check_rules(str(tmp_path / "missing.yaml"))
    assert "cannot read" in line and "check the path" in line
    with pytest.raises(RulesError) as e:
        load_rules(str(bad))
    assert e.value.errors == [check_rules(str(bad))[0]]


def test_match_globs_and_attributes() -> None:
    ruleset, errors = parse_rules(
        "rules:\n  - alert: A\n    match: {service: 'py*', role: server, name: 'GET /w*',"
        " attributes: {http.response.status_code: '5*'}}\n    error_ratio: {above: 0.1}\n    window: 1m\n"
    )
    assert errors == [] and ruleset is not None
    match = ruleset.rules[0].match
    local, remote = Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000)
    conn = ConnInfo("c", local, remote, Role.SERVER, process="python3")

    def rec(name: str, status: int, role: Role = Role.SERVER) -> L7Record:
        attrs = {"http.response.status_code": status}
        return L7Record("http", role, name, 0, 1, conn, "m", attributes=attrs)  # type: ignore[arg-type]

    assert match.matches(rec("GET /work", 503))
    assert not match.matches(rec("GET /work", 200))
    assert not match.matches(rec("POST /work", 503))
    assert not match.matches(rec("GET /work", 503, Role.CLIENT))
