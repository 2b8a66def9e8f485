"""Property tests: random, truncated, bit-flipped, reordered and gapped streams never raise, stay bounded."""

from __future__ import annotations

from h2_traffic import CONN, REQ, RESP, Conversation, drive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.base import Direction
from protocols.http2 import SPEC
from protocols.http2.headers import CACHE_MAX, MAX_TABLE, HpackSide
from protocols.http2.parse import detect, find_boundary
from protocols.http2.types import MAX_CURSORS, MAX_DONE, MAX_HEADER_BLOCK, MAX_STREAMS, H2State


def _sample() -> list[tuple[Direction, bytes]]:
    c = Conversation()
    c.unary("/demo.Greeter/SayHello", b"hi" * 30, b"hello")
    c.unary("/demo.Greeter/Find", b"x", b"", status=5)
    sid = c.client.get_next_available_stream_id()
    c.client.send_headers(
        sid, [(":method", "GET"), (":scheme", "http"), (":path", "/p?q=1"), (":authority", "h")]
    )
    c.client.end_stream(sid)
    c.flush()
    c.server.send_headers(sid, [(":status", "500")])
    c.server.send_data(sid, b"oops" * 50, end_stream=True)
    c.flush()
    return c.chunks


SAMPLE = _sample()


def _bounded(state: H2State) -> None:
    assert len(state.streams) <= MAX_STREAMS and len(state.done) <= MAX_DONE
    for d in (0, 1):
        assert len(state.cursors[d]) <= MAX_CURSORS
        pending = state.pending[d]
        assert pending is None or len(pending[4]) <= MAX_HEADER_BLOCK
        side = state.hpack[d]
        assert len(side.cache) <= CACHE_MAX and len(side.known) <= MAX_TABLE // 32


def _records(chunks, state=None):
    out, state = drive(chunks, state=state)
    for x in out.exchanges:
        SPEC.to_record(x, CONN)
    _bounded(state)
    return out, state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_random_bytes(chunks) -> None:
    _records([(REQ if r else RESP, b) for r, b in chunks])
    for _, b in chunks:
        detect(b, REQ)
        detect(b, RESP)
        at = find_boundary(memoryview(b), REQ, 0)
        assert at is None or 0 <= at < len(b)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_real_streams(data) -> None:
    chunks = list(SAMPLE)
    ops = data.draw(st.lists(st.sampled_from(["flip", "cut", "swap", "drop", "gap"]), max_size=6))
    state = SPEC.new_state()
    gaps = []
    for op in ops:
        i = data.draw(st.integers(0, len(chunks) - 1))
        d, b = chunks[i]
        if op == "flip" and b:
            k = data.draw(st.integers(0, len(b) - 1))
            bit = 1 << data.draw(st.integers(0, 7))
            chunks[i] = (d, b[:k] + bytes([b[k] ^ bit]) + b[k + 1 :])
        elif op == "cut":
            chunks[i] = (d, b[: data.draw(st.integers(0, len(b)))])
        elif op == "swap":
            j = data.draw(st.integers(0, len(chunks) - 1))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif op == "drop":
            del chunks[i]
            if not chunks:
                break
        else:
            gaps.append(i)
    if gaps:  # resume after a gap the way the loop does: on_gap, then resync from the boundary
        SPEC.on_gap(state, REQ)
        SPEC.on_gap(state, RESP)
    _records(chunks, state)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_hpack_side_never_raises(block) -> None:
    for synced in (True, False):
        side = HpackSide()
        if not synced:
            side.desync()
        side.decode(block)
        side.decode(block)
        assert len(side.known) <= MAX_TABLE // 32


def test_zero_fill_after_real_traffic_is_dropped_not_misparsed() -> None:
    out, _ = _records([*SAMPLE, (REQ, b"\x00" * 5000), (RESP, b"\x00" * 5000)])
    assert len(out.exchanges) == 3 and out.invalid == 2  # one Invalid per direction, then resync drops it
