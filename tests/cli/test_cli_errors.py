"""Errors a user can hit end in one line that says what to do, and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from l7scope import cli
from probes import kernel_headers

ROOT = Path(__file__).resolve().parents[2]


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def l7scope_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    command = [*NOBODY, sys.executable, "-m", "l7scope.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


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
