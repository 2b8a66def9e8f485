"""No secret value reaches a log at any verbosity: decoded HTTP/2 headers of traced gRPC calls,
the Kafka SASL password, credentials in the OTLP endpoint URL, secret values in config errors."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from l7scope.logs import setup_logging
from l7scope.redact import redact, redact_url
from tests.support.grpc_echo import echo_server
from tests.support.l7scope_proc import L7scopeProcess, base_env, run_l7scope

ROOT = Path(__file__).resolve().parents[2]
BEARER = "Bearer SECRET-TOKEN-6f1e2d"
API_KEY = "APIKEY-SECRET-9c8b7a"
OTLP_PASSWORD = "OTLP-PASSWORD-5a4b3c"
KAFKA_PASSWORD = "KAFKA-PASSWORD-2d3e4f"
SECRETS = ("SECRET-TOKEN-6f1e2d", "APIKEY-SECRET-9c8b7a", OTLP_PASSWORD, KAFKA_PASSWORD)


def sasl_env() -> dict[str, str]:
    return {
        "L7SCOPE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "L7SCOPE_KAFKA_SASL_MECHANISM": "PLAIN",
        "L7SCOPE_KAFKA_SASL_PLAIN_USERNAME": "l7scope",
        "L7SCOPE_KAFKA_SASL_PLAIN_PASSWORD": KAFKA_PASSWORD,
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpc_records(path: Path, port: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["protocol"] == "grpc" and r["server"].endswith(f":{port}")]


@pytest.mark.kernel
def test_verbose_run_logs_no_header_password_or_url_credentials(tmp_path: Path) -> None:
    """`l7scope -v run` traces gRPC calls carrying authorization and x-api-key, exports spans to an
    endpoint URL with a password (nothing listens there: every export fails and is logged), with a
    SASL password configured: none of the secrets is in its log; the lines that carry them are."""
    records = tmp_path / "records.jsonl"
    env = base_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://l7user:{OTLP_PASSWORD}@127.0.0.1:{closed_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1000",
        **sasl_env(),
    )
    args = ["-v", "run", "--no-table", "--export", f"jsonl:{records}"]
    with L7scopeProcess(*args, env=env, ready_timeout_s=60) as run, echo_server() as port:
        metadata = (("authorization", BEARER), ("x-api-key", API_KEY))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary("/conf.v1.Echo/Unary")
            deadline = time.monotonic() + 30
            while len(grpc_records(records, port)) < 2 and time.monotonic() < deadline:
                assert unary(b"ping", timeout=10, metadata=metadata) == b"pong:ping"
                time.sleep(0.5)
        assert len(grpc_records(records, port)) >= 2  # the headers were decoded (both ends)
        run.wait_for_line("OTLP span export", deadline - time.monotonic())
    text = run.text()
    for secret in SECRETS:
        assert secret not in text, f"{secret} is in the log:\n{text}"
    assert "Traceback" not in text
    assert "l7user:***@127.0.0.1" in text  # the export warning and the metrics line, redacted
    assert records.stat().st_mode & 0o777 == 0o600


def test_verbose_doctor_kafka_does_not_log_the_sasl_password(tmp_path: Path) -> None:
    """kafka-python logs its whole configuration at debug when a client starts (`doctor --kafka`
    starts an admin client once the port accepts): with -v, its debug stays off and the line never
    comes; the password is nowhere in the output. The port accepts and hangs up (a broker that is
    not one), so the client retries for long: the check ends once it has connected."""
    accepted: list[int] = []

    def hang_up(listener: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the listener is closed at the end of the test
            while True:
                listener.accept()[0].close()
                accepted.append(1)

    out = tmp_path / "stdout.log"
    with socket.socket() as listener, out.open("w") as stdout:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=hang_up, args=(listener,), daemon=True).start()
        env = base_env(L7SCOPE_KAFKA_BOOTSTRAP=f"127.0.0.1:{listener.getsockname()[1]}", **sasl_env())
        doctor = L7scopeProcess("-v", "doctor", "--kafka", env=env, ready=None, stdout=stdout)
        try:
            deadline = time.monotonic() + 30
            while len(accepted) < 2 and time.monotonic() < deadline:  # doctor's TCP check, then the client
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            doctor.kill()
    assert len(accepted) >= 2  # the admin client was started with the SASL configuration
    text = out.read_text(errors="replace") + doctor.text()
    assert KAFKA_PASSWORD not in text
    assert "Starting KafkaAdminClient with configuration" not in text


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_config_type_error_hides_the_password_at_any_verbosity(tmp_path: Path, verbose: list[str]) -> None:
    config = tmp_path / "l7scope.toml"
    config.write_text(f'[kafka]\nsasl_plain_password = ["{KAFKA_PASSWORD}"]\n')
    done = run_l7scope(*verbose, "--config", str(config), "run", "--duration", "1", env=base_env())
    assert done.returncode == 2
    assert "kafka.sasl_plain_password must be a string, got a list (value not shown)" in done.stderr
    assert KAFKA_PASSWORD not in done.stderr


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """setup_logging(-v) into a buffer (JSON lines); the logging set-up is restored afterwards."""
    root, saved = logging.getLogger(), logging.getLogger().level
    levels = {name: logging.getLogger(name).level for name in ("l7scope", "kafka", "hpack")}
    out = io.StringIO()
    setup_logging(True, out, json_lines=True)
    yield out
    for handler in [h for h in root.handlers if h.get_name() == "l7scope"]:
        root.removeHandler(handler)
    root.setLevel(saved)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_verbose_is_debug_for_l7scope_only(log_lines: io.StringIO) -> None:
    from hpack import Decoder, Encoder

    logging.getLogger("l7scope.test").debug("own debug line")
    block = Encoder().encode([(":method", "POST"), ("authorization", BEARER), ("x-api-key", API_KEY)])
    assert dict(Decoder().decode(block))["authorization"] == BEARER  # hpack decodes, at debug
    text = log_lines.getvalue()
    assert "own debug line" in text
    assert "hpack" not in text and "SECRET" not in text


def test_every_line_is_redacted_even_if_a_library_is_asked_for_debug(log_lines: io.StringIO) -> None:
    from hpack import Decoder, Encoder

    logging.getLogger("hpack").setLevel(logging.DEBUG)
    logging.getLogger("kafka").setLevel(logging.DEBUG)
    block = Encoder().encode([("authorization", BEARER), ("x-api-key", API_KEY)])
    Decoder().decode(block)
    config = {"bootstrap_servers": ["k:9092"], "sasl_plain_password": KAFKA_PASSWORD}
    logging.getLogger("kafka.admin.client").debug("Starting KafkaAdminClient with configuration: %s", config)
    logging.getLogger("l7scope.otlp").warning(
        "OTLP span export to %s failed", f"http://u:{OTLP_PASSWORD}@c:4318"
    )
    text = log_lines.getvalue()
    assert "(b'authorization', b'***')" in text and "'sasl_plain_password': '***'" in text
    assert "http://u:***@c:4318" in text
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("to http://user:pw@127.0.0.1:4318/v1/traces", "to http://user:***@127.0.0.1:4318/v1/traces"),
        ("clone https://ghp_TOKEN@github.com/x", "clone https://***@github.com/x"),
        ("Authorization: Bearer abc.def-ghi\r\n", "Authorization: Bearer ***\r\n"),
        ("(b'authorization', b'Basic dXNlcjpwdw==')", "(b'authorization', b'***')"),
        ('{"msg": "cfg {\\"ssl_password\\": \\"pw\\"}"}', '{"msg": "cfg {\\"ssl_password\\": \\"***\\"}"}'),
        ("OTEL_EXPORTER_OTLP_HEADERS=api-key=abc,x=1", "OTEL_EXPORTER_OTLP_HEADERS=api-key=***,x=1"),
        ("drained_events=5 ssl_keyfile=/k.pem http://host:80/a@b", "drained_events=5 ssl_keyfile=/k.pem http://host:80/a@b"),
    ],
)  # fmt: skip
def test_redact_shapes(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_redact_url() -> None:
    assert redact_url("http://u:p@h:1/x") == "http://u:***@h:1/x"
    assert redact_url("http://h:1/x") == "http://h:1/x"


def test_top_status_line_is_redacted_too() -> None:
    from l7scope.top import LogTail

    tail = LogTail()
    record = logging.LogRecord(
        "l7scope.otlp", logging.WARNING, "", 0, "export to %s failed", (f"http://u:{OTLP_PASSWORD}@c",), None
    )
    tail.emit(record)
    assert list(tail.lines) == ["warning l7scope.otlp: export to http://u:***@c failed"]
