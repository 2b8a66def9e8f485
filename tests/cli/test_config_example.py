"""deploy/config.example.toml and docs/configuration.md cannot drift from the config dataclasses."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from l7scope import cli
from l7scope.config import Config, ConfigError, kafka_client_settings, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "config.example.toml"
DOC = ROOT / "docs" / "configuration.md"


def all_keys() -> list[str]:
    """`section.key` for every field of every section, and top-level keys by name."""
    keys = []
    for f in dataclasses.fields(Config):
        kind = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(kind):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(kind)]
        else:
            keys.append(f.name)
    return keys


def test_example_loads_and_equals_the_defaults() -> None:
    assert load(EXAMPLE, {}) == load(None, {})


def test_example_names_every_key() -> None:
    text = EXAMPLE.read_text()
    values = tomllib.loads(text)
    for key in all_keys():
        section, _, name = key.rpartition(".")
        if section:
            assert name in values.get(section, {}), f"{key} is missing from {EXAMPLE.name}"
        else:  # top-level keys whose default depends on the machine appear commented out
            assert re.search(rf"^#? ?{name} = ", text, re.M), f"{key} is missing from {EXAMPLE.name}"


def test_configuration_doc_names_every_key() -> None:
    text = DOC.read_text()
    for key in all_keys():
        assert f"`{key}`" in text, f"{key} is not documented in docs/configuration.md"


def test_env_overrides_and_security_settings_reach_kafka_python(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {
        "L7SCOPE_KAFKA_BOOTSTRAP": "a:9093,b:9093",
        "L7SCOPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "L7SCOPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "L7SCOPE_KAFKA_SASL_PLAIN_USERNAME": "l7scope",
        "L7SCOPE_KAFKA_SASL_PLAIN_PASSWORD": "from-env-only",
        "L7SCOPE_KAFKA_SSL_CAFILE": str(ca),
    }
    settings = kafka_client_settings(load(EXAMPLE, env).kafka)
    assert settings == {
        "bootstrap_servers": ["a:9093", "b:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "l7scope",
        "sasl_plain_password": "from-env-only",
        "ssl_cafile": str(ca),
    }
    # every key is a real keyword of all three kafka-python clients
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(settings) <= set(client.DEFAULT_CONFIG), client


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[kafka]\nsecurity_protocol = 'TLS'\n", {}, "kafka.security_protocol = 'TLS': use PLAINTEXT"),
        ("[kafka]\nsecurity_protocol = 'SASL_SSL'\n", {}, "kafka.sasl_mechanism = '': with SASL_SSL use"),
        (
            "[kafka]\nsecurity_protocol = 'SASL_SSL'\nsasl_mechanism = 'SCRAM-SHA-256'\n",
            {},
            "kafka.sasl_plain_username and kafka.sasl_plain_password are required",
        ),
        (
            "[kafka]\nssl_cafile = '/nonexistent/ca.pem'\n",
            {},
            "kafka.ssl_cafile = '/nonexistent/ca.pem': no such file",
        ),
        ("[kafka]\npartitions = '12'\n", {}, "kafka.partitions must be a number"),
        ("[export]\notlp = 'yes please'\n", {}, "export.otlp must be true or false"),
        ("", {"L7SCOPE_CAPTURE_RING_MIB": "lots"}, "L7SCOPE_CAPTURE_RING_MIB must be a number"),
        ("[kafka]\nbootstrap = 1\n", {}, "kafka.bootstrap must be a string"),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    env: dict[str, str],
    message: str,
) -> None:
    path = tmp_path / "l7scope.toml"
    path.write_text(toml)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(path, env)
    assert cli.main(["--config", str(path), "doctor"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("l7scope: configuration: ") and message in err[0], err
