"""Inference by content: random bytes and unparsed protocols' real bytes are claimed by NO protocol, and
parsed ones by their own only, through the real registry and framing loop (ConnTable over PROTOCOLS)."""

from __future__ import annotations

import random
import ssl
import struct

import pytest

from pipeline.conn_table import ConnTable
from pipeline.health import Health
from probes.fragment import Batch, ConnEvent, Fragment, Io
from protocols.base import ConnInfo, Endpoint, Role
from protocols.registry import PROTOCOLS


def _client_hello() -> bytes:
    """A real TLS ClientHello, written by Python's OpenSSL into a memory BIO."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="example.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _tls_server() -> bytes:
    # ServerHello (TLS 1.2 record, handshake type 2) then a ChangeCipherSpec and an encrypted record.
    hello = b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(32) + b"\x13\x01\x00" + b"\x00\x00"
    handshake = b"\x02" + len(hello).to_bytes(3, "big") + hello
    return (
        b"\x16\x03\x03" + struct.pack(">H", len(handshake)) + handshake
        + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x20" + random.Random(1).randbytes(32)
    )  # fmt: skip


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body) + 4) + body


def _postgres() -> tuple[bytes, bytes]:
    """Protocol 3.0 (PostgreSQL docs, "Message Formats"): SSLRequest, StartupMessage, then a simple Query."""
    ssl_request = struct.pack(">II", 8, 80877103)
    params = b"user\x00app\x00database\x00shop\x00application_name\x00psql\x00\x00"
    startup = struct.pack(">II", 8 + len(params), 196608) + params
    query = _pg_message(b"Q", b"SELECT 1;\x00")
    server = (
        b"N"  # answer to SSLRequest: no TLS
        + _pg_message(b"R", struct.pack(">I", 0))  # AuthenticationOk
        + _pg_message(b"S", b"server_version\x0016.2\x00")
        + _pg_message(b"K", struct.pack(">II", 4242, 99))
        + _pg_message(b"Z", b"I")
        + _pg_message(b"T", b"\x00\x01?column?\x00" + bytes(6) + struct.pack(">IhIh", 23, 4, 0xFFFFFFFF, 0))
        + _pg_message(b"D", b"\x00\x01\x00\x00\x00\x011")
        + _pg_message(b"C", b"SELECT 1\x00")
        + _pg_message(b"Z", b"I")
    )
    return ssl_request + startup + query, server


def _redis() -> tuple[bytes, bytes]:
    """RESP2 (redis.io protocol spec): bulk-string array commands; simple, bulk, integer, error replies."""
    requests = (
        b"*1\r\n$4\r\nPING\r\n"
        b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$5\r\nhello\r\n"
        b"*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n"
        b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n"
        b"*1\r\n$5\r\nBOGUS\r\n"
    )
    replies = b"+PONG\r\n+OK\r\n$5\r\nhello\r\n:1\r\n-ERR unknown command 'BOGUS'\r\n"
    return requests, replies


def _kafka_compact_string(s: bytes) -> bytes:
    return bytes([len(s) + 1]) + s


def _kafka() -> tuple[bytes, bytes]:
    """Kafka ApiVersions v3 and Metadata v1 as the protocol guide lays them out (size-prefixed)."""
    # Request header v2: api_key, api_version, correlation_id, client_id (nullable string), tagged fields.
    api_versions = (
        struct.pack(">hhi", 18, 3, 1) + struct.pack(">h", 12) + b"kafka-python" + b"\x00"
        + _kafka_compact_string(b"kafka-python") + _kafka_compact_string(b"2.0.2") + b"\x00"
    )  # fmt: skip
    metadata = struct.pack(">hhi", 3, 1, 2) + struct.pack(">h", 12) + b"kafka-python" + struct.pack(">i", -1)
    requests = b"".join(struct.pack(">i", len(m)) + m for m in (api_versions, metadata))
    keys = b"".join(struct.pack(">hhh", k, 0, v) + b"\x00" for k, v in ((0, 9), (1, 13), (3, 12), (18, 3)))
    av_resp = struct.pack(">ih", 1, 0) + bytes([5]) + keys + struct.pack(">i", 0) + b"\x00"
    broker = struct.pack(">ih", 1, 9) + b"127.0.0.1" + struct.pack(">i", 9092) + struct.pack(">h", -1)
    md_resp = struct.pack(">ii", 2, 1) + broker + struct.pack(">i", 1) + struct.pack(">i", 0)
    responses = b"".join(struct.pack(">i", len(m)) + m for m in (av_resp, md_resp))
    return requests, responses


def _random(seed: int, size: int) -> tuple[bytes, bytes]:
    rnd = random.Random(seed)
    return rnd.randbytes(size), rnd.randbytes(size)


CASES: dict[str, tuple[bytes, bytes]] = {
    "tls": (_client_hello(), _tls_server()),
    **{
        f"random-{seed}-{size}": _random(seed, size)
        for seed, size in ((1, 16), (2, 200), (3, 4096), (4, 40000))
    },
    "zeros": (bytes(3000), bytes(3000)),
}


def _run(name: str, requests: bytes, responses: bytes, role: Role) -> tuple[list, Health]:
    health = Health()
    table = ConnTable(PROTOCOLS, health)
    info = ConnInfo(f"t/{name}/{role.name}", Endpoint("127.0.0.1", 5000), Endpoint("127.0.0.1", 40000), role)
    req_io = Io.SEND if role == Role.CLIENT else Io.RECV
    resp_io = Io.RECV if req_io == Io.SEND else Io.SEND
    frags, pos = [], {Io.SEND: 0, Io.RECV: 0}
    # Interleave in modest segments, as a conversation would arrive.
    for i in range(0, max(len(requests), len(responses)), 1400):
        for io, data in ((req_io, requests), (resp_io, responses)):
            piece = data[i : i + 1400]
            if piece:
                frags.append(Fragment(info.conn_id, io, pos[io], len(piece), piece, 1000 + i))
                pos[io] += len(piece)
    records = table.apply(Batch(info, frags[: len(frags) // 2 or 1]))
    closed = ConnEvent(info, 10**9, closed=True, send_bytes=pos[Io.SEND], recv_bytes=pos[Io.RECV])
    records += table.apply(Batch(info, frags[len(frags) // 2 or 1 :], closed))
    return records + table.flush(), health


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT, Role.UNKNOWN], ids=lambda r: r.name.lower())
@pytest.mark.parametrize("name", sorted(CASES))
def test_not_claimed_by_any_protocol(name: str, role: Role) -> None:
    requests, responses = CASES[name]
    records, health = _run(name, requests, responses, role)
    assert records == []
    assert health.total("unclaimed_connections") == 1, health.snapshot()
    assert health.total("parse_errors") == 0 and health.total("exchanges") == 0


# Parsed protocols since: each must be claimed by its own parser only, whichever end is traced.
OWN: dict[str, tuple[bytes, bytes]] = {"kafka": _kafka(), "postgres": _postgres(), "redis": _redis()}


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT, Role.UNKNOWN], ids=lambda r: r.name.lower())
@pytest.mark.parametrize("name", sorted(OWN))
def test_claimed_by_its_own_protocol_only(name: str, role: Role) -> None:
    records, health = _run(name, *OWN[name], role)
    assert records and {r.protocol for r in records} == {name}
    assert health.total("parse_errors") == 0 and health.total("unclaimed_connections") == 0


def test_the_same_loop_does_claim_real_protocol_bytes() -> None:
    """The control: HTTP/1.1 through the same path is claimed and makes one record."""
    req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    resp = b"HTTP/1.1 204 No Content\r\n\r\n"
    records, health = _run("http", req, resp, Role.UNKNOWN)
    assert [r.protocol for r in records] == ["http"] and health.total("unclaimed_connections") == 0
