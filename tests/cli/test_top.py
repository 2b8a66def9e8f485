"""`l7scope top` driven in tmux (a real terminal) while curl talks to nginx: rows, sort keys, q."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from l7scope.top import Row, format_row
from pipeline.live_table import LiveTable
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from tests.support.servers import nginx
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.kernel


def tmux(socket: str, *args: str) -> str:
    done = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10)
    return done.stdout


def traffic(port: int, stop: threading.Event) -> None:
    """Each round: /ok ten times and /missing once (a 404, an error on the client side), kept alive."""
    urls = [f"http://127.0.0.1:{port}/ok"] * 10 + [f"http://127.0.0.1:{port}/missing"]
    command = ["curl", "-s", *[arg for u in urls for arg in ("-o", "/dev/null", u)]]
    while not stop.is_set():
        subprocess.run(command, timeout=10, check=False)
        stop.wait(0.2)


def endpoint_lines(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if "GET /" in line]


def rate(line: str) -> float:
    return float(line.split()[5])  # SERVICE PROTO ROLE METHOD PATH RATE/s ...


def test_top_in_tmux_shows_rates_sorts_and_quits(tmp_path: Path) -> None:
    socket = f"l7scope-test-{uuid.uuid4().hex[:8]}"
    rc_file = tmp_path / "rc"
    cache = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope") + "/headers"
    script = tmp_path / "top.sh"
    script.write_text(
        f"cd {shlex.quote(str(ROOT))}\n"
        f"export L7SCOPE_CAPTURE_HEADER_CACHE={shlex.quote(cache)} TERM=xterm\n"
        "unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT\n"
        f"{shlex.quote(sys.executable)} -m l7scope.cli top 2>{tmp_path}/stderr\n"
        f"echo $? > {rc_file}\n"
    )
    stop = threading.Event()
    with nginx(tmp_path / "nginx") as port:
        tmux(socket, "new-session", "-d", "-x", "200", "-y", "50", "sh", str(script))
        worker = threading.Thread(target=traffic, args=(port, stop), daemon=True)
        try:

            def screen() -> str:
                return tmux(socket, "capture-pane", "-p")

            assert wait_for(lambda: "sorted by rate" in screen(), 60, every_s=0.5), (
                "timed out waiting for the top screen"
            )
            worker.start()

            def both_endpoints_with_rates() -> bool:
                lines = endpoint_lines(tmux(socket, "capture-pane", "-p"))
                return any("/ok" in x and rate(x) > 0 for x in lines) and any("/missing" in x for x in lines)

            assert wait_for(both_endpoints_with_rates, 60, every_s=0.5), (
                "timed out waiting for /ok and /missing rows with non-zero rates"
            )
            by_rate = endpoint_lines(tmux(socket, "capture-pane", "-p"))
            assert "/ok" in by_rate[0], by_rate  # ten times the requests of /missing
            assert all(rate(x) > 0 for x in by_rate if "/ok" in x), by_rate

            tmux(socket, "send-keys", "e")
            assert wait_for(lambda: "sorted by errors" in screen(), 10, every_s=0.5), (
                "timed out: sorted by errors"
            )
            by_errors = endpoint_lines(tmux(socket, "capture-pane", "-p"))
            # curl's side of the 404 is an error (client spans: 4xx is an error); it now leads.
            assert "/missing" in by_errors[0] and "client" in by_errors[0], by_errors
            assert by_errors != by_rate

            tmux(socket, "send-keys", "l")
            assert wait_for(lambda: "sorted by latency" in screen(), 10, every_s=0.5), (
                "timed out: sorted by latency"
            )

            tmux(socket, "send-keys", "q")
            assert wait_for(rc_file.exists, 20, every_s=0.5), "timed out waiting for top to exit after q"
            assert rc_file.read_text().strip() == "0", (tmp_path / "stderr").read_text()
        finally:
            stop.set()
            if worker.is_alive():
                worker.join(timeout=15)
            tmux(socket, "kill-server")


def record(name: str, seconds: float, error: bool = False) -> L7Record:
    conn = ConnInfo(
        "n/1/3/0", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), Role.SERVER, process="web"
    )
    return L7Record(
        "http", Role.SERVER, name, 0, int(seconds * 1e9), conn, "http.server.request.duration",
        error_type="500" if error else None,
    )  # fmt: skip


def test_table_rows_sort_by_key() -> None:
    now = [100.0]
    table = LiveTable(clock=lambda: now[0])
    table.export([record("GET /a", 0.001)] * 20 + [record("GET /b", 0.050, error=True)] * 2)
    now[0] = 102.0
    assert [r.name for r in table.rows("rate")] == ["GET /a", "GET /b"]
    assert [r.name for r in table.rows("errors")] == ["GET /b", "GET /a"]
    assert [r.name for r in table.rows("latency")] == ["GET /b", "GET /a"]
    a = table.rows("rate")[0]
    assert a.rate == pytest.approx(10.0) and a.error_pct == 0 and a.p99_ms == pytest.approx(1.0)
    assert isinstance(a, Row) and "GET /a" in format_row(a)
    now[0] = 200.0  # past the window: no rate, error % falls back to the totals
    b = table.rows("errors")[0]
    assert b.rate == 0 and b.error_pct == 100.0 and b.requests == 2
