"""`l7scope run --demo`: a small HTTP service and a client on 127.0.0.1, so there is traffic to see."""

from __future__ import annotations

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

CLIENT = r"""
import http.client, random, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
paths = ["/api/users/%d" % random.randint(1, 500) for _ in range(20)] + ["/api/slow", "/api/fail", "/missing"]
while True:
    try:
        if random.random() < 0.2:
            conn.request("POST", "/api/orders", body=b"{}", headers={"Content-Type": "application/json"})
        else:
            conn.request("GET", random.choice(paths))
        conn.getresponse().read()
    except Exception:
        conn.close()
    time.sleep(0.05)
"""


def start_demo() -> list[subprocess.Popen[bytes]]:
    """Start the demo server and client; the caller terminates them."""
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    assert server.stdout is not None
    port = server.stdout.readline().decode().strip()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, port])
    return [server, client]


def stop_demo(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait(timeout=5)
