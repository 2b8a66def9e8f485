"""Exact packet bytes through parse_frame + stitch: every command and response shape."""

from __future__ import annotations

import struct
import zlib

from conftest import REQ, RESP, Loop, packet, records

from protocols.mysql import SPEC
from protocols.mysql.types import CLIENT_COMPRESS, CLIENT_DEPRECATE_EOF, K_CONTINUATION

GREETING = packet(
    0,
    b"\x0a5.5.5-10.11.19-MariaDB\x00"
    + b"\x05\x00\x00\x00"
    + b"abcdefgh"
    + b"\x00"
    + b"\xfe\xf7"
    + b"\x2d"
    + b"\x02\x00"
    + b"\xff\x81"
    + b"\x15"
    + bytes(6)
    + b"\x0d\x00\x00\x00"
    + b"ijklmnopqrst\x00"
    + b"mysql_native_password\x00",
)
CAPS = 0x000FA685  # PROTOCOL_41 | SECURE_CONNECTION | CONNECT_WITH_DB | PLUGIN_AUTH ...
SECRET = b"\x11\x22SECRETAUTH\x33\x44\x55\x66\x77\x88\x99\xaa"


def handshake_response(caps: int = CAPS, db: bytes = b"shop") -> bytes:
    body = struct.pack("<IIB", caps | 0x08, 1 << 24, 45) + bytes(23) + b"app\x00"
    body += bytes([len(SECRET)]) + SECRET + db + b"\x00" + b"mysql_native_password\x00"
    return packet(1, body)


OK = packet(2, b"\x00\x00\x00\x02\x00\x00\x00")
EOF_PKT = b"\xfe\x00\x00\x02\x00"


def query(sql: bytes) -> bytes:
    return packet(0, b"\x03" + sql)


def coldef(name: bytes, seq: int) -> bytes:
    def s(v: bytes) -> bytes:
        return bytes([len(v)]) + v

    return packet(
        seq,
        s(b"def")
        + s(b"shop")
        + s(b"items")
        + s(b"items")
        + s(name)
        + s(name)
        + b"\x0c\x21\x00\x00\x01\x00\x00\xfd\x00\x00\x00\x00\x00",
    )


def result_set(rows: list[bytes], deprecate_eof: bool = False) -> bytes:
    out = packet(1, b"\x01") + coldef(b"name", 2)
    seq = 3
    if not deprecate_eof:
        out += packet(seq, EOF_PKT)
        seq += 1
    for r in rows:
        out += packet(seq, bytes([len(r)]) + r)
        seq += 1
    end = b"\xfe\x00\x00\x02\x00\x00\x00" if deprecate_eof else EOF_PKT
    return out + packet(seq, end)


def login(loop: Loop, caps: int = CAPS) -> None:
    loop.feed(RESP, GREETING)
    loop.feed(REQ, handshake_response(caps))
    loop.feed(RESP, OK)


def test_login_query_ok_err_and_secrets() -> None:
    loop = Loop()
    login(loop)
    assert loop.state.server_version == "5.5.5-10.11.19-MariaDB"
    loop.feed(REQ, query(b"SELECT name FROM items WHERE pw = 'hunter2' AND id = 42"))
    loop.feed(RESP, result_set([b"apple", b"pear"]))
    loop.feed(REQ, query(b"SELEC x"))
    loop.feed(RESP, packet(1, b"\xff\x28\x04#42000You have an error in your SQL syntax"))
    loop.feed(REQ, packet(0, b"\x02other"))
    loop.feed(RESP, packet(1, b"\x00\x00\x00\x02\x00\x00\x00"))
    loop.feed(REQ, packet(0, b"\x0e"))
    loop.feed(RESP, packet(1, b"\x00\x00\x00\x02\x00\x00\x00"))
    loop.feed(REQ, packet(0, b"\x01"))
    recs = records(loop.exchanges)
    assert [r.name for r in recs] == ["LOGIN", "SELECT items", "SELEC", "INIT_DB", "PING", "QUIT"]
    assert recs[0].attributes["db.namespace"] == "shop" and recs[0].error_type is None
    sel = recs[1]
    assert sel.attributes["db.query.text"] == "SELECT name FROM items WHERE pw = ? AND id = ?"
    assert sel.attributes["db.response.returned_rows"] == 2 and sel.metric == "db.client.operation.duration"
    assert recs[2].error_type == "1064" and recs[2].attributes["db.response.status_code"] == "1064"
    assert recs[4].attributes["db.namespace"] == "other"
    dump = repr(recs) + repr(loop.exchanges) + repr(loop.state) + repr(loop.queues)
    assert "hunter2" not in dump and "SECRETAUTH" not in dump
    assert loop.errors == []


def test_deprecate_eof_and_multi_results() -> None:
    loop = Loop()
    login(loop, CAPS | CLIENT_DEPRECATE_EOF)
    loop.feed(REQ, query(b"SELECT name FROM items"))
    loop.feed(RESP, result_set([b"a", b"b", b"c"], deprecate_eof=True))
    loop.feed(REQ, query(b"CALL p()"))
    more = b"\xfe\x00\x00\x0a\x00\x00\x00"  # OK(0xFE) with SERVER_MORE_RESULTS_EXISTS
    loop.feed(
        RESP,
        packet(1, b"\x01")
        + coldef(b"x", 2)
        + packet(3, b"\x01a")
        + packet(4, more)
        + packet(5, b"\x00\x00\x00\x02\x00\x00\x00"),
    )
    loop.feed(REQ, query(b"SELECT 1"))
    loop.feed(RESP, packet(1, b"\x01") + coldef(b"1", 2) + packet(3, b"\xfe\x00\x00\x02\x00\x00\x00"))
    recs = records(loop.exchanges)
    assert [(r.name, r.attributes.get("db.response.returned_rows")) for r in recs[1:]] == [
        ("SELECT items", 3),
        ("CALL", 1),
        ("SELECT", 0),
    ]
    assert not any(r.degraded for r in recs)


def test_prepared_statements_binary_rows() -> None:
    loop = Loop()
    login(loop)
    loop.feed(REQ, packet(0, b"\x16SELECT name FROM items WHERE id > ?"))
    prep_ok = b"\x00" + struct.pack("<IHHBH", 7, 1, 1, 0, 0)
    loop.feed(
        RESP,
        packet(1, prep_ok) + coldef(b"?", 2) + packet(3, EOF_PKT) + coldef(b"name", 4) + packet(5, EOF_PKT),
    )
    execute = b"\x17" + struct.pack("<IBI", 7, 0, 1) + b"\x00\x01\x08\x00" + struct.pack("<q", 1)
    loop.feed(REQ, packet(0, execute))
    loop.feed(
        RESP,
        packet(1, b"\x01")
        + coldef(b"name", 2)
        + packet(3, EOF_PKT)
        + packet(4, b"\x00\x00\x04pear")
        + packet(5, b"\x00\x00\x03fig")
        + packet(6, EOF_PKT),
    )
    loop.feed(REQ, packet(0, b"\x1a" + struct.pack("<I", 7)))
    loop.feed(RESP, packet(1, b"\x00\x00\x00\x02\x00\x00\x00"))
    loop.feed(REQ, packet(0, b"\x19" + struct.pack("<I", 7)))
    recs = records(loop.exchanges)
    assert [r.name for r in recs[1:]] == ["PREPARE items", "SELECT items", "RESET items", "CLOSE items"]
    assert recs[2].attributes["db.response.returned_rows"] == 2
    assert all(r.attributes["db.query.text"] == "SELECT name FROM items WHERE id > ?" for r in recs[1:])
    assert loop.state.stmts == {}
    # An unknown statement id (prepared before capture) is reported, degraded.
    loop.feed(REQ, packet(0, execute))
    loop.feed(RESP, packet(1, b"\x00\x00\x00\x02\x00\x00\x00"))
    assert loop.exchanges[-1].degraded and records(loop.exchanges)[-1].name == "EXECUTE"


def test_prepare_without_eof_and_unknown_caps() -> None:
    loop = Loop()  # mid-stream: no handshake seen
    loop.feed(REQ, packet(0, b"\x16INSERT INTO t (a) VALUES (?)"))
    loop.feed(RESP, packet(1, b"\x00" + struct.pack("<IHHBH", 3, 0, 1, 0, 0)) + coldef(b"?", 2))
    loop.feed(REQ, query(b"DELETE FROM t"))
    loop.feed(RESP, packet(1, b"\x00\x05\x00\x02\x00\x00\x00"))
    assert [(x.operation, x.affected_rows) for x in loop.exchanges] == [("PREPARE", -1), ("DELETE", 5)]
    assert not any(x.degraded for x in loop.exchanges)


def test_packet_over_16_mib() -> None:
    loop = Loop()
    big = b"\x03INSERT INTO blobs VALUES ('" + b"x" * (0xFFFFFF - 28)
    assert len(big) == 0xFFFFFF
    loop.feed(REQ, packet(0, big) + packet(1, b"')"))
    assert loop.queues[REQ][-1].frame.kind == K_CONTINUATION
    loop.feed(RESP, packet(2, b"\x00\x01\x00\x02\x00\x00\x00"))
    (rec,) = records(loop.exchanges)
    assert rec.name == "INSERT blobs" and rec.attributes["db.query.text"].startswith(
        "INSERT INTO blobs VALUES (?"
    )
    assert all(len(t.frame.data) <= 4200 for t in loop.queues[REQ])


def test_compressed_protocol_is_detected_not_misparsed() -> None:
    loop = Loop()
    loop.feed(RESP, GREETING)
    loop.feed(REQ, handshake_response(CAPS | CLIENT_COMPRESS))
    loop.feed(RESP, OK)
    assert loop.state.compress_pending
    inner = query(b"SELECT * FROM items")
    loop.feed(REQ, struct.pack("<I", len(inner))[:3] + b"\x00" + b"\x00\x00\x00" + inner)
    err = packet(1, b"\xff\x7a\x04#42S02Table 'shop.items' doesn't exist")
    z = zlib.compress(err)
    loop.feed(RESP, struct.pack("<I", len(z))[:3] + b"\x01" + struct.pack("<I", len(err))[:3] + z)
    recs = records(loop.exchanges)
    assert [(r.name, r.error_type, r.degraded) for r in recs] == [
        ("LOGIN", None, False),
        ("SELECT items", "1146", True),
    ]
    assert loop.exchanges[-1].compressed and loop.errors == []


def test_login_refused_before_greeting_and_access_denied() -> None:
    loop = Loop()
    loop.feed(RESP, packet(0, b"\xff\x10\x04Too many connections"))
    assert [(x.operation, x.error_code) for x in loop.exchanges] == [("LOGIN", 1040)]
    loop = Loop()
    loop.feed(RESP, GREETING)
    loop.feed(REQ, handshake_response())
    loop.feed(RESP, packet(2, b"\xfe" + b"mysql_native_password\x00" + b"01234567890123456789\x00"))
    loop.feed(REQ, packet(3, SECRET))
    loop.feed(RESP, packet(4, b"\xff\x15\x04#28000Access denied for user 'app'"))
    (rec,) = records(loop.exchanges)
    assert rec.name == "LOGIN" and rec.error_type == "1045"
    assert "SECRETAUTH" not in repr(loop.queues) + repr(loop.exchanges)


def test_split_at_every_byte() -> None:
    req = query(b"SELECT name FROM items WHERE id = 1")
    resp = result_set([b"apple"])
    for cut in range(1, len(req)):
        for rcut in (1, len(resp) // 2, len(resp) - 1):
            loop = Loop()
            loop.feed(REQ, req[:cut])
            loop.feed(REQ, req[cut:])
            loop.feed(RESP, resp[:rcut])
            loop.feed(RESP, resp[rcut:])
            assert [(x.operation, x.table, x.returned_rows) for x in loop.exchanges] == [
                ("SELECT", "items", 1)
            ]
    for cut in range(1, len(resp)):
        loop = Loop()
        loop.feed(REQ, req)
        loop.feed(RESP, resp[:cut])
        loop.feed(RESP, resp[cut:])
        assert [x.returned_rows for x in loop.exchanges] == [1] and loop.errors == []


def test_detect_is_strict() -> None:
    yes_req = [query(b"SELECT 1"), handshake_response(), packet(0, b"\x0e"), packet(0, b"\x02shop")]
    yes_resp = [
        GREETING,
        packet(1, b"\xff\x28\x04#42000bad"),
        packet(1, b"\x00\x00\x00\x02\x00\x00\x00"),
        packet(1, b"\x01") + coldef(b"x", 2),
    ]
    assert all(SPEC.detect(b, REQ) for b in yes_req)
    assert all(SPEC.detect(b, RESP) for b in yes_resp)
    no = [
        b"*1\r\n$4\r\nPING\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x00\x00\x00\x54\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00",
        b"\x00\x00\x00\x1e\x00\x12\x00\x03\x00\x00\x00\x01\x00\x07client1",
        b"+OK\r\n",
        bytes(64),
        b"\xff" * 64,
        packet(0, b"\x03\x00\x9c\xffbinary junk"),
        packet(5, b"\x03SELECT 1"),
    ]
    for b in no:
        assert not SPEC.detect(b, REQ), b
        assert not SPEC.detect(b, RESP), b


def test_find_boundary_after_garbage() -> None:
    junk = b"\x07\x99garbage bytes \x00\x00" + bytes(100)
    buf = junk + query(b"SELECT 1")
    assert SPEC.find_boundary(memoryview(buf), REQ, 0) == len(junk)
    rbuf = junk + packet(1, b"\x00\x00\x00\x02\x00\x00\x00")
    assert SPEC.find_boundary(memoryview(rbuf), RESP, 0) == len(junk)
    assert SPEC.find_boundary(memoryview(bytes(4096)), REQ, 0) is None
