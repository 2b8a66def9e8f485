"""Property tests: random, truncated, bit-flipped, re-split streams never raise, stay bounded, and a
valid pipeline split anywhere pairs exactly as it does whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from resp_helpers import REQ, RESP, bulk, cmd, loop, records

from protocols.redis import SPEC
from protocols.redis.types import NAME_MAX

VALID = [
    cmd("SET", "k", "v"),
    cmd("GET", "k"),
    cmd("SUBSCRIBE", "a", "b"),
    cmd("HELLO", "3"),
    cmd("SELECT", "2"),
    b"PING\r\n",
    b"+OK\r\n",
    b"-ERR x\r\n",
    bulk("value"),
    b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n",
    b"%2\r\n+a\r\n:1\r\n+b\r\n(12345678901234567890\r\n",
    b"|1\r\n+ttl\r\n:3\r\n~2\r\n#t\r\n,1.5\r\n",
    b"$5000\r\n" + b"z" * 5000 + b"\r\n",
]


def _bounded(lp: object) -> None:
    for q in lp.queues.values():  # type: ignore[attr-defined]
        for t in q:
            assert len(t.frame.name) <= NAME_MAX and len(t.frame.sub) <= NAME_MAX
    records(lp.exchanges)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=12))
def test_random_bytes(chunks: list[tuple[bool, bytes]]) -> None:
    lp = loop()
    for is_req, data in chunks:
        lp.feed(REQ if is_req else RESP, data)
        SPEC.find_boundary(memoryview(data), REQ, 0)
        SPEC.find_boundary(memoryview(data), RESP, 0)
        SPEC.detect(data, REQ)
        SPEC.detect(data, RESP)
    lp.run(eof=True)
    _bounded(lp)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(), st.sampled_from(VALID), st.integers(0, 400), st.integers(0, 7), st.integers(0, 400)
        ),
        max_size=16,
    )
)
def test_mutated_valid_streams(ops: list[tuple[bool, bytes, int, int, int]]) -> None:
    lp = loop()
    for is_req, data, flip_at, bit, cut in ops:
        b = bytearray(data)
        if flip_at < len(b):
            b[flip_at] ^= 1 << bit
        lp.feed(REQ if is_req else RESP, bytes(b[: cut or len(b)]))
        if cut % 5 == 0:
            SPEC.on_gap(lp.state, REQ if is_req else RESP)
    lp.run(eof=True)
    _bounded(lp)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=40), st.lists(st.integers(1, 300), max_size=40))
def test_a_pipeline_split_anywhere_pairs_as_whole(req_cuts: list[int], resp_cuts: list[int]) -> None:
    commands = [cmd("GET", f"k{i}") if i % 2 else cmd("HGETALL", f"h{i}") for i in range(60)]
    replies = [bulk(f"v{i}") if i % 2 else b"%1\r\n$1\r\nf\r\n," + b"%d.5\r\n" % i for i in range(60)]
    lp = loop()
    for data, cuts, direction in ((b"".join(commands), req_cuts, REQ), (b"".join(replies), resp_cuts, RESP)):
        at = 0
        for n in cuts:
            if at >= len(data):
                break
            lp.feed(direction, data[at : at + n])
            at += n
        if at < len(data):
            lp.feed(direction, data[at:])
    lp.run(eof=True)
    assert [r.name for r in lp.records] == ["GET" if i % 2 else "HGETALL" for i in range(60)]
    assert lp.errors == [] and lp.health.total("unmatched_frames") == 0
