"""Property tests: random, truncated, bit-flipped, reordered streams never raise, stay bounded, and
never leak a password or a SQL literal into what is kept."""

from __future__ import annotations

from conftest import (
    LITERAL,
    LOGIN_TAIL,
    READY_IDLE,
    REQ,
    RESP,
    SECRET,
    SYNC,
    Loop,
    auth,
    dump,
    error,
    extended,
    extended_answer,
    msg,
    notification,
    password,
    query,
    result,
    scram_messages,
    startup,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.postgres import SPEC
from protocols.postgres.types import SQL_CAP, STMT_CAP

VALID = [
    startup(),
    auth(5, b"salt"),
    password(),
    LOGIN_TAIL,
    query(f"SELECT a FROM t WHERE b = '{LITERAL}'"),
    result(("a",), [(b"1",), (None,)]) + READY_IDLE,
    extended("SELECT a FROM t WHERE b = $1", LITERAL.encode()) + SYNC,
    extended_answer(("a",), [(b"1",)]) + READY_IDLE,
    error("22012") + READY_IDLE,
    notification(),
    msg(b"d", LITERAL.encode()),
    *(data for _, data in scram_messages()),
]


def _bounded(loop: Loop) -> None:
    assert len(loop.state.stmts) <= STMT_CAP and len(loop.state.portals) <= STMT_CAP
    for q in loop.queues.values():
        assert all(len(t.frame.data) <= SQL_CAP + 300 for t in q)
    kept = repr(loop.records) + repr(loop.exchanges) + repr(loop.state)
    assert SECRET not in kept and LITERAL not in kept


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
    loop.run(eof=True)
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
    loop.run(eof=True)
    _bounded(loop)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(VALID), max_size=20), st.integers(0, 3000), st.integers(1, 64))
def test_valid_streams_with_a_hole_or_fill(order: list[bytes], at: int, size: int) -> None:
    loop = Loop()
    requests = b"".join(m for m in order if m[:1] in (b"\x00", b"Q", b"P", b"p"))
    responses = b"".join(m for m in order if m[:1] not in (b"\x00", b"Q", b"P", b"p"))
    loop.feed(REQ, requests)
    loop.feed(RESP, responses[:at], length=min(len(responses), at + size) or None)
    loop.feed(RESP, responses[at + size :], hole=0)
    loop.run(eof=True)
    _bounded(loop)
    # Every exchange has a start no later than its end.
    assert all(r.start_ns <= r.end_ns for r in loop.records)


def test_every_exchange_accounted_in_a_clean_random_session() -> None:
    loop = Loop()
    for direction, data in scram_messages():
        loop.feed(direction, data)
    for i in range(50):
        if i % 3:
            loop.feed(REQ, query(f"SELECT a FROM t WHERE b = '{LITERAL}{i}'"))
            loop.feed(RESP, result(("a",), [(b"1",)] * (i % 4)) + READY_IDLE)
        else:
            loop.feed(REQ, extended("SELECT a FROM t WHERE b = $1", b"x") * 3 + SYNC)
            loop.feed(RESP, extended_answer(("a",), [(b"1",)]) * 3 + READY_IDLE)
    loop.run(eof=True)
    assert loop.errors == [] and loop.health.total("unmatched_frames") == 0
    assert len(loop.records) == 1 + 33 + 17 * 3
    assert SECRET not in dump(loop)
