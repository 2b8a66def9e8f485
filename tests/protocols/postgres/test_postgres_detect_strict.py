"""Detection by content only, strict: PostgreSQL never claims MySQL, HTTP, TLS or Redis bytes, and
their detectors never claim PostgreSQL's; a connection already open is recognised mid-stream."""

from __future__ import annotations

import pytest
from conftest import (
    CANCEL,
    LOGIN_TAIL,
    READY_IDLE,
    REQ,
    RESP,
    SSL_REQUEST,
    auth,
    complete,
    data_row,
    error,
    extended,
    query,
    result,
    startup,
)

from protocols import http1, http2, mysql
from protocols.postgres import SPEC
from protocols.registry import PROTOCOLS

OTHERS = {
    "http GET": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "http POST": b"POST /submit HTTP/1.1\r\nContent-Length: 2\r\n\r\nok",
    "http PUT": b"PUT /x HTTP/1.1\r\n\r\n",
    "http HEAD": b"HEAD / HTTP/1.1\r\n\r\n",
    "http DELETE": b"DELETE /x HTTP/1.1\r\n\r\n",
    "http CONNECT": b"CONNECT a:443 HTTP/1.1\r\n\r\n",
    "http response": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "h2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "tls alert": b"\x15\x03\x03\x00\x02\x02\x28",
    "redis array": b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
    "redis bulk": b"$5\r\nhello\r\n",
    "redis simple": b"+OK\r\n",
    "redis error": b"-ERR unknown command\r\n",
    "redis integer": b":1\r\n",
    "redis inline PING": b"PING\r\n",
    "redis inline SET": b"SET key value\r\n",
    "redis inline QUIT": b"QUIT\r\n",
    "mysql query": b"\x09\x00\x00\x00\x03SELECT 1",
    "mysql query 'Q' length": b"Q\x00\x00\x00\x03" + b"S" * 80,
    "mysql prepare 'P' length": b"P\x00\x00\x00\x16stmt_with_long_name_xx" + b"S" * 60,
    "mysql greeting": b"\x4a\x00\x00\x00\x0a8.0.36\x00" + b"\x01" * 70,
    "mysql greeting 'C' length": b"C\x00\x00\x00\x0a8.0.1\x00" + b"\x01" * 70,
    "mysql greeting 'R' length": b"R\x00\x00\x00\x0a8.0.36\x00" + b"\x01" * 70,
    "mysql ok": b"\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00",
    "zeros": b"\x00" * 64,
    "json": b'{"a": 1, "b": [1, 2, 3]}',
}


@pytest.mark.parametrize("name", sorted(OTHERS))
@pytest.mark.parametrize("direction", [REQ, RESP])
def test_other_protocols_first_bytes_are_not_postgres(name: str, direction: object) -> None:
    data = OTHERS[name]
    assert not SPEC.detect(data, direction)  # type: ignore[arg-type]
    assert SPEC.find_boundary(memoryview(data), direction, 0) is None  # type: ignore[arg-type]


POSTGRES = {
    "startup": (REQ, startup()),
    "ssl request": (REQ, SSL_REQUEST),
    "cancel": (REQ, CANCEL),
    "query": (REQ, query("SELECT 1")),
    "extended": (REQ, extended("SELECT a FROM t WHERE id = $1", b"1")),
    "auth md5": (RESP, auth(5, b"salt")),
    "login tail": (RESP, LOGIN_TAIL),
    "result": (RESP, result(("a",), [(b"1",)]) + READY_IDLE),
    "error": (RESP, error() + READY_IDLE),
}


@pytest.mark.parametrize("name", sorted(POSTGRES))
def test_postgres_first_bytes_are_postgres_only(name: str) -> None:
    direction, data = POSTGRES[name]
    assert SPEC.detect(data, direction)
    for other in (http1.SPEC, http2.SPEC, mysql.SPEC):
        assert not other.detect(data, direction), other.name
    for spec in PROTOCOLS:  # whatever else is registered (e.g. Redis) must not claim it either
        if spec.name != "postgres":
            assert not spec.detect(data, direction), spec.name


def test_weak_messages_alone_are_not_enough() -> None:
    """A lone Sync, ParseComplete or CopyDone is five bytes any binary stream may hold."""
    for direction, data in (
        (REQ, b"S\x00\x00\x00\x04"),
        (RESP, b"1\x00\x00\x00\x04"),
        (RESP, b"c\x00\x00\x00\x04"),
    ):
        assert not SPEC.detect(data, direction)
        assert SPEC.detect(data + READY_IDLE if direction is RESP else data + query("SELECT 1"), direction)


def test_boundary_needs_the_next_message_to_be_plausible() -> None:
    row = data_row(b"abc")
    assert SPEC.find_boundary(memoryview(b"xx" + row + complete("SELECT 1")), RESP, 0) == 2
    # A valid-looking header whose successor is garbage is no boundary.
    assert SPEC.find_boundary(memoryview(b"xx1\x00\x00\x00\x04\xee\xee\xee\xee\xee"), RESP, 0) is None
    # Zero-filled (uncopied) bytes are never a boundary.
    assert SPEC.find_boundary(memoryview(bytes(4096)), RESP, 0) is None
    assert SPEC.find_boundary(memoryview(bytes(4096)), REQ, 0) is None


def test_find_boundary_is_linear_on_candidate_heavy_junk() -> None:
    import time

    junk = memoryview(b"D\x00" * 200_000)
    started = time.perf_counter()
    assert SPEC.find_boundary(junk, RESP, 0) is None
    assert time.perf_counter() - started < 5
