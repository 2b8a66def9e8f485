"""Paced HTTP/1.1 load on keep-alive connections, and nginx's own count of the requests it served.

`paced_get` holds a fixed request rate on a few keep-alive connections (raw sockets, one thread: the
load generator stays cheap and its count exact); `nginx_with_status` starts nginx with a second,
`stub_status` server, whose `requests` counter is the server side's count of what was served.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.http_traffic import read_response
from tests.support.kafka_broker import free_port
from tests.support.servers import nginx


@dataclass
class LoadResult:
    responses: int  # complete responses received
    seconds: float  # wall time from the first request to the last response

    @property
    def rate(self) -> float:
        return self.responses / self.seconds if self.seconds > 0 else 0.0


def paced_get(
    port: int, rate: float, seconds: float, connections: int = 4, path: str = "/ok", keep_open: bool = False
) -> tuple[LoadResult, list[socket.socket]]:
    """GET `path` at `rate` per second for `seconds`, round-robin over keep-alive connections.

    Requests follow an absolute schedule (a late one is sent at once, never skipped). Returns the
    result and, with `keep_open`, the still-open sockets (the caller closes them); else they are closed.
    """
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(connections)]
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    total = round(rate * seconds)
    start = time.monotonic()
    done = 0
    try:
        for i in range(total):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sock = socks[i % connections]
            sock.sendall(request)
            read_response(sock)  # a complete response, whatever its status
            done += 1
    finally:
        elapsed = time.monotonic() - start
        if not keep_open:
            for sock in socks:
                sock.close()
    return LoadResult(done, elapsed), socks if keep_open else []


def served_requests(status_port: int) -> int:
    """nginx's `requests` counter (stub_status): every request it served, this one included."""
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/", timeout=10) as resp:
        text = resp.read().decode()
    return int(text.splitlines()[2].split()[2])  # "server accepts handled requests" then the numbers


@contextlib.contextmanager
def nginx_with_status(work_dir: Path) -> Iterator[tuple[int, int]]:
    """nginx (tests.support.servers) plus a stub_status server; yields (port, status port)."""
    status_port = free_port()
    extra = f"server {{ listen 127.0.0.1:{status_port}; location / {{ stub_status; }} }}"
    with nginx(work_dir, http_extra=extra) as port:
        yield port, status_port
