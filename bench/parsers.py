"""Parser throughput per core: exchanges/s through parse_frame + stitch + to_record, per protocol, measured
side by side with a bare loop that buffers the same writes and slices out exactly the same frames.

Each workload is a list of writes (direction, bytes) on one connection, as a capture sees them. The
driver does what pipeline/framing.py does per write: append to that direction's buffer, parse frames
until NEED_DATA, stitch, make records. The bare loop replays the frame sizes the parser returned, so
the ratio is "cost of understanding the bytes" over "cost of merely cutting them out".

Run: .venv/bin/python bench/parsers.py [seconds per measurement, default 2] [protocol ...]
"""

from __future__ import annotations

import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.base import NEED_DATA, ConnInfo, Direction, Endpoint, Parsed, ProtocolSpec, Role, Timed

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
Writes = list[tuple[Direction, bytes]]
CONN = ConnInfo("bench/1", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 40000), Role.SERVER)


# -- workloads ---------------------------------------------------------------------------------------


def http1_writes(n: int) -> Writes:
    """A keep-alive connection: a curl-like GET with a traceparent, a small JSON answer."""
    out: Writes = []
    for i in range(n):
        out.append((REQ, (
            b"GET /api/users/%d/orders?limit=10 HTTP/1.1\r\nHost: shop.example.com:8080\r\n"
            b"User-Agent: curl/7.88.1\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n"
            b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n" % (10000 + i)
        )))  # fmt: skip
        out.append((RESP, (
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 23 Nov 2025 15:19:00 GMT\r\n"
            b"Content-Type: application/json\r\nContent-Length: 27\r\nConnection: keep-alive\r\n\r\n"
            b'{"id":12345,"orders":[1,2]}'
        )))  # fmt: skip
    return out


def grpc_writes(n: int) -> Writes:
    """Unary gRPC calls between two real `h2` endpoints on one h2c connection (HPACK tables warm)."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived

    client = H2Connection(H2Configuration(client_side=True))
    server = H2Connection(H2Configuration(client_side=False))
    out: Writes = []

    def pump() -> None:
        for _ in range(4):
            for conn, peer, d in ((client, server, REQ), (server, client, RESP)):
                data = conn.data_to_send()
                if data:
                    out.append((d, data))
                    for ev in peer.receive_data(data):
                        if isinstance(ev, DataReceived) and ev.flow_controlled_length:
                            peer.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    client.initiate_connection()
    server.initiate_connection()
    pump()
    msg = struct.pack(">BI", 0, 12) + b"hello world!"
    headers = [
        (":method", "POST"), (":scheme", "http"), (":path", "/demo.Greeter/SayHello"),
        (":authority", "127.0.0.1:50051"), ("content-type", "application/grpc"), ("te", "trailers"),
        ("grpc-accept-encoding", "identity,deflate,gzip"), ("user-agent", "grpc-python/1.66 grpc-c/42"),
    ]  # fmt: skip
    for _ in range(n):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, headers)
        client.send_data(sid, msg, end_stream=True)
        pump()
        server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        server.send_data(sid, msg)
        server.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "")], end_stream=True)
        pump()
    return out


def _mysql_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def _coldef(name: bytes, seq: int) -> bytes:
    parts = [b"def", b"shop", b"items", b"items", name, name]
    body = b"".join(bytes([len(p)]) + p for p in parts) + b"\x0c\x21\x00\x00\x01\x00\x00\xfd" + bytes(5)
    return _mysql_packet(seq, body)


def mysql_writes(n: int) -> Writes:
    """Text protocol: UPDATE -> OK, and SELECT -> a 2-column, 1-row result set, alternately."""
    out: Writes = []
    for i in range(n):
        if i % 2:
            out.append((REQ, _mysql_packet(0, b"\x03UPDATE items SET name = 'x%d' WHERE id = %d" % (i, i))))
            out.append((RESP, _mysql_packet(1, b"\x00\x01\x00\x02\x00\x00\x00")))
        else:
            out.append((REQ, _mysql_packet(0, b"\x03SELECT id, name FROM items WHERE id = %d" % i)))
            out.append((RESP, (
                _mysql_packet(1, b"\x02") + _coldef(b"id", 2) + _coldef(b"name", 3)
                + _mysql_packet(4, b"\xfe\x00\x00\x02\x00") + _mysql_packet(5, b"\x011\x05apple")
                + _mysql_packet(6, b"\xfe\x00\x00\x02\x00")
            )))  # fmt: skip
    return out


def _resp_command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def redis_writes(n: int) -> Writes:
    """SET key value -> +OK alternating with GET key -> a 32-byte bulk string, one write each."""
    out: Writes = []
    value = b"v" * 32
    for i in range(n):
        key = b"key:%012d" % i
        if i % 2:
            out += [(REQ, _resp_command(b"SET", key, value)), (RESP, b"+OK\r\n")]
        else:
            out += [(REQ, _resp_command(b"GET", key)), (RESP, b"$32\r\n" + value + b"\r\n")]
    return out


def redis_pipelined_writes(n: int) -> Writes:
    """The same commands as redis-benchmark -P 16 sends them: 16 in one write, their replies in one read."""
    pairs = redis_writes(n)
    out: Writes = []
    for at in range(0, len(pairs), 32):
        chunk = pairs[at : at + 32]
        out.append((REQ, b"".join(data for d, data in chunk if d is REQ)))
        out.append((RESP, b"".join(data for d, data in chunk if d is RESP)))


def _pg(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack(">I", 4 + len(body)) + body


def postgres_writes(n: int) -> Writes:
    """Simple query UPDATE -> CommandComplete + ReadyForQuery, and a psycopg-style extended SELECT
    (Parse/Bind/Describe/Execute/Sync -> 1, 2, a 2-column RowDescription, 1 DataRow, C, Z), alternately."""
    field = b"\x00" * 4 + b"\x00\x01" + b"\x00\x00\x00\x19" + b"\xff\xff" + b"\xff\xff\xff\xff" + b"\x00\x00"
    answer = (
        _pg(b"1") + _pg(b"2") + _pg(b"T", b"\x00\x02id\x00" + field + b"name\x00" + field)
        + _pg(b"D", b"\x00\x02\x00\x00\x00\x011\x00\x00\x00\x05apple") + _pg(b"C", b"SELECT 1\x00")
        + _pg(b"Z", b"I")
    )  # fmt: skip
    out: Writes = []
    for i in range(n):
        if i % 2:
            out.append((REQ, _pg(b"Q", b"UPDATE items SET name = 'x%d' WHERE id = %d\x00" % (i, i))))
            out.append((RESP, _pg(b"C", b"UPDATE 1\x00") + _pg(b"Z", b"I")))
        else:
            value = b"%d" % i
            out.append((REQ, (
                _pg(b"P", b"\x00SELECT id, name FROM items WHERE id = $1\x00\x00\x00")
                + _pg(b"B", b"\x00\x00\x00\x00\x00\x01" + struct.pack(">I", len(value)) + value + b"\x00\x00")
                + _pg(b"D", b"P\x00") + _pg(b"E", b"\x00\x00\x00\x00\x00") + _pg(b"S")
            )))  # fmt: skip
            out.append((RESP, answer))
    return out


# -- the two loops -----------------------------------------------------------------------------------


def kafka_writes(n: int) -> Writes:
    """A client's connection: Produce v9 (one partition, a batch of 10 records) alternating with Fetch
    v12 returning one batch of 10 records; correlation ids increasing, as kafka-python sends them."""
    from tests.protocols.kafka import wire

    out: Writes = []
    records = wire.batch(10, value=b"v" * 100)
    for i in range(n):
        if i % 2 == 0:
            out.append((REQ, wire.produce_request(9, i, "orders", {i % 4: records}, acks=1)))
            out.append((RESP, wire.produce_response(9, i, "orders", [(i % 4, 0, 1000 + i)])))
        else:
            out.append((REQ, wire.fetch_request(12, i, "orders", [i % 4])))
            out.append((RESP, wire.fetch_response(12, i, "orders", [(i % 4, 0, records)])))
    return out


def run_parser(spec: ProtocolSpec, writes: Writes, sizes: list[int] | None = None) -> int:
    """parse_frame until NEED_DATA after every write, then stitch and to_record: the framing loop's work."""
    state = spec.new_state()
    parse, stitch, to_record = spec.parse_frame, spec.stitch, spec.to_record
    bufs = {REQ: bytearray(), RESP: bytearray()}
    queues: dict[Direction, deque] = {REQ: deque(), RESP: deque()}
    done = 0
    for t, (d, data) in enumerate(writes):
        buf, q = bufs[d], queues[d]
        buf += data
        pos = 0
        with memoryview(buf) as view:
            while pos < len(buf):
                r = parse(view[pos:], d, state)
                if r is NEED_DATA or not isinstance(r, Parsed):
                    break
                q.append(Timed(r.frame, t, t, pos))
                if sizes is not None:
                    sizes.append(r.size)
                pos += r.size
        del buf[:pos]
        for x in stitch(queues[REQ], queues[RESP], state):
            to_record(x, CONN)
            done += 1
    return done


def run_bare(writes: Writes, sizes: list[int]) -> int:
    """The same buffering, cutting out the same frames (by the sizes the parser returned), nothing else."""
    bufs = {REQ: bytearray(), RESP: bytearray()}
    it = iter(sizes)
    pending = next(it, 0)
    frames = 0
    for d, data in writes:
        buf = bufs[d]
        buf += data
        pos = 0
        with memoryview(buf) as view:
            while pending and pos + pending <= len(buf):
                bytes(view[pos : pos + pending])
                pos += pending
                frames += 1
                pending = next(it, 0)
        del buf[:pos]
    return frames


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Best time of one call over `seconds` of repeats."""
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
    return best


def main() -> None:
    from protocols import http1, http2, kafka, mysql, postgres, redis

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    chosen = set(sys.argv[2:])
    calls = 5000
    cases = [
        ("http1", http1.SPEC, http1_writes, 100_000),
        ("grpc", http2.SPEC, grpc_writes, 30_000),
        ("mysql", mysql.SPEC, mysql_writes, 50_000),
        ("postgres", postgres.SPEC, postgres_writes, 60_000),
        ("redis", redis.SPEC, redis_writes, 100_000),
        ("redis-P16", redis.SPEC, redis_pipelined_writes, 100_000),
        ("kafka", kafka.SPEC, kafka_writes, 50_000),
    ]
    print(f"python {sys.version.split()[0]}, one core, best of {seconds:.0f} s per loop, interleaved")
    print(f"{'protocol':<8} {'exchanges/s':>12} {'bare /s':>12} {'ratio':>7} {'target':>8}")
    for name, spec, make, target in cases:
        if chosen and name not in chosen:
            continue
        writes = make(calls)
        sizes: list[int] = []
        n = run_parser(spec, writes, sizes)
        assert n == calls, f"{name}: {n} exchanges for {calls} calls"
        full = bare = float("inf")
        for _ in range(3):  # side by side: alternate so both see the same machine state
            full = min(full, measure(lambda: run_parser(spec, writes), seconds / 3))  # noqa: B023
            bare = min(bare, measure(lambda: run_bare(writes, sizes), seconds / 3))  # noqa: B023
        ok = "ok" if n / full >= target else "BELOW"
        print(f"{name:<8} {n / full:>12,.0f} {n / bare:>12,.0f} {bare / full:>7.3f} {target:>8,} {ok}")


if __name__ == "__main__":
    main()
