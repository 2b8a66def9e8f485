"""HTTP/2 + gRPC parse+stitch throughput: unary calls/s, and the ratio to a loop that only slices bytes.

Traffic comes from two real `h2` endpoints (client and server) exchanging gRPC unary calls on one
connection; the measured loop drives parse_frame / stitch / to_record the way the framing loop does.
Run: .venv/bin/python bench/parsers_http2.py [calls]
"""

from __future__ import annotations

import sys
import time
from collections import deque
from struct import pack

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived

from protocols.base import NEED_DATA, ConnInfo, Direction, Endpoint, Parsed, Role, Timed
from protocols.http2 import SPEC

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
CONN = ConnInfo("bench", Endpoint("127.0.0.1", 50051), Endpoint("127.0.0.1", 40000), Role.SERVER)
HEADERS = [
    (":method", "POST"), (":scheme", "http"), (":path", "/demo.Greeter/SayHello"),
    (":authority", "127.0.0.1:50051"), ("content-type", "application/grpc"), ("te", "trailers"),
    ("grpc-accept-encoding", "identity,deflate,gzip"), ("user-agent", "grpc-python/1.66 grpc-c/42"),
]  # fmt: skip


def ack(conn: H2Connection, events: list) -> None:
    """Give flow-control credit back, as a real endpoint would."""
    for ev in events:
        if isinstance(ev, DataReceived) and ev.flow_controlled_length:
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)


def traffic(calls: int) -> list[tuple[Direction, bytes]]:
    """One chunk per write, as a capture would see them: request writes, then response writes."""
    client = H2Connection(H2Configuration(client_side=True))
    server = H2Connection(H2Configuration(client_side=False))
    chunks: list[tuple[Direction, bytes]] = []

    def pump() -> None:
        for _ in range(4):
            c, s = client.data_to_send(), server.data_to_send()
            if c:
                chunks.append((REQ, c))
                ack(server, server.receive_data(c))
            if s:
                chunks.append((RESP, s))
                ack(client, client.receive_data(s))

    client.initiate_connection()
    server.initiate_connection()
    pump()
    msg = pack(">BI", 0, 12) + b"hello world!"
    for _ in range(calls):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, HEADERS)
        client.send_data(sid, msg, end_stream=True)
        pump()
        server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        server.send_data(sid, msg)
        server.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "")], end_stream=True)
        pump()
    return chunks


def run_parser(chunks: list[tuple[Direction, bytes]], records: bool) -> int:
    state = SPEC.new_state()
    parse, stitch, to_record = SPEC.parse_frame, SPEC.stitch, SPEC.to_record
    bufs = {REQ: bytearray(), RESP: bytearray()}
    queues: dict[Direction, deque] = {REQ: deque(), RESP: deque()}
    done = 0
    for t, (d, data) in enumerate(chunks):
        buf = bufs[d]
        buf += data
        q = queues[d]
        while buf:
            with memoryview(buf) as mv:
                r = parse(mv, d, state)
            if r is NEED_DATA or not isinstance(r, Parsed):
                break
            q.append(Timed(r.frame, t, t))
            del buf[: r.size]
        for x in stitch(queues[REQ], queues[RESP], state):
            if records:
                to_record(x, CONN)
            done += 1
    return done


def run_bare(chunks: list[tuple[Direction, bytes]]) -> int:
    """The floor: the same buffering, slicing each frame out by its 9-byte header and nothing else."""
    bufs = {REQ: bytearray(), RESP: bytearray()}
    frames = 0
    for d, data in chunks:
        buf = bufs[d]
        buf += data
        if d is REQ and buf[:3] == b"PRI":
            del buf[:24]
        while len(buf) >= 9:
            size = 9 + int.from_bytes(buf[:3], "big")
            if len(buf) < size:
                break
            bytes(buf[:size])
            del buf[:size]
            frames += 1
    return frames


def best_of(fn, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    chunks = traffic(calls)
    assert run_parser(chunks, True) == calls, "every call must be stitched"
    parse_stitch = best_of(lambda: run_parser(chunks, False))
    with_records = best_of(lambda: run_parser(chunks, True))
    bare = best_of(lambda: run_bare(chunks))
    print(f"http2/grpc unary calls: {calls}, bytes: {sum(len(c) for _, c in chunks)}")
    print(f"parse+stitch:           {calls / parse_stitch:10.0f} calls/s")
    print(f"parse+stitch+to_record: {calls / with_records:10.0f} calls/s")
    print(f"bare slicing loop:      {calls / bare:10.0f} calls/s")
    print(f"ratio parse+stitch / bare: {bare / parse_stitch:.3f}")


if __name__ == "__main__":
    main()
