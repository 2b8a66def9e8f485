"""Byte streams for the progress tests: valid conversations of every protocol, and the adversarial
inputs that once stopped the framing loop (or are their equivalents in the other protocols)."""

from __future__ import annotations

import struct
from pathlib import Path

from hpack import Encoder

from protocols.base import Direction

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
Script = list[tuple[Direction, bytes]]

# -- HTTP/1.1 ---------------------------------------------------------------------------------------

GET_OK = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
OK_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
NEGATIVE_REQUEST = b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"  # issue 12, verbatim
NEGATIVE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"
CHUNK_ZZ_RESPONSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
CHUNK_ZZ_REQUEST = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"

HTTP1_VALID: Script = [
    (REQ, GET_OK),
    (RESP, OK_200),
    (REQ, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"),
    (RESP, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
]
HTTP1_BAD: Script = [
    (REQ, NEGATIVE_REQUEST),
    (RESP, NEGATIVE_RESPONSE),
    (RESP, CHUNK_ZZ_RESPONSE),
    (REQ, CHUNK_ZZ_REQUEST),
    (REQ, b"GET /ok HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"),
    (REQ, b"GET /ok HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    (REQ, b"GET /ok HTTP/1.1\r\nno colon here\r\n\r\n"),
    (RESP, b"HTTP/1.1 2xx Broken\r\n\r\n"),
    (RESP, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n"),
    (RESP, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXX0\r\n\r\n"),
    (REQ, b"GET /"),
    (REQ, b"GET / HTTP/1.1\r\n"),
]

# -- HTTP/2 -----------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">HBBBI", n >> 8, n & 0xFF, kind, flags, stream) + payload


def _h2_valid() -> Script:
    client, server = Encoder(), Encoder()
    request = client.encode([(":method", "GET"), (":scheme", "http"), (":path", "/p"), (":authority", "x")])
    response = server.encode([(":status", "200"), ("content-type", "text/plain")])
    return [
        (REQ, PREFACE + h2_frame(4, 0, 0)),  # SETTINGS
        (RESP, h2_frame(4, 0, 0) + h2_frame(4, 1, 0)),  # SETTINGS, ACK
        (REQ, h2_frame(4, 1, 0) + h2_frame(1, 0x5, 1, request)),  # ACK, HEADERS END_STREAM|END_HEADERS
        (RESP, h2_frame(1, 0x4, 1, response) + h2_frame(0, 0x1, 1, b"hello")),  # HEADERS, DATA END_STREAM
    ]


HTTP2_VALID = _h2_valid()
HTTP2_BAD: Script = [
    (REQ, h2_frame(0, 0, 1, length=16385)),  # just over the default max frame, found again by resync
    (RESP, h2_frame(0, 0, 2, length=16385)),
    (REQ, h2_frame(0, 0, 1, length=0xFFFFFF)),  # a length pointing far past anything sent
    (REQ, h2_frame(3, 0, 1, b"abc")),  # RST_STREAM of the wrong size
    (RESP, h2_frame(6, 0, 0, b"")),  # PING without its 8 bytes
    (REQ, h2_frame(0, 0, 1) * 8),  # zero-length frames
    (RESP, h2_frame(4, 0, 0) * 8),
    (REQ, h2_frame(1, 0x8 | 0x4, 1, b"\x09abc")),  # pad length past the payload
    (REQ, h2_frame(9, 0x4, 1, b"\x82")),  # CONTINUATION with no block open
    (RESP, h2_frame(7, 0, 0, b"\x00" * 4)),  # GOAWAY too short
]

# -- MySQL ------------------------------------------------------------------------------------------


def packet(seq: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return n.to_bytes(3, "little") + bytes([seq]) + payload


GREETING = packet(
    0,
    b"\x0a8.0.36\x00" + b"\x01\x00\x00\x00" + b"abcdefgh\x00" + b"\xff\xf7" + b"\x21" + b"\x02\x00"
    + b"\xff\xdf" + b"\x15" + b"\x00" * 10 + b"ijklmnopqrst\x00" + b"mysql_native_password\x00",
)  # fmt: skip
HANDSHAKE_RESPONSE = packet(
    1,
    struct.pack("<IIB", 0x000FA685, 1 << 24, 0x21) + b"\x00" * 23 + b"app\x00" + b"\x14" + b"s" * 20
    + b"shop\x00" + b"mysql_native_password\x00",
)  # fmt: skip
OK = packet(2, b"\x00\x00\x00\x02\x00\x00\x00")
QUERY = packet(0, b"\x03SELECT 1")
RESULT = (
    packet(1, b"\x01")
    + packet(2, b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00")
    + packet(3, b"\xfe\x00\x00\x02\x00")
    + packet(4, b"\x011")
    + packet(5, b"\xfe\x00\x00\x02\x00")
)

MYSQL_VALID: Script = [(RESP, GREETING), (REQ, HANDSHAKE_RESPONSE), (RESP, OK), (REQ, QUERY), (RESP, RESULT)]
MYSQL_BAD: Script = [
    (REQ, packet(0, b"\xee")),  # unknown command
    (REQ, packet(0, b"")),  # zero-length packets
    (RESP, packet(1, b"") * 8),
    (REQ, packet(0, b"\x03SELECT 1", length=0xFFFFFF)),  # a length pointing far past what follows
    (RESP, packet(1, b"\x00", length=0xFFFFFF)),
    (REQ, packet(0, b"\x03")),  # COM_QUERY without SQL
    (REQ, packet(0, b"\x03SELECT 1", length=1)),  # a length shorter than the packet
    (RESP, packet(1, b"\xff\x28\x04", length=2)),
]

# -- PostgreSQL -------------------------------------------------------------------------------------


def pg(t: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    return t + struct.pack(">I", 4 + len(body) if length is None else length) + body


PG_PARAMS = b"user\x00app\x00database\x00shop\x00\x00"
PG_STARTUP = struct.pack(">II", 8 + len(PG_PARAMS), 0x00030000) + PG_PARAMS
PG_LOGIN_OK = pg(b"R", b"\x00\x00\x00\x00") + pg(b"K", b"\x00\x00\x00\x01\x00\x00\x00\x02") + pg(b"Z", b"I")
PG_QUERY = pg(b"Q", b"SELECT 1\x00")
PG_RESULT = (
    pg(b"T", b"\x00\x01a\x00" + bytes(18)) + pg(b"D", b"\x00\x01\x00\x00\x00\x011")
    + pg(b"C", b"SELECT 1\x00") + pg(b"Z", b"I")
)  # fmt: skip
PG_EXTENDED = (
    pg(b"P", b"\x00SELECT $1\x00\x00\x00") + pg(b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x017\x00\x00")
    + pg(b"E", b"\x00\x00\x00\x00\x00") + pg(b"S")
)  # fmt: skip
PG_EXTENDED_ANSWER = (
    pg(b"1") + pg(b"2") + pg(b"D", b"\x00\x01\x00\x00\x00\x017") + pg(b"C", b"SELECT 1\x00") + pg(b"Z", b"I")
)
POSTGRES_VALID: Script = [
    (REQ, struct.pack(">II", 8, 80877103)),
    (RESP, b"N"),
    (REQ, PG_STARTUP),
    (RESP, PG_LOGIN_OK),
    (REQ, PG_QUERY),
    (RESP, PG_RESULT),
    (REQ, PG_EXTENDED),
    (RESP, PG_EXTENDED_ANSWER),
]
POSTGRES_BAD: Script = [
    (REQ, pg(b"\xee", b"x")),  # unknown type
    (REQ, pg(b"Q", b"SELECT 1\x00", length=0x7FFFFFFF)),  # a length near 2^31
    (RESP, pg(b"D", b"", length=0xFFFFFFFF)),
    (REQ, pg(b"S", b"", length=3)),  # shorter than its own length field
    (RESP, pg(b"Z", b"I", length=5000)),  # a fixed-length message with another length
    (REQ, struct.pack(">II", 9, 0x00030000) + b"\x00"),  # a startup message without a user
    (RESP, pg(b"D", b"\x00\x01", length=40 << 20) + b"\x00" * 64),  # a big row cut short: skipped
    (REQ, b"\x00" * 16),  # zero-filled
]

# -- Redis ------------------------------------------------------------------------------------------

REDIS_GET = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
REDIS_VALUE = b"$5\r\nvalue\r\n"
REDIS_VALID: Script = [
    (REQ, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
    (RESP, b"%1\r\n$5\r\nproto\r\n:3\r\n"),
    (REQ, REDIS_GET + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
    (RESP, REDIS_VALUE + b"+OK\r\n"),
    (REQ, b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n"),
    (RESP, b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
]
REDIS_BAD: Script = [
    (RESP, b"*1\r\n" * 100 + b":1\r\n"),  # nested deeper than the cap
    (RESP, b"*2147483648\r\n"),  # more elements than INT_MAX
    (RESP, b"$1000000000\r\nabc"),  # a 1 GB bulk string announced, 3 bytes sent
    (REQ, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999\r\n"),
    (REQ, b"*0\r\n*-1\r\n\r\n"),  # commands redis-server ignores
    (RESP, b"$3\r\nabcXY"),  # a bulk string not ended by CRLF
    (RESP, b"|1\r\n+a\r\n|1\r\n+b\r\n"),  # attributes with no reply after them
    (REQ, b"PING\x00\r\n"),
    (RESP, b"?\r\n" * 20),
]

# -- Kafka ------------------------------------------------------------------------------------------


def _kafka_valid() -> Script:
    from tests.protocols.kafka import wire

    return [
        (REQ, wire.api_versions_request(3, 0)),
        (RESP, wire.api_versions_response(3, 0)),
        (REQ, wire.metadata_request(12, 1, ["t"])),
        (RESP, wire.metadata_response(12, 1, [("t", 0)])),
        (REQ, wire.produce_request(9, 2, "t", {0: wire.batch(2)})),
        (RESP, wire.produce_response(9, 2, "t", [(0, 0, 0)])),
        (REQ, wire.fetch_request(12, 3, "t", [0])),
        (RESP, wire.fetch_response(12, 3, "t", [(0, 0, wire.batch(2))])),
    ]


def kafka_request(key: int, version: int, correlation: int, body: bytes, size: int | None = None) -> bytes:
    head = struct.pack(">hhih", key, version, correlation, 3) + b"cli"
    return struct.pack(">i", len(head) + len(body) if size is None else size) + head + body


KAFKA_VALID: Script = _kafka_valid()
KAFKA_BAD: Script = [
    (REQ, kafka_request(999, 0, 9, b"")),  # unknown api key
    (REQ, kafka_request(3, 0, 9, b"", size=0)),  # sizes too small to hold a header
    (RESP, b"\x00\x00\x00\x02\x00\x00" * 4),
    (REQ, kafka_request(0, 9, 9, b"\x00\x00\x01\x00\x00\x75\x30", size=0x7FFFFFF)),  # far past what follows
    (RESP, struct.pack(">ii", 0x3FFFFFFF, 9)),
    (REQ, kafka_request(0, 3, 9, b"\xff\xff\x00\x01\x00\x00\x75\x30\x7f\xff\xff\xff")),  # a huge topic count
    (REQ, kafka_request(3, 0, 9, b"\x7f\xff\xff\xff\x00\x01")),
    (RESP, struct.pack(">ii", 4, 123456)),  # a response to no request
    (REQ, struct.pack(">ihhih", 10, 3, 0, 9, 200)),  # a client id longer than the message
]

VALID = {
    "http1": HTTP1_VALID, "http2": HTTP2_VALID, "mysql": MYSQL_VALID, "postgres": POSTGRES_VALID,
    "redis": REDIS_VALID, "kafka": KAFKA_VALID,
}  # fmt: skip
BAD = {
    "http1": HTTP1_BAD, "http2": HTTP2_BAD, "mysql": MYSQL_BAD, "postgres": POSTGRES_BAD, "redis": REDIS_BAD,
    "kafka": KAFKA_BAD,
}  # fmt: skip


# -- a capture file ---------------------------------------------------------------------------------


def negative_content_length_pcap(path: Path) -> Path:
    """A good exchange, then issue 12's request answered 400 and the connection closed (what nginx
    does); then a good exchange on a second connection. About 1.3 KB, like the capture in the report."""
    from tests.probes.test_pcap import ACK, FIN, PSH, handshake, write_pcap

    rejected = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    packets = []
    for cli, srv, exchanges in (
        (("127.0.0.1", 40000), ("127.0.0.1", 8080), [(GET_OK, OK_200), (NEGATIVE_REQUEST, rejected)]),
        (("127.0.0.1", 40002), ("127.0.0.1", 8080), [(GET_OK, OK_200)]),
    ):
        c, s = 1001, 5001
        packets += handshake(cli=cli, srv=srv)
        for request, response in exchanges:
            packets.append((cli, srv, c, s, ACK | PSH, request))
            c += len(request)
            packets.append((srv, cli, s, c, ACK | PSH, response))
            s += len(response)
        packets += [(srv, cli, s, c, FIN | ACK, b""), (cli, srv, c, s + 1, FIN | ACK, b"")]
    return write_pcap(path, packets)
