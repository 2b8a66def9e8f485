"""Alert root cause end to end: frontend -> api -> MariaDB, captured by `l7scope run` with eBPF.

With `SELECT SLEEP(0.2)` injected into the database tier, the latency alert on the frontend names the
call api -> mariadbd; with errors injected into the API, the error alert on the frontend names the call
frontend -> api. Both fire into a real Alertmanager and are resolved there.
"""

from __future__ import annotations

import http.client
import json
import os
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

from tests.support.servers import app_user, mariadb
from tests.test_alerting_e2e import alertmanager, l7scope_run, stop
from tests.test_end_to_end import base_env

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]
PASSWORD = "cause-pass"

API = """
import sys, threading, pymysql
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB_PORT, PASSWORD = int(sys.argv[1]), sys.argv[2]
mode, local = ["normal"], threading.local()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/mode/"):
            mode[0] = self.path[len("/mode/"):]
            return self.reply(200, b"ok")
        if mode[0] == "error":
            return self.reply(500, b"broken")
        if getattr(local, "db", None) is None:
            local.db = pymysql.connect(host="127.0.0.1", port=DB_PORT, user="app", password=PASSWORD)
        with local.db.cursor() as c:
            c.execute("SELECT SLEEP(%s)", (0.2 if mode[0] == "slow" else 0,))
            c.fetchall()
        self.reply(200, b"data")

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
"""

FRONTEND = """
import http.client, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_PORT, local = int(sys.argv[1]), threading.local()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if getattr(local, "api", None) is None:
            local.api = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=10)
        local.api.request("GET", "/data")
        resp = local.api.getresponse()
        body = resp.read()
        self.send_response(resp.status)
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
  - alert: FrontendSlow
    match: {service: frontend, role: server}
    latency: {percentile: 99, above_ms: 150}
    window: 5s
    min_requests: 20
  - alert: FrontendErrors
    match: {service: frontend, role: server}
    error_ratio: {above: 0.2}
    window: 5s
    min_requests: 5
"""


@contextmanager
def tier(work: Path, name: str, code: str, *args: str) -> Iterator[int]:
    """A Python service that names itself `name` (OTEL_SERVICE_NAME); yields its port."""
    (work / f"{name}.py").write_text(code)
    env = os.environ | {"OTEL_SERVICE_NAME": name}
    proc = subprocess.Popen([sys.executable, str(work / f"{name}.py"), *args], stdout=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        stop(proc)


@contextmanager
def load(port: int, users: int = 4) -> Iterator[None]:
    """Users loading the frontend's page over keep-alive connections, ~50 pages/s each at most."""
    done = threading.Event()

    def user() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not done.is_set():
            conn.request("GET", "/page")
            conn.getresponse().read()
            time.sleep(0.02)
        conn.close()

    threads = [threading.Thread(target=user, daemon=True) for _ in range(users)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        done.set()
        for t in threads:
            t.join(timeout=15)


def alerts(url: str, name: str) -> list[dict]:
    query = urllib.parse.urlencode({"filter": f'alertname="{name}"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=5) as response:
        return [a for a in json.loads(response.read()) if a["status"]["state"] == "active"]


def wait(until: object, seconds: float, log: list[str]) -> None:
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.5)
    assert until(), "".join(log[-30:])  # type: ignore[operator]


def test_alerts_name_the_call_that_explains_them(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with (
        mariadb(tmp_path / "db", app_user(PASSWORD)) as db_port,
        alertmanager(tmp_path / "am") as am,
        tier(tmp_path, "api", API, str(db_port), PASSWORD) as api_port,
        tier(tmp_path, "frontend", FRONTEND, str(api_port)) as front_port,
    ):
        env = base_env(L7SCOPE_EXPORT_ALERT_RULES=str(rules), L7SCOPE_EXPORT_ALERTMANAGER_URL=am)
        with load(front_port), l7scope_run(env) as log:  # warm (connections made) before capture starts

            def mode(name: str) -> None:
                urllib.request.urlopen(f"http://127.0.0.1:{api_port}/mode/{name}", timeout=5).read()

            time.sleep(11)  # two alert windows of normal traffic: the "before" of each alert
            mode("slow")
            wait(lambda: alerts(am, "FrontendSlow"), 30, log)
            (slow,) = alerts(am, "FrontendSlow")
            assert slow["annotations"]["root_cause"] == "the call api -> mariadbd", slow["annotations"]
            assert "api -> mariadbd: mean" in slow["annotations"]["root_cause_evidence"]
            mode("normal")
            wait(lambda: not alerts(am, "FrontendSlow"), 30, log)

            time.sleep(6)  # a window of normal traffic again
            mode("error")
            wait(lambda: alerts(am, "FrontendErrors"), 30, log)
            (errors,) = alerts(am, "FrontendErrors")
            assert errors["annotations"]["root_cause"] == "the call frontend -> api", errors["annotations"]
            mode("normal")
            wait(lambda: not alerts(am, "FrontendErrors"), 30, log)
        text = "".join(log)
    assert "alert FrontendSlow firing" in text and "alert FrontendErrors resolved" in text
