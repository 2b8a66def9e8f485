"""Joining mid-stream / after a gap: HPACK desync is detected, only known fields are reported."""

from __future__ import annotations

from h2_traffic import CONN, REQ, Conversation, drive
from hpack import Encoder

from protocols.http2 import SPEC
from protocols.http2.headers import HpackSide


def test_join_without_preface_reports_only_static_and_literal_fields() -> None:
    c = Conversation()
    c.unary("/demo.Greeter/SayHello", b"hi", b"hello")  # fills both dynamic tables
    joined_at = len(c.chunks)
    c.unary("/demo.Greeter/SayHello", b"hi", b"hello", status=5)
    out, state = drive(c.chunks[joined_at:])
    assert out.invalid == 0 and not state.hpack[0].synced and not state.hpack[1].synced
    (x,) = out.exchanges
    assert x.stream_id == 3 and x.degraded
    # Every other field was a dynamic-table reference: unknown, so absent (never guessed).
    assert x.request_headers == ((":method", "POST"), (":scheme", "http"))
    assert x.response_headers == ((":status", "200"),)
    rec = SPEC.to_record(x, CONN)
    assert rec.degraded and rec.protocol == "http" and rec.name == "POST" and rec.error_type is None
    assert rec.attributes == {
        "network.protocol.name": "http", "network.protocol.version": "2", "http.request.method": "POST",
        "url.scheme": "http", "http.request.body.size": 7, "http.response.body.size": 0,
        "http.response.status_code": 200, "server.address": "127.0.0.1", "server.port": 50051,
        "client.address": "127.0.0.1", "client.port": 40000,
    }  # fmt: skip


def test_gap_desyncs_and_marks_open_streams_degraded() -> None:
    c = Conversation()
    c.unary("/demo.Greeter/SayHello", b"hi", b"hello")
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(
        sid, [(":method", "GET"), (":scheme", "http"), (":path", "/late"), (":authority", "h")]
    )
    c.flush()
    out, state = drive(c.chunks)
    assert [x.degraded for x in out.exchanges] == [False] and sid in state.streams
    SPEC.on_gap(state, REQ)
    assert not state.hpack[0].synced and state.hpack[1].synced and state.streams[sid].degraded
    c.chunks.clear()
    c.client.end_stream(sid)
    c.server.send_headers(sid, [(":status", "200")], end_stream=True)
    c.flush()
    more, _ = drive(c.chunks, state=state)
    (x,) = more.exchanges
    assert x.degraded and x.request_headers[2] == (":path", "/late")


def test_entries_inserted_after_the_join_are_known() -> None:
    enc = Encoder()
    side = HpackSide()
    side.decode(enc.encode([(":path", "/old"), ("x-old", "1")]))
    side.desync()
    first = enc.encode([("x-new", "fresh"), ("x-old", "1")])  # inserts x-new; x-old is a table reference
    assert side.decode(first) == ((("x-new", "fresh"),), False)
    again = enc.encode([("x-new", "fresh"), (":method", "GET")])  # both now indexed
    assert side.decode(again) == ((("x-new", "fresh"), (":method", "GET")), True)
    assert not side.synced


def test_table_fully_rewritten_resyncs_to_hpack() -> None:
    enc = Encoder()
    side = HpackSide()
    side.decode(enc.encode([("x-a", "1" * 100)]))
    side.desync()
    enc.header_table_size = 0  # the encoder empties its table: every entry is known again
    enc.header_table_size = 4096
    side.decode(enc.encode([("x-b", "2")]))
    assert side.synced
    assert side.decode(enc.encode([("x-b", "2"), ("x-c", "3")])) == ((("x-b", "2"), ("x-c", "3")), True)


def test_bad_block_in_sync_falls_back_without_raising() -> None:
    side = HpackSide()
    assert side.decode(b"\xff\xff\xff\xff\xff") == ((), False)  # an absurd index
    assert not side.synced
    assert side.decode(bytes([0x82, 0x84])) == (((":method", "GET"), (":path", "/")), True)
