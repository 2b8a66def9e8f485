"""`l7scope alerts evaluate`: what it cannot start with ends in one line and the documented exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from l7scope import cli
from tests.support.kafka_broker import free_port

GOOD = """
rules:
  - alert: Slow
    latency: {percentile: 90, above_ms: 100}
    window: 1m
"""


@pytest.fixture(autouse=True)
def no_configured_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L7SCOPE_EXPORT_ALERT_RULES", raising=False)
    monkeypatch.setenv("L7SCOPE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing listens there


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_without_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["alerts", "evaluate"]) == 2
    assert "no rules: give --rules FILE or set export.alert_rules" in one_line(capsys)


def test_a_rules_file_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["alerts", "evaluate", "--rules", str(tmp_path / "nope.yaml")]) == 2
    assert one_line(capsys).startswith(f"l7scope: cannot read {tmp_path / 'nope.yaml'}")


def test_a_bad_rules_file_names_the_problem_before_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD.replace("window: 1m", "window: soon"))
    assert cli.main(["alerts", "evaluate", "--rules", str(rules)]) == 2
    assert "rules[0] (Slow).window: 'soon' is not a duration" in one_line(capsys)


def test_unreachable_kafka(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD)
    port = free_port()
    assert cli.main(["alerts", "evaluate", "--rules", str(rules), "--kafka", f"127.0.0.1:{port}"]) == 3
    line = one_line(capsys)
    assert line.startswith(f"l7scope: cannot reach Kafka: no broker answers at 127.0.0.1:{port}"), line


def test_it_writes_no_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD)
    out = tmp_path / "out.jsonl"
    assert cli.main(["alerts", "evaluate", "--rules", str(rules), "--export", f"jsonl:{out}"]) == 2
    assert "it writes no records: use prometheus:HOST:PORT" in one_line(capsys)
    assert not out.exists()
