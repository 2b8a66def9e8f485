"""Real HTTP/1.1 traffic to a local server, turned into the FragmentBatch messages an agent would publish.

`HttpTarget` is the test HTTP server (tests/support/http_server.py) answering `items`;
`Client.exchange()` makes real requests over real sockets and keeps the exact bytes each way, so the
Kafka tests and bench need no kernel capture.
Each exchange becomes two batches (request; response, plus the close on a connection's last one),
the way the agent's 10 ms drain usually splits them.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from probes.fragment import Batch, ConnEvent, Fragment, Io, Source
from protocols.base import ConnInfo, Endpoint, Role
from tests.support.http_server import HttpServer, Reply, Request


def items(request: Request) -> Reply:
    """`item PATH`; 404 for a path ending in /missing."""
    body = f"item {request.path}\n".encode()
    return Reply(404 if request.path.endswith("/missing") else 200, body, (("Content-Type", "text/plain"),))


class HttpTarget(HttpServer):
    """The test server answering `items`, on a free port; a context manager."""

    def __init__(self) -> None:
        super().__init__(items)


@dataclass(slots=True)
class Exchange:
    """One request/response the client made, with its bytes, as the client logged it."""

    conn: ConnInfo
    path: str
    request: bytes
    response: bytes
    send_pos: int
    recv_pos: int
    sent_ns: int
    done_ns: int
    last: bool  # the connection closes after this one


def read_response(sock: socket.socket) -> bytes:
    """One Content-Length-delimited response (no header: no body), head and body as received."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed mid-body")
        body += chunk
    return head + b"\r\n\r\n" + body


@dataclass(slots=True)
class Client:
    """Opens connections to `port`, `per_conn` exchanges each; `log` is what the client did."""

    port: int
    run: str
    per_conn: int = 1
    node: str = "loadgen-node"
    log: list[Exchange] = field(default_factory=list)
    _conns: int = 0

    def connection(self) -> list[Exchange]:
        self._conns += 1
        n = self._conns
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            local = sock.getsockname()
            conn = ConnInfo(
                f"{self.node}/{os.getpid()}/{self.run}-{n}/1", Endpoint("127.0.0.1", local[1]),
                Endpoint("127.0.0.1", self.port), Role.CLIENT, pid=os.getpid(), process="loadgen",
                node=self.node,
            )  # fmt: skip
            done: list[Exchange] = []
            send_pos = recv_pos = 0
            for i in range(self.per_conn):
                path = f"/{self.run}/c{n}/e{i}"
                request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUser-Agent: loadgen\r\n\r\n"
                sent_ns = time.monotonic_ns()
                sock.sendall(request.encode())
                response = read_response(sock)
                done_ns = time.monotonic_ns()
                done.append(Exchange(conn, path, request.encode(), response, send_pos, recv_pos, sent_ns,
                                     done_ns, i == self.per_conn - 1))  # fmt: skip
                send_pos += len(request)
                recv_pos += len(response)
        self.log += done
        return done


def batches(x: Exchange) -> tuple[Batch, Batch]:
    """The two batches an agent publishes for one exchange (the close rides on the last response)."""
    cid, sys_ = x.conn.conn_id, Source.SYSCALL
    req = Fragment(cid, Io.SEND, x.send_pos, len(x.request), x.request, x.sent_ns, 1, sys_)
    resp = Fragment(cid, Io.RECV, x.recv_pos, len(x.response), x.response, x.done_ns, 1, sys_)
    closed = None
    if x.last:
        end = x.send_pos + len(x.request), x.recv_pos + len(x.response)
        closed = ConnEvent(x.conn, x.done_ns, closed=True, send_bytes=end[0], recv_bytes=end[1])
    return Batch(x.conn, [req]), Batch(x.conn, [resp], closed)


def paced(rate_per_s: float, seconds: float) -> Iterator[int]:
    """Yields tick numbers at `rate_per_s` for `seconds` (sleeping between, catching up if late)."""
    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) - start < seconds:
        due = start + i / rate_per_s
        if due > now:
            time.sleep(due - now)
        yield i
        i += 1


def server_end(conn: ConnInfo, process: str = "httpd") -> ConnInfo:
    """The server's end of the client connection `conn`, as an agent tracing both on one node sees it."""
    return ConnInfo(
        f"{conn.conn_id}/server", conn.remote, conn.local, Role.SERVER, pid=conn.pid + 1, process=process,
        node=conn.node,
    )  # fmt: skip


def both_ends(x: Exchange) -> tuple[list[Batch], list[Batch]]:
    """One exchange traced from both ends on one node, as two drains of the agent publish it:
    (the client's request, the server's read of it), then (the server's response, the client's read
    of it); the close of each end rides on its last batch."""
    client_req, client_resp = batches(x)
    server = server_end(x.conn)
    sid, sys_ = server.conn_id, Source.SYSCALL
    req = Fragment(sid, Io.RECV, x.send_pos, len(x.request), x.request, x.sent_ns + 1, 2, sys_)
    resp = Fragment(sid, Io.SEND, x.recv_pos, len(x.response), x.response, x.done_ns - 1, 2, sys_)
    closed = None
    if x.last:
        end = x.recv_pos + len(x.response), x.send_pos + len(x.request)
        closed = ConnEvent(server, x.done_ns - 1, closed=True, send_bytes=end[0], recv_bytes=end[1])
    return [client_req, Batch(server, [req])], [Batch(server, [resp], closed), client_resp]
