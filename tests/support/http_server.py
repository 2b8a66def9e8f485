"""The one HTTP/1.1 test server: an app (`Request` -> `Reply`) served on 127.0.0.1 by http.server.

`HttpServer` serves it from a thread of this process (`with HttpServer(app) as server: server.port`).
Where capture must see the server as another process (its own pid and name), `child_http_server`
serves an app factory named `module:function` from a child Python process:
`python -m tests.support.http_server MODULE:FUNCTION PORT [ARGS...]` prints the port once it listens.
Keep-alive (HTTP/1.1), `Expect: 100-continue` answered, request bodies read by Content-Length, replies
with a Content-Length or chunked (with trailers); a HEAD reply carries the headers of its body only.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Message
    body: bytes
    client_port: int


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()  # Content-Length is added unless given (or `chunks`)
    chunks: tuple[bytes, ...] | None = None  # sent chunked instead of `body`, then `trailers`
    trailers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # close the connection after this reply, unannounced


App = Callable[[Request], Reply]


def _handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

        def _serve(self) -> None:
            length = self.headers.get("Content-Length", "")
            # a body is read when its length is one (a request with a bad length is answered as if bodiless)
            body = self.rfile.read(int(length)) if length.isdigit() and int(length) > 0 else b""
            reply = app(Request(self.command, self.path, self.headers, body, int(self.client_address[1])))
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.chunks is not None:
                self.send_header("Transfer-Encoding", "chunked")
            elif not any(name.lower() == "content-length" for name, _ in reply.headers):
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                for part in [reply.body] if reply.chunks is None else _chunked(reply):
                    self.wfile.write(part)  # one send each, as a server streaming its chunks
            if reply.close:
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    return Handler


def _chunked(reply: Reply) -> list[bytes]:
    parts = [b"%x\r\n%s\r\n" % (len(c), c) for c in reply.chunks or () if c]
    trailers = b"".join(f"{name}: {value}\r\n".encode() for name, value in reply.trailers)
    return [*parts, b"0\r\n" + trailers + b"\r\n"]


class HttpServer:
    """`app` served on 127.0.0.1:`port` (0: a free one) from a thread; each connection in a thread of
    its own unless `threaded` is False (one connection at a time)."""

    def __init__(self, app: App, port: int = 0, threaded: bool = True) -> None:
        server_class = ThreadingHTTPServer if threaded else HTTPServer
        self.server = server_class(("127.0.0.1", port), _handler(app))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="http-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()


def load_app(factory: str, *args: str) -> App:
    """`module:function` called with `args`: the app a child serves."""
    module, _, name = factory.partition(":")
    make: Callable[..., App] = getattr(importlib.import_module(module), name)
    return make(*args)


@contextmanager
def child_http_server(
    factory: str, *args: str, port: int = 0, threaded: bool = True
) -> Iterator[tuple[int, int]]:
    """(port, pid) of a child Python process serving `factory(*args)`; SIGTERM (then SIGKILL) by PID.
    It names itself after the factory (OTEL_SERVICE_NAME: `module:shop` -> `shop`), as l7scope reads."""
    command = [sys.executable, "-m", "tests.support.http_server", factory, str(port), *args]
    if not threaded:
        command.insert(3, "--one-at-a-time")
    env = os.environ | {"OTEL_SERVICE_NAME": service_of(factory)}
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"{factory} did not start: {line!r} (exit code {proc.poll()})")
        yield int(line), proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def service_of(factory: str) -> str:
    """The service.name a child server started with `factory` has."""
    return factory.rpartition(":")[2]


def main(argv: list[str]) -> None:
    threaded = "--one-at-a-time" not in argv
    factory, port, *args = [a for a in argv if a != "--one-at-a-time"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = HttpServer(load_app(factory, *args), int(port), threaded)
    print(server.port, flush=True)
    server.server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
