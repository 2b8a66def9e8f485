"""Errors a user can hit end in one line that says what to do, and a non-zero exit."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l7scope import cli
from l7scope.config import NOT_CONFIG_VARIABLES, config_variables
from probes import kernel_headers
from tests.support.l7scope_proc import NOBODY, run_l7scope

ROOT = Path(__file__).resolve().parents[2]


def l7scope_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return run_l7scope(*args, prefix=NOBODY)


@pytest.mark.parametrize("command", ["run", "agent"])
def test_without_root_one_line_and_non_zero(command: str) -> None:
    done = l7scope_as_nobody(command, "--duration", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("l7scope: ") and "root" in lines[0]


def test_without_btf_or_headers_one_line_and_non_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # This kernel has BTF, so its absence is simulated: no BTF file, no build tree, an empty cache.
    monkeypatch.setattr(kernel_headers, "BTF_PATH", tmp_path / "no-btf")
    monkeypatch.setattr(kernel_headers, "build_tree", lambda release=None: tmp_path / "no-build")
    monkeypatch.setenv("L7SCOPE_CAPTURE_HEADER_CACHE", str(tmp_path / "cache"))
    assert cli.main(["run", "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("l7scope: no kernel headers") and "BTF" in err[0]


def test_unreachable_kafka_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.kafka_broker import free_port

    monkeypatch.setenv("L7SCOPE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    assert cli.main(["pipeline", "--duration", "1"]) == 3  # unreachable dependency
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("l7scope: cannot reach Kafka: no broker answers at 127.0.0.1:"), err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[capture]\nring_mb = 4\n", "unknown key capture.ring_mb"),
        ("[capture]\nring_mib = 'big'\n", "capture.ring_mib must be a number"),
        ("[capture]\nring_mib = 3\n", "capture.ring_mib = 3: use a power of two"),
        ("[nonsense]\n", "unknown key nonsense"),
        ("not toml [", "is not valid TOML"),
    ],
)
def test_bad_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str
) -> None:
    path = tmp_path / "l7scope.toml"
    path.write_text(toml)
    assert cli.main(["--config", str(path), "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# -- every ordinary mistake: one line naming the problem and the fix, exit code 2, before capture ---


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without l7scope's or OpenTelemetry's variables (but the test set-up's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
    return env | {k: v for k, v in os.environ.items() if k in NOT_CONFIG_VARIABLES} | extra


def l7scope_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_l7scope(*args, env=env or clean_env())


def assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit code 2, one `l7scope: ` line on stderr with every `expected` part, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("l7scope: "), done.stderr
    assert "Traceback" not in done.stderr
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port another socket is listening on (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    done = l7scope_cli("--config", str(tmp_path), "run", "--duration", "1")
    assert_one_line(done, f"config file {tmp_path} is a directory", "name a TOML file")


def test_jsonl_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "records.jsonl"
    done = l7scope_cli("run", "--duration", "1", "--export", f"jsonl:{path}")
    assert_one_line(done, f"directory {path.parent} does not exist", "create it or choose another path")


def test_jsonl_to_a_directory(tmp_path: Path) -> None:
    done = l7scope_cli("run", "--duration", "1", "--export", f"jsonl:{tmp_path}")
    assert_one_line(done, f"{tmp_path} is a directory", "name a file to write")


def test_jsonl_to_a_fifo_and_to_a_socket(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = l7scope_cli("run", "--duration", "1", "--export", f"jsonl:{fifo}")
    assert_one_line(done, f"{fifo} is a FIFO", "name a file to write")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        done = l7scope_cli("run", "--duration", "1", "--export", f"jsonl:{tmp_path / 'sock'}")
    assert_one_line(done, "sock is a socket", "name a file to write")


def test_prometheus_port_in_use(listening_port: int) -> None:
    done = l7scope_cli("run", "--duration", "1", "--export", f"prometheus:127.0.0.1:{listening_port}")
    assert_one_line(done, f"port {listening_port} on 127.0.0.1 is in use", "choose a free one")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:99999", "port 0 to 65535"),
        ("9464", "no host: use host:port such as 127.0.0.1:9464"),
        ("192.0.2.1:9464", "192.0.2.1 is not an address of this machine: use 127.0.0.1"),
    ],
)
def test_prometheus_bad_address(address: str, expected: str) -> None:
    done = l7scope_cli("run", "--duration", "1", "--export", f"prometheus:{address}")
    assert_one_line(done, f"export.prometheus = {address!r}", expected)


def test_alerts_check_on_a_binary_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(bytes(range(256)) * 4)
    done = l7scope_cli("alerts", "check", str(rules))
    assert_one_line(done, f"{rules} is not a text file", "name a YAML rules file")


@pytest.mark.parametrize(
    ("map_out", "expected"),
    [
        ("/proc/l7scope-map.svg", "cannot create files in /proc"),  # root cannot either
        ("/nonexistent-dir/map.svg", "directory /nonexistent-dir does not exist"),
    ],
)
def test_unwritable_map_out_is_found_before_capture(map_out: str, expected: str) -> None:
    started = time.monotonic()
    done = l7scope_cli("run", "--duration", "30", "--no-table", "--map-out", map_out)
    assert_one_line(done, f"--map-out {map_out}", expected)
    assert time.monotonic() - started < 20  # not after the 30 s capture


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("L7SCOPE_KAFKA_BOOTSTRAPP", "kafka:9092", "did you mean L7SCOPE_KAFKA_BOOTSTRAP?"),
        ("L7SCOPE_CAPTURE_MAXCPU", "1", "did you mean L7SCOPE_CAPTURE_MAX_CPU?"),
        ("L7SCOPE_NONSENSE", "1", "see docs/configuration.md"),
    ],
)
def test_misspelled_variable_is_rejected(variable: str, value: str, expected: str) -> None:
    done = l7scope_cli("run", "--duration", "1", env=clean_env(**{variable: value}))
    assert_one_line(done, f"unknown variable {variable}", expected)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("L7SCOPE_CAPTURE_MAX_CPU", "nan", "L7SCOPE_CAPTURE_MAX_CPU must be a finite number"),
        ("L7SCOPE_CAPTURE_MAX_CPU", "inf", "L7SCOPE_CAPTURE_MAX_CPU must be a finite number"),
        ("L7SCOPE_CAPTURE_MAX_CPU", "-0.5", "capture.max_cpu = -0.5"),
        ("L7SCOPE_PIPELINE_IDLE_SECONDS", "-1", "pipeline.idle_seconds = -1.0: must be positive"),
        ("L7SCOPE_PIPELINE_IDLE_SECONDS", "inf", "L7SCOPE_PIPELINE_IDLE_SECONDS must be a finite number"),
        ("L7SCOPE_EXPORT_REFRESH_SECONDS", "0", "export.refresh_seconds = 0.0: must be positive"),
        ("L7SCOPE_PIPELINE_MAX_BUFFERED_MIB", "-64", "pipeline.max_buffered_mib = -64: must be positive"),
        ("L7SCOPE_KAFKA_MAX_BUFFER_MIB", "-1", "kafka.max_buffer_mib = -1: must be positive"),
        ("L7SCOPE_PIPELINE_NICE", "-5", "pipeline.nice = -5: use 0"),
        ("L7SCOPE_CAPTURE_ONLY_PORTS", "80,70000", "70000 is out of range: use 1 to 65535"),
        ("L7SCOPE_CAPTURE_RING_MIB", "8192", "capture.ring_mib = 8192: use a power of two from 1 to 2048"),
        ("L7SCOPE_EXPORT_FILE_MODE", "0777", "export.file_mode = '0777'"),
    ],
)
def test_nonsense_numbers_are_rejected(variable: str, value: str, expected: str) -> None:
    done = l7scope_cli("run", "--duration", "1", env=clean_env(**{variable: value}))
    assert_one_line(done, expected)


def test_nan_in_the_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "l7scope.toml"
    path.write_text("[pipeline]\nidle_seconds = nan\n")
    done = l7scope_cli("--config", str(path), "run", "--duration", "1")
    assert_one_line(done, "pipeline.idle_seconds must be a finite number")


@pytest.mark.parametrize("value", ["12345678", '["hunter2-secret"]', "true"])
def test_config_type_error_does_not_echo_the_password(tmp_path: Path, value: str) -> None:
    path = tmp_path / "l7scope.toml"
    path.write_text(f"[kafka]\nsasl_plain_password = {value}\n")
    line = assert_one_line(l7scope_cli("--config", str(path), "run", "--duration", "1"),
                           "kafka.sasl_plain_password must be a string", "value not shown")  # fmt: skip
    for secret in ("12345678", "hunter2", "true"):
        assert secret not in line


def test_variables_the_project_sets_are_all_accepted() -> None:
    """Every L7SCOPE_* name in the deployment files, docs and tests either sets a key or is one of
    the set-up's own variables; the manifests' are loaded for real."""
    names: set[str] = set()
    for pattern in ("deploy/**/*", "docs/*.md", "README.md", "tests/**/*.py", "bench/*.py"):
        for file in ROOT.glob(pattern):
            if (
                file != Path(__file__)
                and file.is_file()
                and file.suffix in (".yaml", ".yml", ".md", ".py", ".sh", ".toml", "")
            ):
                text = file.read_text(errors="replace")
                names |= set(re.findall(r"\bL7SCOPE_[A-Z0-9_]*[A-Z0-9]\b", text))
                names -= set(re.findall(r"unknown variable (L7SCOPE_\w+)", text))  # the error, shown
    names -= {"L7SCOPE_EVENTS_H", "L7SCOPE_KCONFIG_H"}  # C include guards
    known = set(config_variables()) | NOT_CONFIG_VARIABLES
    assert names and names <= known, names - known


def test_jsonl_to_a_closed_standard_output() -> None:
    """`l7scope run --export jsonl:- >&-`"""
    done = run_l7scope("run", "--duration", "1", "--export", "jsonl:-", env=clean_env(),
                       stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))  # fmt: skip
    assert_one_line(done, "standard output is closed", "redirect it")
