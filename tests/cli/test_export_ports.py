"""The ports l7scope exports to are not traced: their receivers would hand every export back to us."""

from __future__ import annotations

import dataclasses

from l7scope.cli import export_ports
from l7scope.config import Config, KafkaConfig


def config(**export: object) -> Config:
    base = Config(kafka=KafkaConfig(bootstrap="10.0.0.5:9092,kafka-2:9093"))
    return dataclasses.replace(base, export=dataclasses.replace(base.export, **export))


def test_kafka_otlp_and_alertmanager_ports_are_excluded() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
           "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:14318/v1/metrics"}  # fmt: skip
    got = export_ports(config(alert_rules="rules.toml", alertmanager_url="http://am:9093"), env, True)
    assert got == (4317, 9092, 9093, 14318)


def test_only_what_is_exported_to_and_never_a_guessed_default_port() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example"}  # no port: not all of 443
    assert export_ports(config(), env, False) == ()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert export_ports(config(otlp=False, otlp_metrics=False), env, False) == ()
    assert export_ports(config(alertmanager_url="http://am:9093"), {}, False) == ()  # no rules: no alerts
