"""HTTP/1.x parsing, stitching and records on exact bytes."""

from __future__ import annotations

import copy
import os
from collections import deque

import pytest

from protocols.base import NEED_DATA, ConnInfo, Direction, Endpoint, Invalid, Parsed, Role, Skip, Timed
from protocols.http1 import SPEC, Passthrough, Request, Response
from protocols.http1.semconv import split_target
from protocols.http1.types import MAX_HEADERS, MAX_PENDING
from protocols.http_semconv import low_cardinality_path, parse_traceparent, redact_query

REQ, RESP = Direction.REQUEST, Direction.RESPONSE

GET = (
    b"GET /users/42?full=1 HTTP/1.1\r\nHost: shop.example.com:8080\r\nUser-Agent: curl/8.0\r\n"
    b"Accept: */*\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires\r\n\r\n"
    b"7;ext=1\r\nMozilla\r\n"
    b"9\r\nDeveloper\r\n"
    b"0\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\nSet-Cookie: id=secret\r\n\r\n"
)


def parse(data: bytes, direction=REQ, state=None):
    return SPEC.parse_frame(memoryview(data), direction, state or SPEC.new_state())


def test_request_fields_and_case_insensitive_headers() -> None:
    data = (
        b"POST /submit HTTP/1.1\r\nHOST: a.example\r\ncontent-LENGTH: 4\r\nuser-agent: x/1\r\n"
        b"TraceParent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        b"Authorization: Bearer hunter2\r\nCookie: s=hunter2\r\n\r\nbody"
    )
    r = parse(data + GET)
    assert isinstance(r, Parsed) and r.size == len(data)
    f = r.frame
    assert (f.method, f.target, f.version, f.seq, f.host, f.user_agent, f.body_size) == (
        "POST", "/submit", "1.1", 0, "a.example", "x/1", 4
    )  # fmt: skip
    assert f.traceparent.startswith("00-4bf92f35")
    assert "hunter2" not in repr(f)


def test_response_content_length() -> None:
    state = SPEC.new_state()
    assert isinstance(parse(GET, REQ, state), Parsed)
    r = parse(OK + b"HTTP/1.1 ...", RESP, state)
    assert isinstance(r, Parsed) and r.size == len(OK)
    assert (r.frame.status, r.frame.reason, r.frame.body_size, r.frame.seq, r.frame.method) == (
        200, "OK", 5, 0, "GET"
    )  # fmt: skip
    assert not state.pending


def test_keep_alive_two_exchanges(loop) -> None:
    loop.feed(REQ, GET)
    loop.feed(RESP, OK)
    first = loop.run()
    loop.feed(REQ, GET.replace(b"/users/42", b"/users/43"))
    loop.feed(RESP, OK.replace(b"200 OK", b"404 Not Found"))
    second = loop.run()
    assert [x.response.frame.status for x in first + second] == [200, 404]
    assert [x.request.frame.target for x in first + second] == ["/users/42?full=1", "/users/43?full=1"]
    assert not loop.errors


def test_pipelined_requests_matched_in_order(loop) -> None:
    reqs = [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"]  # fmt: skip
    resps = [OK, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", CHUNKED]
    loop.feed(REQ, b"".join(reqs))
    loop.feed(RESP, b"".join(resps))
    xs = loop.run()
    assert [(x.request.frame.method, x.request.frame.target, x.response.frame.body_size) for x in xs] == [
        ("GET", "/a", 5), ("HEAD", "/b", 0), ("POST", "/c", 16)
    ]  # fmt: skip
    assert not loop.errors and not loop.queues[REQ] and not loop.queues[RESP]


def test_chunked_response_with_trailers() -> None:
    state = SPEC.new_state()
    parse(GET, REQ, state)
    r = parse(CHUNKED + OK, RESP, state)
    assert isinstance(r, Parsed) and r.size == len(CHUNKED)
    assert r.frame.chunked and r.frame.body_size == 16
    assert r.frame.trailers == (("expires", "Wed, 21 Oct 2015 07:28:00 GMT"),)  # Set-Cookie never kept


def test_chunked_request_and_no_trailers() -> None:
    data = b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    r = parse(data)
    assert isinstance(r, Parsed) and r.size == len(data) and r.frame.chunked and r.frame.body_size == 3


def test_bad_chunk_size_is_invalid() -> None:
    state = SPEC.new_state()
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    assert isinstance(parse(data, RESP, state), Invalid)
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    assert isinstance(parse(data, RESP, state), Invalid)


def test_close_delimited_body_ends_at_eof(loop) -> None:
    loop.feed(REQ, b"GET /old HTTP/1.0\r\n\r\n")
    loop.feed(RESP, b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>")
    assert loop.run() == []
    loop.feed(RESP, b"</html>")
    assert loop.run() == []
    [x] = loop.run(eof=True)
    assert x.response.frame.close_delimited and x.response.frame.body_size == 13
    assert x.response.frame.version == "1.0" and not loop.errors


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_bodyless_statuses(status: bytes) -> None:
    state = SPEC.new_state()
    parse(GET, REQ, state)
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n"
    r = parse(head + OK, RESP, state)
    assert isinstance(r, Parsed) and r.size == len(head) and r.frame.body_size == 0


def test_head_response_has_no_body(loop) -> None:
    loop.feed(REQ, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    loop.feed(RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 612\r\n\r\n" + OK)
    xs = loop.run()
    assert [(x.request.frame.method, x.response.frame.body_size) for x in xs] == [("HEAD", 0), ("GET", 5)]


def test_early_hints_then_final(loop) -> None:
    loop.feed(REQ, GET)
    loop.feed(RESP, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK)
    [x] = loop.run()
    assert x.interim == (103,) and x.response.frame.status == 200


def test_expect_100_continue(loop) -> None:
    headers = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    loop.feed(REQ, headers)
    assert loop.run() == []
    loop.feed(RESP, b"HTTP/1.1 100 Continue\r\n\r\n")
    assert loop.run() == []  # the 100 is not the exchange's response
    loop.feed(REQ, b"0123456789")
    assert loop.run() == []
    loop.feed(RESP, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    [x] = loop.run()
    assert x.request.frame.expect_continue and x.request.frame.body_size == 10
    assert x.response.frame.status == 201 and x.interim == (100,) and not loop.errors


def test_websocket_upgrade_goes_quiet(loop) -> None:
    loop.feed(REQ, b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")  # fmt: skip
    loop.feed(RESP, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello")  # fmt: skip
    [x] = loop.run()
    assert x.upgrade == "websocket" and x.request.frame.upgrade == "websocket"
    loop.feed(REQ, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" + GET)  # a GET inside ws data: not HTTP
    loop.feed(RESP, OK)
    assert loop.run() == [] and not loop.errors
    assert not loop.queues[REQ] and not loop.queues[RESP]  # passthrough frames dropped by stitch


def test_h2c_preface_before_101_is_parsed(loop) -> None:
    loop.feed(REQ, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                   b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")  # fmt: skip
    # Both arrive in one round: requests are parsed first, so the preface is seen before the 101.
    loop.feed(REQ, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    loop.feed(RESP, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # fmt: skip
    [x] = loop.run()
    assert x.upgrade == "h2c" and not loop.errors


def test_declined_upgrade_keeps_parsing(loop) -> None:
    loop.feed(REQ, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + GET)
    loop.feed(RESP, OK + OK)
    assert [x.upgrade for x in loop.run()] == ["", ""] and not loop.errors


def test_connect_tunnel(loop) -> None:
    loop.feed(REQ, b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n")
    loop.feed(RESP, b"HTTP/1.1 200 Connection Established\r\n\r\n")
    [x] = loop.run()
    loop.feed(REQ, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    loop.feed(RESP, b"\x16\x03\x03\x00\x5d\x02")
    assert loop.run() == [] and not loop.errors
    record = SPEC.to_record(x, conn(Role.CLIENT))
    assert record.name == "CONNECT" and record.attributes["server.address"] == "db.internal"


def test_zero_filled_body_is_opaque(loop) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n"
    loop.feed(REQ, GET + GET)
    loop.feed(RESP, head + b"\x00" * 4096 + OK)
    xs = loop.run()
    assert [x.response.frame.body_size for x in xs] == [4096, 5] and not loop.errors
    truncated = Timed(xs[0].response.frame, 1, 2, 0, truncated=True)
    x = type(xs[0])(xs[0].request, truncated)
    assert SPEC.to_record(x, conn(Role.SERVER)).truncated


@pytest.mark.parametrize(
    "message, direction",
    [
        (GET, REQ),
        (b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", REQ),
        (OK, RESP),
        (CHUNKED, RESP),
    ],
)
def test_split_at_every_byte(message: bytes, direction) -> None:
    state = SPEC.new_state()
    if direction is RESP:
        SPEC.parse_frame(memoryview(GET), REQ, state)
    before = repr(state)
    body_start = message.index(b"\r\n\r\n") + 4
    for cut in range(1, len(message)):
        if cut < body_start:
            assert SPEC.parse_frame(memoryview(message[:cut]), direction, state) is NEED_DATA, cut
            assert repr(state) == before  # NEED_DATA must not mutate state
            continue
        # Headers whole, body not: the message is known and its body is passed as it comes, never awaited.
        ahead = copy.deepcopy(state)
        skip = SPEC.parse_frame(memoryview(message[:cut]), direction, ahead)
        assert isinstance(skip, Skip) and skip.size + skip.skip > 0, cut
        if not skip.frame.chunked:
            assert skip.size + skip.skip == len(message) and not skip.more
    whole = SPEC.parse_frame(memoryview(message), direction, state)
    assert isinstance(whole, Parsed) and whole.size == len(message)
    fresh = SPEC.new_state()
    if direction is RESP:
        SPEC.parse_frame(memoryview(GET), REQ, fresh)
    again = SPEC.parse_frame(memoryview(message + GET), direction, fresh)  # followed by more bytes
    assert isinstance(again, Parsed) and again.frame == whole.frame and again.size == whole.size


def test_limits() -> None:
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    assert isinstance(parse(many), Invalid)
    enough = b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n"
    assert isinstance(parse(enough), Parsed)
    huge = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n"
    assert isinstance(parse(huge), Invalid)
    assert isinstance(parse(huge[: 64 * 1024 + 10]), Invalid)  # no end of headers within the limit
    assert isinstance(parse(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Invalid)
    assert isinstance(parse(b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"), Invalid)
    assert isinstance(parse(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"), Invalid)
    assert isinstance(parse(b"BREW /pot HTTP/1.1\r\n\r\n"), Invalid)
    assert isinstance(parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Invalid)
    assert isinstance(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Invalid)  # rejected early


def test_pending_methods_are_bounded() -> None:
    state = SPEC.new_state()
    for _ in range(MAX_PENDING + 50):
        parse(GET, REQ, state)
    assert len(state.pending) == MAX_PENDING


VALID_PREFIXES = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", REQ),
    (b"GET /", REQ),
    (b"OPTIONS * HTTP/1.1\r\n", REQ),
    (b"CONNECT example.com:443 HTTP/1.1\r\n", REQ),
    (b"GET http://example.com/x HTTP/1.1\r\n", REQ),
    (b"PROPFIND /dav/ HTTP/1.1\r\n", REQ),
    (b"DELETE /items/7 HTTP/1.0\r\n", REQ),
    (b"HTTP/1.1 200 OK\r\n", RESP),
    (b"HTTP/1.0 404", RESP),
    (b"HTTP/1.1", RESP),
    (b"HTTP/1.1 204\r\n", RESP),
]
REJECTED = [
    (b"G", REQ),  # too short to tell
    (b"GET", REQ),
    (b"GET key\r\n", REQ),  # Redis inline command
    (b"GET /x\r\n", REQ),  # HTTP/0.9 / Redis
    (b"GET / HTTP/2.0\r\n", REQ),
    (b"BREW /pot HTTP/1.1\r\n", REQ),
    (b"get / HTTP/1.1\r\n", REQ),
    (b"*1\r\n$4\r\nPING\r\n", REQ),  # Redis RESP
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", REQ),  # TLS ClientHello
    (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", REQ),  # PostgreSQL SSLRequest
    (b"\x00\x00\x00\x1f\x00\x12\x00\x03\x00\x00\x00\x01\x00\x07client", REQ),  # Kafka ApiVersions
    (b"HTTP/2 200", RESP),
    (b"HTTP/1.1 999 Nope\r\n", RESP),
    (b"HTTP/1.1 20\r\n", RESP),
    (b"+OK\r\n", RESP),
    (b"\x16\x03\x03\x00\x5d\x02\x00", RESP),
    (b"R\x00\x00\x00\x08\x00\x00\x00\x00", RESP),  # PostgreSQL AuthenticationOk
    (GET, RESP),
    (OK, REQ),
]


@pytest.mark.parametrize("data, direction", VALID_PREFIXES)
def test_detect_accepts(data: bytes, direction) -> None:
    assert SPEC.detect(data, direction)


@pytest.mark.parametrize("data, direction", REJECTED)
def test_detect_rejects(data: bytes, direction) -> None:
    assert not SPEC.detect(data, direction)


def test_detect_rejects_random_bytes() -> None:
    rng = __import__("random").Random(7)
    for _ in range(2000):
        data = rng.randbytes(rng.randint(1, 64))
        assert not SPEC.detect(data, REQ) and not SPEC.detect(data, RESP)


def test_find_boundary_and_resync(loop) -> None:
    garbage = os.urandom(0) + b"\x00\x17junk\r\nmore junk HTTP/1.1 x\r\n"
    assert SPEC.find_boundary(memoryview(garbage + GET), REQ, 0) == len(garbage)
    assert SPEC.find_boundary(memoryview(GET + GET), REQ, 1) == len(GET)
    assert SPEC.find_boundary(memoryview(b"garbage\r\nGET /pa"), REQ, 1) == 9  # partial line kept
    assert SPEC.find_boundary(memoryview(b"no http here at all"), REQ, 1) is None
    assert SPEC.find_boundary(memoryview(b"end of a body" + GET), REQ, 0) == 13  # bodies end mid-line
    assert SPEC.find_boundary(memoryview(b"xUNLOCK /f HTTP/1.1\r\n"), REQ, 0) == 1
    assert SPEC.find_boundary(memoryview(b"hello" + OK), RESP, 0) == 5
    assert SPEC.find_boundary(memoryview(b"xx\r\n" + OK), RESP, 1) == 4
    loop.feed(REQ, garbage + GET)
    loop.feed(RESP, b"\x00\x01junk\r\n" + OK)
    [x] = loop.run()
    assert x.response.frame.status == 200 and len(loop.errors) == 2


def test_gap_after_requests_pairs_by_time(loop) -> None:
    loop.feed(REQ, GET)
    loop.feed(REQ, GET.replace(b"42", b"43"))
    loop.run()
    SPEC.on_gap(loop.state, RESP)  # the response to the first request was lost
    loop.feed(RESP, OK)
    [x] = loop.run()
    assert x.request.frame.target.startswith("/users/43") and x.degraded
    assert not loop.queues[REQ]  # the unanswered first request was dropped


def test_a_response_lost_in_a_hole_after_pipelined_requests_pairs_by_time(loop) -> None:
    """test_gap_after_requests_pairs_by_time with the bytes really lost: the loop finds the hole."""
    loop.feed(REQ, GET.replace(b"42", b"41"))
    loop.feed(RESP, OK)  # the response stream has begun: what comes after a hole is a gap
    loop.feed(REQ, GET)
    loop.feed(REQ, GET.replace(b"42", b"43"))
    loop.run()
    loop.feed(RESP, OK, hole=len(OK))  # the response to /users/42 never seen
    loop.run()
    loop.run(eof=True)
    assert [(x.request.frame.target[:9], x.degraded) for x in loop.exchanges] == [
        ("/users/41", False),
        ("/users/43", True),
    ]
    assert loop.health.total("gaps") == 1 and loop.health.total("unmatched_frames") == 1
    assert loop.errors == []


def test_gap_before_request_pairs_by_seq(loop) -> None:
    loop.feed(REQ, GET)
    loop.run()
    SPEC.on_gap(loop.state, RESP)
    loop.feed(REQ, GET.replace(b"42", b"43"))
    loop.feed(RESP, OK)
    [x] = loop.run()
    assert x.request.frame.target.startswith("/users/43") and not x.degraded


def test_stitch_skips_lost_frames() -> None:
    state = SPEC.new_state()

    def req(seq: int, ts: int) -> Timed:
        return Timed(Request("GET", "/", "1.1", seq), ts, ts)

    def resp(seq: int, ts: int) -> Timed:
        return Timed(Response(200, "OK", "1.1", seq, "GET"), ts, ts)

    requests = deque([req(0, 1), req(1, 2), req(3, 4)])
    responses = deque([resp(1, 5), resp(2, 6), resp(3, 7), Timed(Passthrough(3), 8, 8)])
    xs = SPEC.stitch(requests, responses, state)
    assert [(x.request.frame.seq, x.response.frame.seq) for x in xs] == [(1, 1), (3, 3)]
    assert not requests and not responses
    requests.append(req(4, 9))
    assert SPEC.stitch(requests, responses, state) == [] and len(requests) == 1  # waits for its response


def test_frames_stitch_drops_unpaired_are_counted() -> None:
    """Request 0 (its answer lost) and response 2 (its question lost) left the queues as records never
    could: once silently, now reported to the framing loop, which counts them as unmatched_frames."""
    state = SPEC.new_state()
    requests = deque([Timed(Request("GET", "/", "1.1", seq), seq, seq) for seq in (0, 1, 3)])
    responses = deque([Timed(Response(200, "OK", "1.1", seq, "GET"), 5 + seq, 5 + seq) for seq in (1, 2, 3)])
    assert len(SPEC.stitch(requests, responses, state)) == 2
    assert SPEC.take_unmatched(state) == 2 and SPEC.take_unmatched(state) == 0


def conn(role: Role) -> ConnInfo:
    server, client = Endpoint("10.0.0.5", 8080), Endpoint("10.0.0.9", 51234)
    local, remote = (server, client) if role == Role.SERVER else (client, server)
    return ConnInfo("node/1/7/0", local, remote, role)


def one_exchange(make_loop, request: bytes, response: bytes):
    loop = make_loop()
    loop.feed(REQ, request)
    loop.feed(RESP, response)
    [x] = loop.run()
    return x


def test_record_server_role(make_loop) -> None:
    request = (
        b"GET /users/42/orders/9f86d081884c7d65?full=1 HTTP/1.1\r\nHost: shop.example.com:8080\r\n"
        b"User-Agent: curl/8.0\r\nAuthorization: Basic c2VjcmV0\r\nCookie: sid=topsecret\r\n"
        b"X-Api-Key: key-topsecret\r\n"
        b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
    )
    response = b"HTTP/1.1 503 Unavailable\r\nSet-Cookie: sid=topsecret\r\nContent-Length: 5\r\n\r\nbusy!"
    rec = SPEC.to_record(one_exchange(make_loop, request, response), conn(Role.SERVER))
    assert rec.protocol == "http" and rec.role == Role.SERVER
    assert rec.name == "GET /users/{id}/orders/{id}"
    assert rec.metric == "http.server.request.duration" and rec.error_type == "503"
    assert rec.attributes == {
        "http.request.method": "GET",
        "url.path": "/users/42/orders/9f86d081884c7d65",
        "url.query": "full=1",
        "url.scheme": "http",
        "http.response.status_code": 503,
        "network.protocol.name": "http",
        "network.protocol.version": "1.1",
        "user_agent.original": "curl/8.0",
        "http.request.body.size": 0,
        "http.response.body.size": 5,
        "server.address": "shop.example.com",
        "server.port": 8080,
        "client.address": "10.0.0.9",
        "client.port": 51234,
        "error.type": "503",
    }
    assert set(rec.metric_attributes) == {
        "http.request.method", "http.response.status_code", "error.type", "network.protocol.name",
        "network.protocol.version", "url.scheme",
    }  # fmt: skip
    assert (rec.trace_id, rec.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert rec.start_ns <= rec.end_ns and not rec.degraded and not rec.truncated and rec.record_id == ""
    assert "topsecret" not in repr(rec) and "c2VjcmV0" not in repr(rec)


def test_record_client_role(make_loop) -> None:
    request = b"PROPFIND /dav/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    rec = SPEC.to_record(one_exchange(make_loop, request, response), conn(Role.CLIENT))
    assert rec.metric == "http.client.request.duration" and rec.error_type == "404"
    assert rec.attributes["http.request.method"] == "_OTHER"
    assert rec.attributes["http.request.method_original"] == "PROPFIND"
    assert rec.attributes["server.address"] == "10.0.0.5" and rec.attributes["server.port"] == 8080
    assert rec.attributes["client.address"] == "10.0.0.9" and rec.attributes["client.port"] == 51234
    assert "server.address" in rec.metric_attributes and rec.name == "HTTP /dav/" and rec.trace_id == ""
    server_view = SPEC.to_record(one_exchange(make_loop, request, response), conn(Role.SERVER))
    assert server_view.error_type is None and "error.type" not in server_view.attributes


def test_absolute_form_target_names_the_server_not_the_host_header(make_loop) -> None:
    """The spec: with an absolute-form target (a request to a proxy), server.address/port and url.full come
    from the target's authority; the Host header used to win."""
    request = b"GET http://u:pw@origin.example:8081/p?q=1 HTTP/1.1\r\nHost: proxy.local:3128\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    rec = SPEC.to_record(one_exchange(make_loop, request, response), conn(Role.CLIENT))
    a = rec.attributes
    assert (a["server.address"], a["server.port"]) == ("origin.example", 8081)
    assert a["url.full"] == "http://origin.example:8081/p?q=1" and "pw" not in repr(rec)


def test_record_upgrade_attribute(make_loop) -> None:
    x = one_exchange(
        make_loop,
        b"GET /ws HTTP/1.1\r\nHost: [::1]:9000\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    rec = SPEC.to_record(x, conn(Role.SERVER))
    assert rec.attributes["http.response.header.upgrade"] == "websocket"
    assert rec.attributes["server.address"] == "::1" and rec.error_type is None


def test_helpers() -> None:
    assert low_cardinality_path("/a/123/b/550e8400-e29b-41d4-a716-446655440000/c") == "/a/{id}/b/{id}/c"
    assert low_cardinality_path("/static/app.js") == "/static/app.js"
    assert low_cardinality_path("/t/AbCdEf0123456789xyz") == "/t/{id}"
    assert split_target("http://u@h.example:81/p?q=1#f") == ("h.example:81", "/p", "q=1")
    assert split_target("/p#frag") == ("", "/p", "")
    assert parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01") == ("", "")
    assert parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7") == ("", "")
    assert parse_traceparent("garbage") == ("", "")


def test_query_values_that_are_credentials_are_redacted() -> None:
    q = "page=2&api_key=k1&access_token=t1&Signature=s1&q=shoes&password=p&flag&key=v"
    assert redact_query(q) == (
        "page=2&api_key=REDACTED&access_token=REDACTED&Signature=REDACTED&q=shoes&password=REDACTED&flag"
        "&key=REDACTED"
    )
    assert redact_query("plain") == "plain"
