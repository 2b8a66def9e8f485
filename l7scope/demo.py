"""`l7scope run --demo`: three small HTTP tiers on 127.0.0.1 (a load generator calling a frontend that
calls an API), so there is traffic, a named service for each and a map to see."""

from __future__ import annotations

import os
import subprocess
import sys

SERVER = r"""
import json, sys, time, random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Demo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path.startswith("/api/users/"):
            time.sleep(random.uniform(0.001, 0.02))
            self._reply(200, {"id": self.path.rsplit("/", 1)[1]})
        elif self.path == "/api/slow":
            time.sleep(0.15)
            self._reply(200, {"slow": True})
        elif self.path == "/api/fail":
            self._reply(500, {"error": "demo failure"})
        else:
            self._reply(404, {"error": "not found"})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(201, {"created": True})

server = ThreadingHTTPServer(("127.0.0.1", 0), Demo)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

FRONTEND = r"""
import http.client, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

local = threading.local()  # one keep-alive connection to the API per serving thread

def api(method, path, body=None):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except Exception:
        conn.close()
        local.conn = None
        return 502, b'{"error": "api unreachable"}'

class Frontend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def _relay(self, method, path, body=None):
        status, data = api(method, path, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self._relay("GET", "/api" + self.path[len("/shop"):] if self.path.startswith("/shop/") else self.path)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._relay("POST", "/api/orders", body)

server = ThreadingHTTPServer(("127.0.0.1", 0), Frontend)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

CLIENT = r"""
import http.client, random, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
paths = ["/shop/users/%d" % random.randint(1, 500) for _ in range(20)]
paths += ["/shop/slow", "/shop/fail", "/missing"]
while True:
    try:
        if random.random() < 0.2:
            conn.request("POST", "/shop/orders", body=b"{}", headers={"Content-Type": "application/json"})
        else:
            conn.request("GET", random.choice(paths))
        conn.getresponse().read()
    except Exception:
        conn.close()
    time.sleep(0.05)
"""

# Each tier names itself as an instrumented service would (l7scope reads OTEL_SERVICE_NAME from /proc).
TIERS = (("demo-api", SERVER), ("demo-frontend", FRONTEND), ("demo-loadgen", CLIENT))


def start_demo() -> list[subprocess.Popen[bytes]]:
    """Start the three tiers (load generator -> frontend -> API), each calling the one before it was
    started; the caller stops them (stop_demo)."""
    processes: list[subprocess.Popen[bytes]] = []
    port = ""
    try:
        for name, code in TIERS:
            env = os.environ | {"OTEL_SERVICE_NAME": name}
            proc = subprocess.Popen([sys.executable, "-c", code, port], stdout=subprocess.PIPE, env=env)
            processes.append(proc)
            assert proc.stdout is not None
            if code is not CLIENT:
                port = proc.stdout.readline().decode().strip()
    except BaseException:
        stop_demo(processes)
        raise
    return processes


def stop_demo(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=5)
