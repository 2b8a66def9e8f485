"""Property tests: any byte stream through parse/find_boundary/stitch never raises and stays bounded."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.base import Direction
from protocols.http1 import SPEC
from protocols.http1.types import MAX_INTERIM, MAX_PENDING

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz",
    b"PUT /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
    b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",  # answers the HEAD
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def check_bounded(loop) -> None:
    assert len(loop.state.pending) <= MAX_PENDING
    assert len(loop.state.interim) <= MAX_INTERIM


@FAST
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=12),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_valid_stream_any_split(make_loop, picks: list[int], cuts: list[int], pipelined: bool) -> None:
    """Causal feeding (a response only after its request), each message cut anywhere."""
    loop = make_loop()
    exchanges = []
    order = [(REQ, REQUESTS[i]) for i in picks] + [(RESP, RESPONSES[i]) for i in picks]
    if not pipelined:
        order = [step for i in picks for step in ((REQ, REQUESTS[i]), (RESP, RESPONSES[i]))]
    for direction, message in order:
        for part in split(message, cuts):
            loop.feed(direction, part)
            exchanges += loop.run()
    assert not loop.errors
    assert [x.request.frame.target for x in exchanges] == [REQUESTS[i].split(b" ")[1].decode() for i in picks]
    assert not any(x.degraded for x in exchanges)
    check_bounded(loop)


@st.composite
def damaged(draw) -> tuple[bytes, bytes]:
    picks = draw(st.lists(st.integers(0, 4), min_size=1, max_size=10))
    streams = [bytearray(b"".join(table[i] for i in picks)) for table in (REQUESTS, RESPONSES)]
    for stream in streams:
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["flip", "zero", "cut", "insert", "swap"]))
            at = draw(st.integers(0, max(len(stream) - 1, 0)))
            if not stream:
                break
            if kind == "flip":
                stream[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "zero":
                stream[at : at + draw(st.integers(1, 64))] = bytes(len(stream[at : at + 64]))[:64]
            elif kind == "cut":
                del stream[at : at + draw(st.integers(1, 64))]
            elif kind == "insert":
                stream[at:at] = draw(st.binary(max_size=32))
            else:
                other = draw(st.integers(0, len(stream) - 1))
                lo, hi = sorted((at, other))
                stream[lo:hi] = stream[lo:hi][::-1]
    return bytes(streams[0]), bytes(streams[1])


@FAST
@given(damaged(), st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_damaged_streams_never_raise(make_loop, streams, cuts: list[int], gap: bool) -> None:
    loop = make_loop()
    req_parts, resp_parts = split(streams[0], cuts), split(streams[1], cuts)
    for i in range(max(len(req_parts), len(resp_parts))):
        if i < len(req_parts):
            loop.feed(REQ, req_parts[i])
        if i < len(resp_parts):
            loop.feed(RESP, resp_parts[i])
        if gap and i == 1:
            SPEC.on_gap(loop.state, RESP)
        for x in loop.run():
            SPEC.to_record(x, _conn())
        check_bounded(loop)
    loop.run(eof=True)
    check_bounded(loop)


@FAST
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_random_bytes(make_loop, request: bytes, response: bytes) -> None:
    loop = make_loop()
    loop.feed(REQ, request)
    loop.feed(RESP, response)
    loop.run(eof=True)
    check_bounded(loop)
    for direction in (REQ, RESP):
        assert isinstance(SPEC.detect(request, direction), bool)
        for start in (0, 1, len(request) // 2):
            got = SPEC.find_boundary(memoryview(request), direction, start)
            assert got is None or start <= got <= len(request)


def _conn():
    from protocols.base import ConnInfo, Endpoint, Role

    return ConnInfo("c", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), Role.SERVER)
