"""Latency alerting end to end: a real Alertmanager, a Python HTTP service made slow then fast, and
`l7scope run` capturing it with eBPF; the alert fires into Alertmanager with the rule's labels and
is resolved when the service is fast again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_end_to_end import base_env

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"

SERVICE = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

delay = [0.3]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/mode/fast":
            delay[0] = 0.001
        elif self.path == "/work":
            time.sleep(delay[0])
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
"""

RULES = """
evaluation_interval: 1s
resend_interval: 10s
rules:
  - alert: WorkSlow
    match: {role: server, name: "GET /work"}
    group_by: [name]
    latency: {percentile: 90, above_ms: 100}
    window: 5s
    for: 1s
    labels: {severity: page, team: checkout}
    annotations:
      summary: "{service} {name} p{percentile} = {value_text}"
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def alertmanager(work: Path) -> Iterator[str]:
    work.mkdir()
    (work / "am.yml").write_text(
        "route: {receiver: 'null', group_wait: 1s, group_interval: 1s, repeat_interval: 1h}\n"
        "receivers: [{name: 'null'}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(work / "am.log").open("w"), text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("alertmanager did not start:\n" + (work / "am.log").read_text())
                time.sleep(0.1)
        yield url
    finally:
        stop(proc)


@contextmanager
def service(work: Path) -> Iterator[tuple[int, int]]:
    (work / "service.py").write_text(SERVICE)
    proc = subprocess.Popen([sys.executable, str(work / "service.py")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid
    finally:
        stop(proc)


@contextmanager
def l7scope_run(env: dict[str, str], *args: str) -> Iterator[list[str]]:
    """`l7scope run ARGS`, its stderr drained into a list by a thread (a full pipe would block it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "l7scope.cli", "run", "--no-table", *args],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "capturing" in line:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(40) or proc.poll() is not None:
            pytest.fail("l7scope run did not start:\n" + "".join(lines))
        yield lines
    finally:
        stop(proc)


def active_alerts(url: str) -> list[dict]:
    query = urllib.parse.urlencode({"filter": 'alertname="WorkSlow"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=5) as response:
        alerts = json.loads(response.read())
    return [a for a in alerts if a["status"]["state"] == "active"]


def test_latency_rule_fires_into_alertmanager_and_resolves(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    started = time.monotonic()
    with alertmanager(tmp_path / "am") as am_url, service(tmp_path) as (port, _pid):
        env = base_env(L7SCOPE_EXPORT_ALERT_RULES=str(rules), L7SCOPE_EXPORT_ALERTMANAGER_URL=am_url)
        name = "service"  # `python .../service.py`: named by the program its command line runs
        with l7scope_run(env) as log:
            stop_clients = threading.Event()

            def client() -> None:
                while not stop_clients.is_set():
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=5) as r:
                        r.read()

            clients = [threading.Thread(target=client, daemon=True) for _ in range(2)]
            for c in clients:
                c.start()
            try:
                deadline = time.monotonic() + 20
                while not (firing := active_alerts(am_url)) and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert len(firing) == 1, "".join(log)
                labels = firing[0]["labels"]
                assert labels == {
                    "alertname": "WorkSlow", "service": name, "name": "GET /work",
                    "severity": "page", "team": "checkout",
                }  # fmt: skip
                summary = firing[0]["annotations"]["summary"]
                assert summary.startswith(f"{name} GET /work p90 = ") and summary.endswith(" ms")
                assert float(summary.split(" = ")[1].split()[0]) > 250  # the service sleeps 300 ms
                assert "description" in firing[0]["annotations"]

                urllib.request.urlopen(f"http://127.0.0.1:{port}/mode/fast", timeout=5).read()
                fast_at = time.monotonic()
                deadline = fast_at + 20
                while active_alerts(am_url) and time.monotonic() < deadline:
                    time.sleep(0.5)
                # Gone well before the firing alert's endsAt (4 x 10 s): l7scope sent the resolution.
                assert active_alerts(am_url) == [], "".join(log)
                assert time.monotonic() - fast_at < 15
            finally:
                stop_clients.set()
                for c in clients:
                    c.join(timeout=10)
            time.sleep(0.5)
        text = "".join(log)
        assert "alert WorkSlow firing" in text and "alert WorkSlow resolved" in text
    assert time.monotonic() - started < 60
