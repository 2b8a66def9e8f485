"""MySQL parser throughput: simple query + OK / small result set, per core, against a bare slicing loop."""

from __future__ import annotations

import struct
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.base import ConnInfo, Direction, Endpoint, Parsed, Role, Timed
from protocols.mysql import SPEC


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def coldef(name: bytes, seq: int) -> bytes:
    parts = [b"def", b"shop", b"items", b"items", name, name]
    return packet(
        seq, b"".join(bytes([len(p)]) + p for p in parts) + b"\x0c\x21\x00\x00\x01\x00\x00\xfd" + bytes(5)
    )


def workload(n: int) -> tuple[bytes, bytes]:
    req, resp = bytearray(), bytearray()
    for i in range(n):
        if i % 2:
            req += packet(0, b"\x03UPDATE items SET name = 'x%d' WHERE id = %d" % (i, i))
            resp += packet(1, b"\x00\x01\x00\x02\x00\x00\x00")
        else:
            req += packet(0, b"\x03SELECT id, name FROM items WHERE id = %d" % i)
            resp += (
                packet(1, b"\x02")
                + coldef(b"id", 2)
                + coldef(b"name", 3)
                + packet(4, b"\xfe\x00\x00\x02\x00")
                + packet(5, b"\x011\x05apple")
                + packet(6, b"\xfe\x00\x00\x02\x00")
            )
    return bytes(req), bytes(resp)


def run_parser(req: bytes, resp: bytes, batch: int = 64) -> int:
    """Parse a batch of each direction, stitch, make records: what the framing loop does per round."""
    state = SPEC.new_state()
    conn = ConnInfo("b/1", Endpoint("127.0.0.1", 5000), Endpoint("127.0.0.1", 3306), Role.CLIENT)
    parse, stitch, to_record = SPEC.parse_frame, SPEC.stitch, SPEC.to_record
    sides = [
        (Direction.REQUEST, memoryview(req), deque(), batch),
        (Direction.RESPONSE, memoryview(resp), deque(), batch * 7),
    ]
    pos = [0, 0]
    done = 0
    while pos[0] < len(req):
        for i, (d, buf, q, frames) in enumerate(sides):
            p = pos[i]
            end = len(buf)
            for _ in range(frames):
                if p >= end:
                    break
                r = parse(buf[p:], d, state)
                if r.__class__ is not Parsed:
                    break
                q.append(Timed(r.frame, p, p, p))
                p += r.size
            pos[i] = p
        for x in stitch(sides[0][2], sides[1][2], state):
            to_record(x, conn)
            done += 1
    return done


def run_bare(req: bytes, resp: bytes) -> int:
    """Only finds and slices the same packets: the floor any Python framing pays."""
    n = 0
    for data in (req, resp):
        buf = memoryview(data)
        p = 0
        while p < len(buf):
            length = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16)
            bytes(buf[p + 4 : p + 4 + min(length, 64)])
            p += 4 + length
            n += 1
    return n


def main() -> None:
    n = 20000
    req, resp = workload(n)
    t0 = time.perf_counter()
    done = run_parser(req, resp)
    parse_s = time.perf_counter() - t0
    assert done == n, done
    t0 = time.perf_counter()
    run_bare(req, resp)
    bare_s = time.perf_counter() - t0
    print(
        f"mysql: {n / parse_s:,.0f} commands/s (parse+stitch+to_record), bare slicing loop {n / bare_s:,.0f}"
        f" commands/s, ratio {parse_s / bare_s:.1f}x"
    )


if __name__ == "__main__":
    main()
