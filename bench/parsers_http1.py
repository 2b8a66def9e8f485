"""Micro-benchmark: HTTP/1.1 exchanges/s through parse_frame (+ stitch, + to_record), one core.

Run: .venv/bin/python bench/parsers_http1.py [seconds-per-case]
"""

from __future__ import annotations

import sys
import time
from collections import deque

from protocols.base import ConnInfo, Direction, Endpoint, Parsed, Role, Timed
from protocols.http1 import SPEC

REQUEST = (
    b"GET /api/users/12345/orders?limit=10 HTTP/1.1\r\n"
    b"Host: shop.example.com:8080\r\n"
    b"User-Agent: curl/7.88.1\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Sun, 23 Nov 2025 15:19:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 27\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b'{"id":12345,"orders":[1,2]}'
)
BATCH = 100  # exchanges per pipelined buffer, as a framing loop sees a busy keep-alive connection
CONN = ConnInfo("n/1/3/0", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 40000), Role.SERVER)


def bare(reqs: bytes, resps: bytes) -> int:
    """Only slice the same bytes the parser consumes: the floor any parser pays."""
    rl, sl = len(REQUEST), len(RESPONSE)
    for data, size in ((reqs, rl), (resps, sl)):
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            bytes(view[pos : pos + size])
            pos += size
    return BATCH


def parse_only(reqs: bytes, resps: bytes) -> int:
    state = SPEC.new_state()
    parse = SPEC.parse_frame
    done = 0
    for data, direction in ((reqs, Direction.REQUEST), (resps, Direction.RESPONSE)):
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            r = parse(view[pos:], direction, state)
            assert isinstance(r, Parsed)
            pos += r.size
            done += 1
    return done // 2


def full(reqs: bytes, resps: bytes, record: bool) -> int:
    state = SPEC.new_state()
    parse = SPEC.parse_frame
    queues: dict[Direction, deque] = {Direction.REQUEST: deque(), Direction.RESPONSE: deque()}
    for data, direction in ((reqs, Direction.REQUEST), (resps, Direction.RESPONSE)):
        view = memoryview(data)
        pos = 0
        q = queues[direction]
        while pos < len(data):
            r = parse(view[pos:], direction, state)
            assert isinstance(r, Parsed)
            q.append(Timed(r.frame, pos, pos + r.size, pos))
            pos += r.size
    exchanges = SPEC.stitch(queues[Direction.REQUEST], queues[Direction.RESPONSE], state)
    if record:
        for x in exchanges:
            SPEC.to_record(x, CONN)
    return len(exchanges)


def rate(fn, seconds: float) -> float:
    reqs, resps = REQUEST * BATCH, RESPONSE * BATCH
    n = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        n += fn(reqs, resps)
    return n / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    floor = rate(bare, seconds)
    print(f"bare slicing loop          {floor:>12,.0f} exchanges/s")
    for label, fn in (
        ("parse_frame x2", parse_only),
        ("parse + stitch", lambda a, b: full(a, b, False)),
        ("parse + stitch + to_record", lambda a, b: full(a, b, True)),
    ):
        r = rate(fn, seconds)
        print(f"{label:<26} {r:>12,.0f} exchanges/s   {r / floor:.3f} of bare")


if __name__ == "__main__":
    main()
