"""The test HTTP server: keep-alive, chunked replies with trailers, HEAD, bad lengths, a child process."""

from __future__ import annotations

import http.client
import os
import socket

from tests.support.http_server import App, HttpServer, Reply, Request, child_http_server


def hello(request: Request) -> Reply:
    if request.path == "/chunked":
        return Reply(200, chunks=(b"ab", b"cde"), trailers=(("X-Sum", "5"),))
    return Reply(201 if request.method == "POST" else 200, b"%s %s %d" % (
        request.method.encode(), request.path.encode(), len(request.body)))  # fmt: skip


def greeting(word: str) -> App:
    """A factory with an argument, for the child process."""
    return lambda request: Reply(200, f"{word} from {os.getpid()}".encode())


def test_keep_alive_bodies_and_head() -> None:
    with HttpServer(hello) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/a")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, b"GET /a 0")
        peer = conn.sock.getsockname()
        conn.request("POST", "/b", body=b"12345")
        second = conn.getresponse()
        assert (second.status, second.read()) == (201, b"POST /b 5")
        conn.request("HEAD", "/c")
        head = conn.getresponse()
        assert (head.status, head.getheader("Content-Length"), head.read()) == (
            200,
            "9",
            b"",
        )  # the length of "HEAD /c 0"
        assert conn.sock.getsockname() == peer  # one connection throughout
        conn.close()


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_chunked_reply_with_trailers_on_the_wire() -> None:
    with HttpServer(hello) as server:
        out = raw(server.port, b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\nX-Sum: 5\r\n\r\n"


def test_a_negative_content_length_is_answered_as_bodiless_and_the_connection_goes_on() -> None:
    """`Content-Length: -1` made the server read to the end of the connection: the client timed out."""
    with HttpServer(hello) as server:
        out = raw(server.port, b"GET /neg HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
                               b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert out.count(b"HTTP/1.1 200") == 2 and out.endswith(b"GET /next 0")


def test_child_process_serves_a_factory_with_its_arguments() -> None:
    with child_http_server("tests.support.test_http_server:greeting", "hi") as (port, pid):
        assert pid != os.getpid()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == f"hi from {pid}".encode()
        conn.close()
