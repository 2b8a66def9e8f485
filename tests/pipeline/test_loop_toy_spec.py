"""The framing loop itself, through a toy length-prefixed protocol small enough to read in one screen.

A TOY frame is b"T", a kind byte, a 2-byte big-endian length and that many payload bytes. Requests are
kind "Q"; responses "A" (buffered), "B" (a body the parser skips: Skip) or "C" (runs until the
connection closes: complete at on_eof). Each hook of ProtocolSpec is exercised through ConnParser:
parse, NeedData, Invalid and resync, a hole (on_gap), zero-filled bytes, Skip and cut_frame, on_eof.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

from protocols.base import (
    NEED_DATA,
    ConnInfo,
    Direction,
    Invalid,
    L7Record,
    NeedData,
    Parsed,
    ProtocolSpec,
    Skip,
    Timed,
)
from tests.support.loop import REQ, RESP, Loop

KINDS = {REQ: b"Q", RESP: b"ABC"}


@dataclass(slots=True)
class Frame:
    kind: str
    payload: bytes
    size: int  # payload bytes the message had (or had when it was cut)


@dataclass(slots=True)
class State:
    gaps: list[Direction] = field(default_factory=list)
    eof: set[Direction] = field(default_factory=set)


@dataclass(slots=True)
class Exchange:
    request: Timed[Frame]
    response: Timed[Frame]


def detect(head: bytes, direction: Direction) -> bool:
    return len(head) >= 2 and head[0] == ord("T") and head[1] in KINDS[direction]


def parse_frame(
    buf: memoryview, direction: Direction, state: State
) -> Parsed[Frame] | NeedData | Invalid | Skip:
    if direction in state.eof and len(buf) >= 2 and buf[1] == ord("C"):
        return Parsed(Frame("C", bytes(buf[4:]), len(buf) - 4), len(buf))  # delimited by the close
    if len(buf) < 4:
        return NEED_DATA
    if buf[0] != ord("T"):
        return Invalid("bad magic")
    kind = chr(buf[1])
    if buf[1] not in KINDS[direction]:
        return Invalid("wrong kind")
    n = int.from_bytes(buf[2:4], "big")
    if kind == "B":
        return Skip(Frame("B", b"", n), 4, n)
    if kind == "C" or len(buf) < 4 + n:
        return NEED_DATA
    return Parsed(Frame(kind, bytes(buf[4 : 4 + n]), n), 4 + n)


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    for i in range(start, len(buf) - 1):
        if buf[i] == ord("T") and buf[i + 1] in KINDS[direction]:
            return i
    return None


def stitch(requests: deque[Timed[Frame]], responses: deque[Timed[Frame]], state: State) -> list[Exchange]:
    out = []
    while requests and responses:
        out.append(Exchange(requests.popleft(), responses.popleft()))
    return out


def on_gap(state: State, direction: Direction) -> None:
    state.gaps.append(direction)


def on_eof(state: State, direction: Direction) -> None:
    state.eof.add(direction)


def to_record(x: Exchange, info: ConnInfo) -> L7Record:
    return L7Record(
        "toy", info.role, x.request.frame.payload.decode(), x.request.start_ns, x.response.end_ns, info,
        "toy.duration", attributes={"toy.kind": x.response.frame.kind, "toy.size": x.response.frame.size,
                                    "toy.answer": x.response.frame.payload.decode(errors="replace")},
        truncated=x.request.truncated or x.response.truncated,
    )  # fmt: skip


TOY: ProtocolSpec[Frame, State, Exchange] = ProtocolSpec(
    name="toy",
    detect=detect,
    new_state=State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    on_gap=on_gap,
    exchange_position=lambda x: x.request.position,
    on_eof=on_eof,
    cut_frame=lambda frame, seen: dataclasses.replace(frame, size=max(seen - 4, 0)),
)


def msg(kind: str, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return b"T" + kind.encode() + n.to_bytes(2, "big") + payload


def answers(loop: Loop) -> list[tuple[str, str, str, bool]]:
    return [(r.name, str(r.attributes["toy.kind"]), str(r.attributes["toy.answer"]), r.truncated)
            for r in loop.records]  # fmt: skip


def test_frames_cut_anywhere_wait_for_their_bytes_and_are_stamped_first_to_last_byte() -> None:
    loop = Loop(TOY)
    for byte in msg("Q", b"hello"):
        loop.feed(REQ, bytes([byte]))
        loop.run()  # NeedData until the last byte
    assert loop.records == [] and len(loop.queues[REQ]) == 1
    loop.feed(RESP, msg("A", b"hi"))
    loop.run()
    (r,) = loop.records
    assert (r.name, r.start_ns, r.end_ns) == ("hello", 10, 100)  # first request byte, last response byte
    assert r.record_id == "n/1/3/7/0" and loop.health.total("exchanges") == 1 and loop.errors == []


def test_invalid_bytes_are_one_parse_error_and_the_loop_resyncs_at_the_next_frame() -> None:
    loop = Loop(TOY)
    loop.feed(REQ, msg("Q", b"one") + b"junk!" + msg("Q", b"two"))
    loop.feed(RESP, msg("A", b"1") + msg("A", b"2"))
    loop.run()
    assert [a[:3] for a in answers(loop)] == [("one", "A", "1"), ("two", "A", "2")]
    assert loop.errors == ["bad magic"] and loop.health.total("gaps") == 0


def test_a_wrong_kind_with_no_later_boundary_is_passed_and_the_next_feed_resyncs() -> None:
    loop = Loop(TOY)
    loop.feed(REQ, msg("A", b"not a request"))
    loop.run()
    loop.feed(REQ, msg("Q", b"q"))
    loop.feed(RESP, msg("A", b"a"))
    loop.run()
    assert [a[:3] for a in answers(loop)] == [("q", "A", "a")] and loop.errors == ["wrong kind"]


def test_lost_bytes_call_on_gap_and_the_exchanges_around_them_survive() -> None:
    loop = Loop(TOY)
    loop.feed(REQ, msg("Q", b"one"))
    loop.feed(RESP, msg("A", b"1"))
    loop.run()
    lost_req, lost_resp = msg("Q", b"two"), msg("A", b"2")
    loop.feed(REQ, msg("Q", b"three"), hole=len(lost_req))
    loop.feed(RESP, msg("A", b"3"), hole=len(lost_resp))
    loop.run()
    assert loop.records[1:] == []  # a hole may still be filled by late fragments: wait a round
    loop.run()
    assert [a[:3] for a in answers(loop)] == [("one", "A", "1"), ("three", "A", "3")]
    assert sorted(d.value for d in loop.state.gaps) == ["request", "response"]
    assert loop.health.total("gaps") == 2 and loop.errors == []


def test_a_late_fragment_fills_the_hole_and_nothing_is_lost() -> None:
    loop = Loop(TOY)
    io = loop.io(REQ)
    loop.feed(REQ, msg("Q", b"zero"))  # a stream starts at its first fragment: arrive out of order after it
    late, second = loop.wire.frag(io, msg("Q", b"one")), loop.wire.frag(io, msg("Q", b"two"))
    loop.parser.add(second)
    loop.run()  # the second request waits for the bytes before it
    loop.parser.add(late)
    loop.feed(RESP, msg("A", b"0") + msg("A", b"1") + msg("A", b"2"))
    loop.run()
    assert [a[:3] for a in answers(loop)] == [("zero", "A", "0"), ("one", "A", "1"), ("two", "A", "2")]
    assert loop.health.total("gaps") == 0


def test_zero_fill_where_the_capture_did_not_copy_is_a_truncated_frame_not_an_error() -> None:
    loop = Loop(TOY)
    answer = msg("A", b"x" * 100)
    loop.feed(REQ, msg("Q", b"big"))
    loop.feed(RESP, answer[:10], length=len(answer))  # 90 bytes counted, not copied: zero-filled
    loop.feed(REQ, msg("Q", b"next"))
    loop.feed(RESP, msg("A", b"n"))
    loop.run()
    assert [(a[0], a[3]) for a in answers(loop)] == [("big", True), ("next", False)]
    assert loop.records[0].attributes["toy.answer"] == "x" * 6 + "\0" * 94
    assert loop.errors == [] and loop.health.total("gaps") == 0


def test_a_skipped_body_is_never_buffered_and_a_body_cut_by_the_close_reports_what_was_seen() -> None:
    loop = Loop(TOY)
    loop.feed(REQ, msg("Q", b"skip"))
    loop.feed(RESP, msg("B", b"", length=60_000))
    for _ in range(5):
        loop.feed(RESP, b"z" * 10_000)
    loop.run()
    assert loop.records == [] and loop.parser.buffered() == 0 and loop.parser.mid_message()
    loop.feed(RESP, b"z" * 10_000)
    loop.feed(REQ, msg("Q", b"cut"))
    loop.feed(RESP, msg("B", b"", length=500) + b"z" * 100)
    loop.run(eof=True)
    assert [(a[0], a[1], a[3]) for a in answers(loop)] == [("skip", "B", False), ("cut", "B", True)]
    assert [r.attributes["toy.size"] for r in loop.records] == [60_000, 100]  # cut_frame: bytes seen


def test_on_eof_completes_a_message_delimited_by_the_close_and_unanswered_frames_are_counted() -> None:
    loop = Loop(TOY)
    loop.feed(REQ, msg("Q", b"stream") + msg("Q", b"never answered"))
    loop.feed(RESP, msg("C", b"", length=0) + b"until the close")
    loop.run()
    assert loop.records == []
    loop.run(eof=True)
    assert answers(loop) == [("stream", "C", "until the close", False)]
    assert loop.state.eof == {REQ, RESP} and loop.health.total("unmatched_frames") == 1


def test_detection_claims_the_connection_and_a_mid_stream_join_resyncs() -> None:
    loop = Loop(TOY, detect=True)
    loop.feed(REQ, b"tail of an earlier request" + msg("Q", b"q"))
    loop.feed(RESP, msg("A", b"a"))
    loop.run()
    assert [a[:3] for a in answers(loop)] == [("q", "A", "a")] and loop.errors == []


def test_a_message_delimited_by_the_close_behind_a_hole_is_recorded_at_the_close() -> None:
    """on_eof used to be skipped for a direction still blocked on a hole when the connection ended, so a
    close-delimited message after the hole was never parsed: its bytes were dropped uncounted."""
    loop = Loop(TOY)
    loop.feed(REQ, msg("Q", b"one"))
    loop.feed(RESP, msg("A", b"1"))
    loop.feed(REQ, msg("Q", b"two"))
    loop.run()
    loop.feed(RESP, msg("C", b"", length=0) + b"to the close", hole=5)  # 5 response bytes never seen
    loop.run(eof=True)
    assert answers(loop) == [("one", "A", "1", False), ("two", "C", "to the close", False)]
    assert loop.state.eof == {REQ, RESP} and loop.health.total("gaps") == 1 and loop.errors == []
