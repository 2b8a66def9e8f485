"""`l7scope run` turns Go crypto/tls traffic into HTTP records on both sides: a Go net/http HTTPS server
running before the agent (found at start-up) and a stripped one started after it (found through exec),
each called by Go clients over HTTP/1.1 and HTTP/2 (ALPN). Every request is recorded once per side,
with its method, path, status, role and process."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.probes.capture_helpers import free_port, stop
from tests.support.go_peers import build_peers
from tests.support.servers import self_signed_cert
from tests.test_end_to_end import base_env, l7scope

pytestmark = pytest.mark.kernel

N = 20  # requests per client


def start_server(binary: Path, port: int, cert: tuple[Path, Path]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(binary), "server", f"127.0.0.1:{port}", str(cert[0]), str(cert[1])],
                            stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def run_client(binary: Path, port: int, proto: str) -> None:
    out = subprocess.run([str(binary), "client", f"https://127.0.0.1:{port}/hello/", str(N), proto],
                         capture_output=True, timeout=60, check=True).stdout.decode()  # fmt: skip
    version = "HTTP/1.1" if proto == "h1" else "HTTP/2.0"
    assert out.count(f"200 {version} hello") == N, out


def records_of(out: Path, port: int, n: int, seconds: float = 60) -> list[dict]:
    """A server port's records once at least n arrived (or after `seconds`), plus a second for extras."""
    deadline = time.monotonic() + seconds
    mine: list[dict] = []
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        mine = [r for r in map(json.loads, lines) if r["server"] == f"127.0.0.1:{port}"]
        if len(mine) >= n:
            time.sleep(1.0)
            break
        time.sleep(0.5)
    lines = out.read_text().splitlines() if out.exists() else []
    return [r for r in map(json.loads, lines) if r["server"] == f"127.0.0.1:{port}"]


def summary(records: list[dict]) -> Counter[tuple[str, str, str, str, int]]:
    return Counter(
        (r["role"], r["process"], r["attributes"]["http.request.method"], r["attributes"]["url.path"],
         r["attributes"]["http.response.status_code"])
        for r in records
    )  # fmt: skip


def expected(process: str) -> Counter[tuple[str, str, str, str, int]]:
    """Two clients (HTTP/1.1 and HTTP/2) each asked /hello/0../hello/N-1: each seen by both sides."""
    return Counter({(role, process, "GET", f"/hello/{i}", 200): 2 for role in ("client", "server")
                    for i in range(N)})  # fmt: skip


def test_go_https_records_both_sides_h1_h2_symbols_and_stripped(tmp_path: Path) -> None:
    peer, stripped, _, _ = build_peers()
    cert = self_signed_cert(tmp_path)
    late = tmp_path / "gostripped"  # a new inode: nothing has probed it before this agent
    late.write_bytes(stripped.read_bytes())
    late.chmod(0o755)
    early_port, late_port = free_port(), free_port()
    out = tmp_path / "records.jsonl"
    env = base_env(L7SCOPE_CAPTURE_ONLY_PORTS=f"{early_port},{late_port}")
    early = start_server(peer, early_port, cert)
    late_server: subprocess.Popen[bytes] | None = None
    try:
        with l7scope("run", "--no-table", "--export", f"jsonl:{out}", env=env) as agent:
            log: list[str] = []
            assert agent.stderr is not None
            reader = threading.Thread(target=lambda: log.extend(iter(agent.stderr.readline, "")), daemon=True)
            reader.start()
            # Found at start-up (the agent logs its probes before it says it is capturing).
            run_client(peer, early_port, "h1")
            run_client(peer, early_port, "h2")
            early_records = records_of(out, early_port, 4 * N)

            late_server = start_server(late, late_port, cert)
            deadline = time.monotonic() + 15
            while not any(f"Go TLS: probing {late}" in line for line in log) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert any(f"Go TLS: probing {late}" in line for line in log), "".join(log)
            run_client(late, late_port, "h2")
            run_client(late, late_port, "h1")
            late_records = records_of(out, late_port, 4 * N)
    finally:
        stop(early)
        if late_server is not None:
            stop(late_server)
    assert summary(early_records) == expected(peer.name), summary(early_records)
    assert summary(late_records) == expected(late.name), summary(late_records)
    for records in (early_records, late_records):
        versions = Counter((r["role"], r["attributes"].get("network.protocol.version")) for r in records)
        assert versions == Counter({("client", "1.1"): N, ("server", "1.1"): N, ("client", "2"): N,
                                    ("server", "2"): N}), versions  # fmt: skip
