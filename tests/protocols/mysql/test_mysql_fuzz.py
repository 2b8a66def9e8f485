"""Property tests: random, truncated, bit-flipped, reordered streams never raise and stay bounded."""

from __future__ import annotations

from conftest import REQ, RESP, Loop, packet, records
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mysql_packets import GREETING, handshake_response, query, result_set

from protocols.mysql import SPEC
from protocols.mysql.types import STMT_CAP

VALID = [
    GREETING,
    handshake_response(),
    query(b"SELECT a FROM t WHERE b = 'x'"),
    result_set([b"r1", b"r2"]),
    packet(1, b"\xff\x28\x04#42000err"),
    packet(0, b"\x16SELECT ?"),
    packet(0, b"\x19\x01\x00\x00\x00"),
    packet(1, b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"),
]


def _bounded(loop: Loop) -> None:
    assert len(loop.state.stmts) <= STMT_CAP
    for q in loop.queues.values():
        assert all(len(t.frame.data) <= 4200 for t in q)
    records(loop.exchanges)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=12))
def test_random_bytes(chunks: list[tuple[bool, bytes]]) -> None:
    loop = Loop()
    for is_req, data in chunks:
        loop.feed(REQ if is_req else RESP, data)
        SPEC.find_boundary(memoryview(data), REQ, 0)
        SPEC.find_boundary(memoryview(data), RESP, 0)
        SPEC.detect(data, REQ)
        SPEC.detect(data, RESP)
    _bounded(loop)


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
    loop = Loop()
    for is_req, data, flip_at, bit, cut in ops:
        b = bytearray(data)
        if flip_at < len(b):
            b[flip_at] ^= 1 << bit
        loop.feed(REQ if is_req else RESP, bytes(b[: cut or len(b)]))
        if cut % 5 == 0:
            SPEC.on_gap(loop.state, REQ if is_req else RESP)
    _bounded(loop)


def test_statement_map_is_bounded() -> None:
    loop = Loop()
    for i in range(STMT_CAP + 50):
        loop.feed(REQ, packet(0, b"\x16SELECT ?"))
        loop.feed(RESP, packet(1, b"\x00" + i.to_bytes(4, "little") + b"\x00\x00\x00\x00\x00\x00\x00"))
    assert len(loop.state.stmts) == STMT_CAP and len(loop.exchanges) == STMT_CAP + 50
