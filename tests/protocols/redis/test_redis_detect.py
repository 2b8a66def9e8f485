"""Detection by content only, strict both ways: Redis is never taken for MySQL, HTTP, TLS, PostgreSQL
or another text protocol, and no other registered protocol takes Redis bytes."""

from __future__ import annotations

import struct

import pytest
from resp_helpers import REQ, RESP, bulk, cmd, loop

from protocols.base import Direction
from protocols.redis import SPEC
from protocols.redis.parse import find_boundary
from protocols.registry import PROTOCOLS
from tests.support.loop import Loop


def mysql_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def pg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body) + 4) + body


OTHER_REQUESTS = {
    "http1 GET": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "http1 GET no version yet": b"GET /index.html",
    "http1 DELETE": b"DELETE /k HTTP/1.1\r\nHost: x\r\n\r\n",
    "http2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    "mysql COM_QUERY": mysql_packet(0, b"\x03SELECT 1"),
    "mysql COM_QUERY 42 bytes": mysql_packet(0, b"\x03SELECT * FROM items WHERE id = 12345678"),
    "mysql handshake response": mysql_packet(1, b"\x85\xa6\xff\x01" + bytes(28) + b"app\x00"),
    "pg startup": struct.pack(">II", 41, 0x00030000) + b"user\x00app\x00database\x00shop\x00\x00",
    "pg ssl request": bytes.fromhex("0000000804d2162f"),
    "pg query": pg(b"Q", b"SELECT 1;\x00"),
    "pg parse": pg(b"P", b"\x00SELECT $1\x00\x00\x00"),
    "pg bind": pg(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00"),
    "pg execute": pg(b"E", b"\x00\x00\x00\x00\x00"),
    "pg sync": pg(b"S", b""),
    "memcached get": b"get foo\r\n",
    "memcached set": b"set foo 0 0 3\r\nbar\r\n",
    "memcached delete": b"delete foo\r\n",
    "smtp helo": b"HELO mail.example.com\r\n",
    "pop3 user": b"USER bob\r\n",
    "pop3 quit": b"QUIT\r\n",
    "imap": b"a001 LOGIN bob secret\r\n",
    "ftp type": b"TYPE I\r\n",
    "zeros": bytes(64),
}
OTHER_RESPONSES = {
    "http1 200": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http2 settings": b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64",
    "tls server hello": b"\x16\x03\x03\x00\x5a\x02\x00\x00\x56\x03\x03" + bytes(32),
    "mysql greeting": mysql_packet(0, b"\x0a8.0.36\x00" + bytes(40)),
    "mysql greeting of 43 bytes ('+')": mysql_packet(0, b"\x0a5.5.5-10.11\x00" + bytes(30)),
    "mysql OK": mysql_packet(1, b"\x00\x00\x00\x02\x00\x00\x00"),
    "mysql ERR": mysql_packet(1, b"\xff\x15\x04#28000Access denied"),
    "pg auth ok": pg(b"R", b"\x00\x00\x00\x00"),
    "pg ssl refused": b"N",
    "pg error": pg(b"E", b"SFATAL\x00C28P01\x00\x00"),
    "pg parameter status": pg(b"S", b"server_version\x0016\x00"),
    "memcached value": b"VALUE foo 0 3\r\nbar\r\nEND\r\n",
    "memcached stored": b"STORED\r\n",
    "smtp greeting": b"220 mail.example.com ESMTP\r\n",
    "pop3 greeting": b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
    "imap greeting": b"* OK IMAP4rev1 Service Ready\r\n",
    "ftp greeting": b"220 FTP server ready\r\n",
    "zeros": bytes(64),
}
REDIS_REQUESTS = [
    cmd("PING"),
    cmd("SET", "k", "v") + cmd("GET", "k"),
    cmd("hello", "3"),
    cmd("SET", "k", "v" * 100_000)[:4096],  # a big value: the head is enough
    b"PING\r\n",
    b"INFO keyspace\r\n",
]
REDIS_RESPONSES = [
    b"+OK\r\n",
    b"+PONG\r\n",
    b"-ERR unknown command 'FOO'\r\n",
    b":1\r\n",
    bulk("hello"),
    b"$-1\r\n",
    b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
    b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n",
    b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
    b"_\r\n",
]


@pytest.mark.parametrize("name", OTHER_REQUESTS)
def test_other_protocols_first_request_bytes_are_not_redis(name: str) -> None:
    data = OTHER_REQUESTS[name]
    assert not SPEC.detect(data, REQ) and not SPEC.detect(data, RESP)
    offset = find_boundary(memoryview(data), REQ, 1)
    assert offset is None or not SPEC.detect(data[offset:], REQ)


@pytest.mark.parametrize("name", OTHER_RESPONSES)
def test_other_protocols_first_response_bytes_are_not_redis(name: str) -> None:
    data = OTHER_RESPONSES[name]
    assert not SPEC.detect(data, RESP) and not SPEC.detect(data, REQ)
    offset = find_boundary(memoryview(data), RESP, 1)
    assert offset is None or not SPEC.detect(data[offset:], RESP)


@pytest.mark.parametrize("data", REDIS_REQUESTS)
def test_redis_commands_are_detected_and_claimed_by_no_other_protocol(data: bytes) -> None:
    assert SPEC.detect(data, REQ)
    for spec in PROTOCOLS:
        if spec.name != "redis":
            assert not spec.detect(data, Direction.REQUEST), spec.name
            assert not spec.detect(data, Direction.RESPONSE), spec.name


@pytest.mark.parametrize("data", REDIS_RESPONSES)
def test_redis_replies_are_detected_and_claimed_by_no_other_protocol(data: bytes) -> None:
    assert SPEC.detect(data, RESP)
    for spec in PROTOCOLS:
        if spec.name != "redis":
            assert not spec.detect(data, Direction.REQUEST), spec.name
            assert not spec.detect(data, Direction.RESPONSE), spec.name


def test_redis_is_registered_after_the_binary_protocols() -> None:
    names = [s.name for s in PROTOCOLS]
    assert names.index("redis") > names.index("mysql") > names.index("http2")


def test_an_http_connection_through_the_loop_with_every_protocol_is_never_redis() -> None:
    lp = Loop(PROTOCOLS[0], detect=True, auto_run=True)
    lp.parser.protocols = PROTOCOLS  # every registered protocol, in detection order
    lp.feed(REQ, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    lp.feed(RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert lp.parser.spec is not None and lp.parser.spec.name == "http1"


def test_inline_commands_alone_are_detected_only_for_redis_only_words() -> None:
    assert SPEC.detect(b"PING\r\n", REQ) and SPEC.detect(b"hgetall user:1\r\n", REQ)
    for line in (b"GET key\r\n", b"SET k 0 0 1\r\n", b"QUIT\r\n", b"TYPE I\r\n", b"GET / HTTP/1.0\r\n"):
        assert not SPEC.detect(line, REQ), line
    assert not SPEC.detect(b"PING", REQ)  # the line is not complete yet


def test_a_connection_open_before_the_capture_is_recognised_mid_stream() -> None:
    """The capture starts inside a SET value and inside a bulk reply: both are found by boundary."""
    lp = loop(detect=True, auto_run=False)
    value = b"x" * 300
    lp.feed(REQ, cmd("SET", "k", value)[50:] + cmd("GET", "k") + cmd("INCR", "n"))
    lp.feed(RESP, bulk(value)[50:] + b"+OK\r\n" + bulk(value) + b":7\r\n")
    lp.run(eof=True)
    assert lp.parser.spec is not None and lp.parser.spec.name == "redis"
    assert [r.name for r in lp.records][-2:] == ["GET", "INCR"]


def test_find_boundary_is_strict_inside_values() -> None:
    value = b"no command here\r\n:1 is not a reply start in this value\r\n" * 20
    assert find_boundary(memoryview(value), REQ, 0) is None
    assert find_boundary(memoryview(b"\xff" * 5000), RESP, 0) is None
    wire = b"junk\r\n" + cmd("GET", "k")
    assert find_boundary(memoryview(wire), REQ, 1) == 6


def test_a_command_glued_to_other_bytes_is_no_boundary() -> None:
    """A command starts a stream or follows the CRLF ending the one before it: a PING right after a
    TLS record's head (inside what the record says is its payload) claims nothing."""
    data = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200) + cmd("PING")
    assert find_boundary(memoryview(data), REQ, 1) is None
    assert find_boundary(memoryview(b"+OK\r\n" + cmd("PING")), REQ, 1) == 5


def test_commands_after_uncopied_bytes_resync_at_the_next_whole_command() -> None:
    lp = loop()
    first = cmd("SET", "k", "v" * 100)
    lp.feed(REQ, first[:6], length=len(first))  # the capture copied 6 bytes: the rest zero-filled
    lp.feed(REQ, cmd("GET", "k") + cmd("PING"))
    lp.feed(RESP, b"+OK\r\n$-1\r\n+PONG\r\n")
    lp.run(eof=True)
    # The commands lost with the gap leave their replies in doubt: what follows is marked degraded.
    assert lp.errors == [] and [(r.name, r.degraded) for r in lp.records] == [("PING", True)]
    assert lp.health.total("gaps") == 1 and lp.health.total("unmatched_frames") == 2
