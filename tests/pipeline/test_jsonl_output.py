"""The JSONL and service-map files: created private whatever the umask, a full disk counted (not a
crash) with no half line left behind, and a closed standard output noticed at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from l7scope.outputs import open_private
from pipeline.jsonl import RETRY_S, JsonlExporter
from pipeline.topology import Topology
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from tests.support.http_traffic import HttpTarget
from tests.support.l7scope_proc import L7scopeProcess, base_env

ROOT = Path(__file__).resolve().parents[2]


def record(i: int = 0) -> L7Record:
    conn = ConnInfo(conn_id="c1", local=Endpoint("10.0.0.1", 80), remote=Endpoint("10.0.0.2", 5000 + i),
                    role=Role.SERVER, pid=1, process="app", node="n")  # fmt: skip
    return L7Record(protocol="http", role=Role.SERVER, name=f"GET /item/{i}", start_ns=1, end_ns=2, conn=conn,
                    metric="", attributes={"url.path": f"/item/{i}?token=x"})  # fmt: skip


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def test_files_are_created_0600_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    out = JsonlExporter(str(tmp_path / "records.jsonl"), Health())
    out.export([record()])
    out.close()
    assert (tmp_path / "records.jsonl").stat().st_mode & 0o777 == 0o600
    topology = Topology(str(tmp_path / "map.json"))
    topology.export([record()])
    topology.close()
    assert (tmp_path / "map.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "map.json").read_text())


def test_configured_mode_is_exact_and_an_existing_file_keeps_its_own(tmp_path: Path) -> None:
    old = os.umask(0o077)  # would take the group's read away from a plain open()
    try:
        os.close(open_private(str(tmp_path / "shipped.jsonl"), 0o640))
    finally:
        os.umask(old)
    assert (tmp_path / "shipped.jsonl").stat().st_mode & 0o777 == 0o640
    existing = tmp_path / "existing.jsonl"
    existing.write_text("")
    existing.chmod(0o644)
    JsonlExporter(str(existing), Health()).close()
    assert existing.stat().st_mode & 0o777 == 0o644


def test_full_disk_is_counted_logged_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    health = Health()
    out = JsonlExporter("/dev/full", health, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="l7scope.jsonl"):
        out.export([record(1), record(2)])  # ENOSPC: no exception
        out.export([record(3)])  # within RETRY_S: not tried, counted
        now[0] += RETRY_S + 1
        out.export([record(4)])  # tried again, fails again: still one log line
    out.close()
    assert health.snapshot() == {("export_failed", "jsonl", "ENOSPC"): 4}
    lines = [r.getMessage() for r in caplog.records if r.name == "l7scope.jsonl"]
    assert len(lines) == 1 and "cannot write /dev/full (No space left on device)" in lines[0]


FILE_SIZE_LIMIT = """
import os, resource, signal, sys, json
sys.path.insert(0, {root!r})
from probes.health import Health
from pipeline.jsonl import JsonlExporter
from tests.pipeline.test_jsonl_output import record
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, as ENOSPC on a full disk
path, now, health = {path!r}, [0.0], Health()
out = JsonlExporter(path, health, clock=lambda: now[0])
out.export([record(0)])
size = os.path.getsize(path)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 300, hard))  # room for one record more, not two
out.export([record(1), record(2), record(3)])
after_failure = os.path.getsize(path)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
now[0] += 60
out.export([record(4)])
out.close()
print(json.dumps([size, after_failure, {{"|".join(k): v for k, v in health.snapshot().items()}}]))
"""


def test_a_failed_write_leaves_no_half_line_and_writing_resumes(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    script = FILE_SIZE_LIMIT.format(root=str(ROOT), path=str(path))
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    size, after_failure, counts = json.loads(done.stdout)
    assert after_failure == size  # the partly written batch was cut back
    assert counts == {"export_failed|jsonl|EFBIG": 3}
    names = [json.loads(line)["name"] for line in path.read_text().splitlines()]
    assert names == ["GET /item/0", "GET /item/4"]
    assert "writing " in done.stderr and str(path) in done.stderr  # "... again": one line each way


# -- live: `l7scope run` with a JSONL sink that cannot take the records ------------------------------


def get(port: int, n: int) -> None:
    for i in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/item/{i}", timeout=5) as resp:
            resp.read()


@pytest.mark.kernel
def test_run_on_a_full_disk_goes_on_capturing(tmp_path: Path) -> None:
    args = ("run", "--no-table", "--export", "jsonl:/dev/full")
    with (
        HttpTarget() as target,
        L7scopeProcess(*args, env=base_env(PYTHONPATH=str(ROOT)), ready_timeout_s=60) as run,
    ):
        get(target.port, 5)
        assert run.wait_for_line("cannot write /dev/full", 20), run.text()
        time.sleep(RETRY_S + 1)  # past the retry: the next records are tried again
        get(target.port, 5)
        time.sleep(2)
        assert run.proc.poll() is None  # still capturing
    rc = run.returncode
    text = run.text()
    assert "Traceback" not in text
    assert text.count("cannot write /dev/full") == 1
    stopped = json.loads(next(line for line in text.splitlines() if '"msg": "pipeline stopped: ' in line))
    assert stopped["records"] >= 20  # both rounds, client and server ends, were parsed
    assert rc == 1  # an exporter failed (docs/troubleshooting.md)


@pytest.mark.kernel
def test_closed_stdout_stops_run_promptly(tmp_path: Path) -> None:
    """`l7scope run --export jsonl:- | head -1`: once the reader has gone, the next write stops l7scope."""
    env = base_env(PYTHONPATH=str(ROOT))
    with HttpTarget() as target, L7scopeProcess("run", "--export", "jsonl:-", env=env, stdout=subprocess.PIPE,
                                                ready_timeout_s=60) as run:  # fmt: skip
        proc = run.proc
        try:
            assert proc.stdout is not None
            get(target.port, 1)
            assert json.loads(proc.stdout.readline())["record_id"]  # `head -1` (any traffic on this machine)
            proc.stdout.close()
            closed = time.monotonic()
            deadline = closed + 10
            while proc.poll() is None and time.monotonic() < deadline:
                get(target.port, 1)  # more records: the first write after the close notices
                time.sleep(0.2)
            exited_after = time.monotonic() - closed
        finally:
            if proc.poll() is None:
                run.kill()
            rc = run.wait(30)
    text = run.text()
    assert exited_after < 5, text
    assert "standard output was closed by its reader: stopping" in text
    assert "Traceback" not in text and "BrokenPipeError" not in text
    assert rc == 0  # the reader asked for no more (docs/troubleshooting.md); the rest is counted
