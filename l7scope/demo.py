"""`l7scope run --demo`: small services on 127.0.0.1 — a load generator calling a frontend that calls an
API that keeps its data in Redis (when `redis-server` is installed) — so there is traffic, a named
service for each, and a map to see."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SERVER = r"""
import json, socket, sys, threading, time, random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REDIS, local = int(sys.argv[1] or 0), threading.local()  # one Redis connection per serving thread

def redis(*args):
    "One command over RESP (the demo needs no client library); its reply line, or None without Redis."
    if not REDIS:
        return None
    sock = getattr(local, "redis", None)
    if sock is None:
        sock = local.redis = socket.create_connection(("127.0.0.1", REDIS), timeout=5)
        local.replies = sock.makefile("rb")
    sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    line = local.replies.readline()
    if line.startswith(b"$") and not line.startswith(b"$-1"):
        line = local.replies.read(int(line[1:]) + 2)[:-2]
    return line

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
            user = self.path.rsplit("/", 1)[1]
            if redis(b"GET", b"user:" + user.encode()) in (None, b"$-1\r\n"):
                time.sleep(random.uniform(0.001, 0.02))  # a slow lookup, then cached
                redis(b"SET", b"user:" + user.encode(), user.encode(), b"EX", b"5")
            self._reply(200, {"id": user})
        elif self.path == "/api/slow":
            time.sleep(0.15)
            self._reply(200, {"slow": True})
        elif self.path == "/api/fail":
            self._reply(500, {"error": "demo failure"})
        else:
            self._reply(404, {"error": "not found"})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        redis(b"INCR", b"orders")
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
    """Start the tiers (load generator -> frontend -> API -> Redis), each calling the one started before
    it; the caller stops them (stop_demo). Without redis-server the API keeps nothing."""
    processes: list[subprocess.Popen[bytes]] = []
    port = ""
    try:
        if shutil.which("redis-server"):
            port = str(free_port())
            processes.append(subprocess.Popen(
                ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", tempfile.gettempdir(), "--logfile", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            wait_for_port(int(port))
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop_demo(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=5)
