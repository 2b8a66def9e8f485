"""Live: processes get the service.name their users know them by, from how they were started.

Real programs under `l7scope run`: a package run with `python -m`, a script run by path, gunicorn
serving `shop.wsgi`, a jar run with `java -jar`, a Node.js `server.js`, and a process that names
itself with OTEL_SERVICE_NAME; nginx keeps its process name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.kafka_broker import free_port
from tests.support.l7scope_proc import L7scopeProcess
from tests.support.servers import nginx
from tests.test_end_to_end import base_env

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
# Clients stay a second after their call: a service outlives its connections, and a process that has
# exited before the agent reads /proc keeps the name the kernel gave (docs/attributes.md).
GET = """import sys, time, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ok").read()
time.sleep(1)
"""
WSGI = """def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"shop"]
"""
NODE = """require("http").createServer((req, res) => res.end("node")).listen(+process.argv[2], "127.0.0.1",
  () => console.log("listening"));
"""
JAVA = """import java.io.*; import java.net.*;
public class Billing {
  public static void main(String[] a) throws Exception {
    try (Socket s = new Socket("127.0.0.1", Integer.parseInt(a[0]))) {
      s.getOutputStream().write("GET /ok HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n"
        .getBytes());
      s.getInputStream().readAllBytes();
    }
    Thread.sleep(1000);
  }
}
"""


def write_programs(work: Path) -> None:
    (work / "orders").mkdir()
    (work / "orders" / "__main__.py").write_text(GET)
    (work / "app").mkdir()
    (work / "app" / "billing_job.py").write_text(GET)
    (work / "shop").mkdir()
    (work / "shop" / "__init__.py").write_text("")
    (work / "shop" / "wsgi.py").write_text(WSGI)
    (work / "server.js").write_text(NODE)
    (work / "Billing.java").write_text(JAVA)
    subprocess.run(["javac", "Billing.java"], cwd=work, check=True, timeout=120)
    (work / "manifest.txt").write_text("Main-Class: Billing\n")
    subprocess.run(["jar", "cfm", "billing-1.4.2.jar", "manifest.txt", "Billing.class"], cwd=work, check=True)


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def test_processes_are_named_as_their_users_know_them(tmp_path: Path) -> None:
    work = tmp_path / "apps"
    work.mkdir()
    write_programs(work)
    shop_port, node_port, out = free_port(), free_port(), tmp_path / "records.jsonl"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    with nginx(tmp_path / "nginx") as web_port:
        servers = [
            subprocess.Popen([gunicorn, "-w", "1", "-b", f"127.0.0.1:{shop_port}", "shop.wsgi"], cwd=work),
            subprocess.Popen(["node", "server.js", str(node_port)], cwd=work),
        ]
        try:
            for port, proc in zip((shop_port, node_port), servers, strict=True):
                wait_for_port(port, proc)
            ports = ",".join(str(p) for p in (web_port, shop_port, node_port))
            env = base_env(L7SCOPE_CAPTURE_ONLY_PORTS=ports)
            agent = L7scopeProcess("run", "--no-table", "--export", f"jsonl:{out}", env=env, cwd=ROOT)
            try:
                clients = [
                    [sys.executable, "-m", "orders", str(web_port)],
                    [sys.executable, "app/billing_job.py", str(web_port)],
                    ["java", "-jar", "billing-1.4.2.jar", str(web_port)],
                    ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{shop_port}/"],
                    ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{node_port}/"],
                ]
                for argv in clients:
                    subprocess.run(argv, cwd=work, check=True, timeout=60)
                named = os.environ | {"OTEL_SERVICE_NAME": "checkout"}
                subprocess.run([sys.executable, "-c", GET, str(web_port)], env=named, check=True, timeout=60)
                want = {
                    ("client", "orders"), ("client", "billing_job"), ("client", "billing"),
                    ("client", "checkout"), ("server", "nginx"), ("server", "shop"), ("server", "server"),
                }  # fmt: skip
                deadline = time.monotonic() + 20
                got: set[tuple[str, str]] = set()
                while time.monotonic() < deadline and not want <= got:
                    time.sleep(0.5)
                    lines = out.read_text().splitlines() if out.exists() else []
                    got = {(r["role"], r["service"]) for r in map(json.loads, lines)}
            finally:
                agent.stop()
        finally:
            for proc in servers:
                proc.kill()
                proc.wait(timeout=10)
    assert want <= got, sorted(got)
