"""Exchanges from real h2 endpoint bytes: gRPC call shapes, plain HTTP/2, resets, GOAWAY, pushes."""

from __future__ import annotations

from h2_traffic import CLIENT_CONN, CONN, REQ, RESP, Conversation, drive, grpc_msg, grpc_request_headers
from hpack import Encoder
from hyperframe.frame import HeadersFrame

from protocols.http2 import SPEC
from protocols.http2.types import MAX_STREAMS, PREFACE


def records(chunks, conn=CONN, **kw):
    out, state = drive(chunks, **kw)
    assert out.invalid == 0
    return [SPEC.to_record(x, conn) for x in out.exchanges], out, state


def test_unary_ok_and_not_found_trailers_only() -> None:
    c = Conversation()
    c.unary("/demo.Greeter/SayHello", b"hi", b"hello")
    c.unary("/demo.Greeter/Find", b"x", b"", status=5)
    (ok, nf), _, state = records(c.chunks)
    assert ok.protocol == "grpc" and ok.name == "demo.Greeter/SayHello" and ok.error_type is None
    assert ok.metric == "rpc.server.call.duration" and not ok.degraded
    a = ok.attributes
    assert (a["rpc.system"], a["rpc.service"], a["rpc.method"], a["rpc.grpc.status_code"]) == (
        "grpc", "demo.Greeter", "SayHello", 0,
    )  # fmt: skip
    assert (a["rpc.request.message.count"], a["rpc.response.message.count"]) == (1, 1)
    assert (a["rpc.request.message.size"], a["rpc.response.message.size"]) == (2, 5)
    assert a["server.port"] == 50051 and a["client.port"] == 40000
    # The gRPC conventions: NOT_FOUND is an error for the client, not for the server that answered it.
    assert nf.error_type is None and nf.attributes["rpc.grpc.status_code"] == 5
    assert nf.attributes["rpc.response.message.count"] == 0
    assert state.streams == {}


def test_which_grpc_codes_are_errors_depends_on_the_side() -> None:
    c = Conversation()
    for status in (5, 3, 13, 14, 4):  # NOT_FOUND, INVALID_ARGUMENT, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED
        c.unary("/demo.Greeter/Find", b"x", b"", status=status)
    server, _, _ = records(c.chunks)
    client, _, _ = records(c.chunks, conn=CLIENT_CONN)
    assert [r.error_type for r in server] == [None, None, "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"]
    assert [r.error_type for r in client] == [
        "NOT_FOUND", "INVALID_ARGUMENT", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED",
    ]  # fmt: skip


def _streaming(c: Conversation, path: str, req_msgs: list[bytes], resp_msgs: list[bytes], split: bool) -> int:
    """Interleave request and response messages; with split, each message spans two DATA frames."""
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(sid, grpc_request_headers(path))
    c.flush()
    c.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    for i in range(max(len(req_msgs), len(resp_msgs))):
        for conn, msgs in ((c.client, req_msgs), (c.server, resp_msgs)):
            if i < len(msgs):
                m = grpc_msg(msgs[i])
                parts = [m[:3], m[3:]] if split else [m]
                for p in parts:
                    conn.send_data(sid, p)
            c.flush()
    c.client.end_stream(sid)
    c.server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    c.flush()
    return sid


def test_streaming_shapes_are_one_exchange_each_with_message_counts() -> None:
    c = Conversation()
    _streaming(c, "/demo.S/ServerStream", [b"q"], [b"a", b"bb", b"ccc"], split=False)
    _streaming(c, "/demo.S/ClientStream", [b"1", b"22", b"333", b"4444"], [b"done"], split=True)
    _streaming(c, "/demo.S/Bidi", [b"x", b"yy"], [b"X", b"YY"], split=True)
    recs, _, _ = records(c.chunks)
    got = [
        (r.name, r.attributes["rpc.request.message.count"], r.attributes["rpc.response.message.count"],
         r.attributes["rpc.request.message.size"], r.attributes["rpc.response.message.size"], r.error_type)
        for r in recs
    ]  # fmt: skip
    assert got == [
        ("demo.S/ServerStream", 1, 3, 1, 6, None),
        ("demo.S/ClientStream", 4, 1, 10, 4, None),
        ("demo.S/Bidi", 2, 2, 3, 3, None),
    ]


def test_two_messages_in_one_data_frame_and_interleaved_streams() -> None:
    c = Conversation()
    s1 = c.client.get_next_available_stream_id()
    c.client.send_headers(s1, grpc_request_headers("/a.B/One"))
    s3 = c.client.get_next_available_stream_id()
    c.client.send_headers(s3, grpc_request_headers("/a.B/Two"))
    c.client.send_data(s3, grpc_msg(b"m1") + grpc_msg(b"m22"), end_stream=True)
    c.client.send_data(s1, grpc_msg(b"z"), end_stream=True)
    c.flush()
    for sid, status in ((s3, "0"), (s1, "14")):  # answered in reverse order
        c.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        c.server.send_data(sid, grpc_msg(b"r"))
        c.server.send_headers(sid, [("grpc-status", status), ("grpc-message", "down")], end_stream=True)
    c.flush()
    recs, out, _ = records(c.chunks)
    assert [(r.name, r.error_type, r.attributes["rpc.request.message.count"]) for r in recs] == [
        ("a.B/Two", None, 2),
        ("a.B/One", "UNAVAILABLE", 1),
    ]
    assert [x.stream_id for x in out.exchanges] == [3, 1]


def test_rst_stream_cancel_ends_the_exchange_as_an_error() -> None:
    c = Conversation()
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(sid, grpc_request_headers("/demo.S/Slow"))
    c.client.send_data(sid, grpc_msg(b"q"), end_stream=True)
    c.flush()
    c.client.reset_stream(sid, error_code=8)
    c.flush()
    (rec,), _, state = records(c.chunks, conn=CLIENT_CONN)
    assert rec.error_type == "CANCEL" and rec.metric == "rpc.client.call.duration"
    assert "rpc.grpc.status_code" not in rec.attributes and state.streams == {}


def test_goaway_refuses_streams_above_last_stream_id() -> None:
    c = Conversation()
    s1 = c.client.get_next_available_stream_id()
    c.client.send_headers(s1, [(":method", "GET"), (":scheme", "http"), (":path", "/a"), (":authority", "h")])
    c.flush()
    c.server.close_connection(error_code=0, last_stream_id=0)
    c.flush()
    recs, _, state = records(c.chunks)
    assert [(r.name, r.error_type) for r in recs] == [("GET /a", "REFUSED_STREAM")]
    assert state.goaway_last == 0


def _http(c: Conversation, method: str, path: str, status: str, headers=(), body: bytes = b"") -> int:
    sid = c.client.get_next_available_stream_id()
    h = [(":method", method), (":scheme", "https"), (":path", path), (":authority", "example.test"), *headers]
    c.client.send_headers(sid, h, end_stream=True)
    c.flush()
    c.server.send_headers(sid, [(":status", status), ("content-type", "text/plain")], end_stream=not body)
    if body:
        c.server.send_data(sid, body, end_stream=True)
    c.flush()
    return sid


def test_plain_http2_attributes_errors_and_secrets() -> None:
    c = Conversation()
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    secret = (("authorization", "Bearer s3cr3t"), ("cookie", "sid=abc"), ("traceparent", tp))
    _http(c, "GET", "/users/12345/orders?limit=5&x=1", "200", (*secret, ("user-agent", "curl/8")), b"ok!")
    _http(c, "POST", "/boom", "503")
    _http(c, "GET", "/missing", "404")
    (ok, boom, missing), _, _ = records(c.chunks)
    assert ok.protocol == "http" and ok.name == "GET /users/{id}/orders" and ok.error_type is None
    assert ok.metric == "http.server.request.duration"
    assert ok.attributes == {
        "network.protocol.name": "http", "network.protocol.version": "2", "http.request.method": "GET",
        "url.path": "/users/12345/orders", "url.query": "limit=5&x=1", "url.scheme": "https",
        "user_agent.original": "curl/8", "http.request.body.size": 0, "http.response.body.size": 3,
        "http.response.status_code": 200, "client.address": "127.0.0.1", "client.port": 40000,
        # The spec's server.address/port on a server span: the `:authority` (no port: the scheme's default),
        # not the socket (this used to be 127.0.0.1:50051 while HTTP/1.1 used the Host header).
        "server.address": "example.test", "server.port": 443,
    }  # fmt: skip
    assert "s3cr3t" not in repr(ok) and "sid=abc" not in repr(ok)
    assert (ok.trace_id, ok.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert boom.error_type == "503" and missing.error_type is None
    (first, _, as_client), _, _ = records(c.chunks, conn=CLIENT_CONN)
    assert as_client.error_type == "404" and as_client.metric == "http.client.request.duration"
    assert first.attributes["url.full"] == "https://example.test/users/12345/orders?limit=5&x=1"
    assert as_client.attributes["url.full"] == "https://example.test/missing"


def test_informational_response_then_final() -> None:
    c = Conversation()
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(sid, [(":method", "PUT"), (":scheme", "http"), (":path", "/f"), (":authority", "h"),
                                ("expect", "100-continue")])  # fmt: skip
    c.flush()
    c.server.send_headers(sid, [(":status", "100")])
    c.flush()
    c.client.send_data(sid, b"payload", end_stream=True)
    c.server.send_headers(sid, [(":status", "201")], end_stream=True)
    c.flush()
    (rec,), _, _ = records(c.chunks)
    assert (
        rec.attributes["http.response.status_code"] == 201 and rec.attributes["http.request.body.size"] == 7
    )


def test_server_push_is_its_own_exchange() -> None:
    c = Conversation()
    sid = c.client.get_next_available_stream_id()
    get = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "h")]
    c.client.send_headers(sid, get, end_stream=True)
    c.flush()
    c.flush()
    push = [(":method", "GET"), (":scheme", "https"), (":path", "/app.css"), (":authority", "h")]
    c.server.push_stream(sid, 2, push)
    c.server.send_headers(sid, [(":status", "200")], end_stream=True)
    c.server.send_headers(2, [(":status", "200")])
    c.server.send_data(2, b"body{}", end_stream=True)
    c.flush()
    recs, out, _ = records(c.chunks)
    assert sorted((r.name, r.attributes["http.response.body.size"]) for r in recs) == [
        ("GET /", 0),
        ("GET /app.css", 6),
    ]
    assert [x.pushed for x in out.exchanges if x.stream_id == 2] == [True]


def test_request_split_at_every_byte_boundary() -> None:
    c = Conversation()
    c.unary("/demo.Greeter/SayHello", b"hi" * 10, b"hello" * 10)
    req = b"".join(d for direction, d in c.chunks if direction == REQ)
    resp = b"".join(d for direction, d in c.chunks if direction == RESP)
    want = None
    for k in range(len(req) + 1):
        recs, _, _ = records([(REQ, req[:k]), (REQ, req[k:]), (RESP, resp)])
        got = [(r.name, r.attributes, r.error_type, r.degraded) for r in recs]
        want = want or got
        assert got == want and len(got) == 1 and not got[0][3], k
    for k in range(len(resp) + 1):
        recs, _, _ = records([(REQ, req), (RESP, resp[:k]), (RESP, resp[k:])])
        assert [(r.name, r.attributes, r.error_type, r.degraded) for r in recs] == want, k


def test_open_streams_are_bounded() -> None:
    enc = Encoder()
    frames = b"".join(
        HeadersFrame(2 * i + 1, enc.encode(grpc_request_headers("/a.B/C")), flags=["END_HEADERS"]).serialize()
        for i in range(MAX_STREAMS + 50)
    )
    _, out, state = records([(REQ, PREFACE + frames)])
    assert len(state.streams) == MAX_STREAMS and state.evicted == 50 and out.exchanges == []
    assert min(state.streams) == 2 * 50 + 1  # the oldest went first


def test_client_that_stops_reading_at_content_length_still_gets_its_exchange() -> None:
    """curl --http2 closed once content-length bytes came; nginx's empty END_STREAM DATA went unread."""
    c = Conversation()
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":path", "/echo/up"),
                                (":authority", "127.0.0.1")])  # fmt: skip
    c.client.send_data(sid, b"u" * 3000, end_stream=True)
    c.flush()
    c.server.send_headers(sid, [(":status", "200"), ("content-length", "5000")])
    c.server.send_data(sid, b"d" * 3000)
    c.server.send_data(sid, b"d" * 2000)
    c.flush()
    c.server.send_data(sid, b"", end_stream=True)  # sent, but the client had closed without reading it
    (rec,), _, state = records(c.chunks[:], conn=CLIENT_CONN)
    assert (rec.name, rec.attributes["http.response.status_code"], rec.error_type) == (
        "POST /echo/up",
        200,
        None,
    )
    assert (rec.attributes["http.request.body.size"], rec.attributes["http.response.body.size"]) == (
        3000,
        5000,
    )
    assert state.streams == {}
    # Bytes that run short of content-length do not complete it.
    c = Conversation()
    sid = c.client.get_next_available_stream_id()
    get = [(":method", "GET"), (":scheme", "http"), (":path", "/a"), (":authority", "x")]
    c.client.send_headers(sid, get, end_stream=True)
    c.flush()
    c.server.send_headers(sid, [(":status", "200"), ("content-length", "5000")])
    c.server.send_data(sid, b"d" * 4999)
    c.flush()
    assert records(c.chunks, conn=CLIENT_CONN)[0] == []


def test_grpc_timeout_parsing() -> None:
    from protocols.http2.semconv import grpc_timeout_ns

    assert [grpc_timeout_ns(v) for v in ("99m", "100000u", "1S", "2H", "5n")] == [
        99_000_000, 100_000_000, 1_000_000_000, 7_200_000_000_000, 5,
    ]  # fmt: skip
    assert [grpc_timeout_ns(v) for v in (None, "", "m", "123456789m", "12x", "-1m", "1.5S")] == [None] * 7


def test_cancel_after_the_deadline_is_deadline_exceeded_and_before_it_a_cancel() -> None:
    for timeout, want in (("1u", ("DEADLINE_EXCEEDED", 4)), ("1S", ("CANCEL", None))):
        c = Conversation()
        sid = c.client.get_next_available_stream_id()
        c.client.send_headers(sid, grpc_request_headers("/demo.S/Slow", (("grpc-timeout", timeout),)))
        c.client.send_data(sid, grpc_msg(b"q"), end_stream=True)
        c.flush()
        c.client.reset_stream(sid, error_code=8)  # chunks are 1 us apart in drive(): past "1u", within "1S"
        c.flush()
        (rec,), _, _ = records(c.chunks)
        assert (rec.error_type, rec.attributes.get("rpc.grpc.status_code")) == want


def test_stream_whose_end_was_not_copied_is_flushed_degraded_when_the_connection_closes() -> None:
    """A 1 MB gRPC reply written in one call: the capture copied its start, only counted the rest, and
    the trailers (END_STREAM) were in the uncopied part. The call still gets a record at close."""
    from pipeline.conn_table import ConnTable
    from probes.fragment import Batch, ConnEvent, Fragment, Io
    from probes.health import Health
    from protocols.registry import PROTOCOLS

    c = Conversation()
    c.server.update_settings({5: 1 << 20})
    c.client.update_settings({5: 1 << 20})
    c.flush()
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(sid, grpc_request_headers("/demo.S/Big"))
    c.client.send_data(sid, grpc_msg(b"q"), end_stream=True)
    c.flush()
    c.server.increment_flow_control_window(1 << 21)
    c.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    c.server.send_data(sid, grpc_msg(b"r" * 60_000))
    c.server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    c.flush()
    frags, pos, ts = [], {Io.RECV: 0, Io.SEND: 0}, 1000
    for direction, data in c.chunks:
        io = Io.RECV if direction == REQ else Io.SEND
        copied = data if len(data) < 4096 else data[:4096]  # the capture's copy budget
        frags.append(Fragment(CONN.conn_id, io, pos[io], len(data), copied, ts))
        pos[io] += len(data)
        ts += 1000
    health = Health()
    table = ConnTable(PROTOCOLS, health)
    assert table.apply(Batch(CONN, frags)) == []  # the trailers were not seen: the stream is open
    closed = ConnEvent(CONN, ts, True, pos[Io.SEND], pos[Io.RECV])
    (rec,) = table.apply(Batch(CONN, [], closed))
    assert (rec.name, rec.truncated, rec.degraded, rec.error_type) == ("demo.S/Big", True, True, None)
    assert "rpc.grpc.status_code" not in rec.attributes  # unknown, not guessed
    # The zeros standing in for the uncopied trailers' frame header are lost bytes, not malformed ones.
    assert health.total("parse_errors") == 0 and health.total("gaps") == 1
