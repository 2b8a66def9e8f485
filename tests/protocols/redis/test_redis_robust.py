"""Damaged and hostile RESP through the real loop: bounded memory for 1 GB bulk headers and long or deep
aggregates, zero-filled (uncopied) bytes, holes, mid-stream joins, truncation at every offset."""

from __future__ import annotations

import pytest
from resp_helpers import REQ, RESP, bulk, cmd, loop

from protocols.base import Invalid, NeedData, Parsed, Skip
from protocols.redis import SPEC
from protocols.redis.parse import parse_frame
from protocols.redis.types import MAX_DEPTH, SKIP_MIN, State

GB = 1_000_000_000
MIB = 1 << 20


def test_a_1gb_bulk_reply_is_skipped_not_buffered() -> None:
    lp = loop()
    lp.feed(REQ, cmd("GET", "big") + cmd("PING"))
    lp.feed(RESP, b"$%d\r\n" % GB + b"x" * 4096, length=MIB)  # the capture copies 4 KiB of each read
    most = lp.parser.buffered()
    for _ in range(GB // MIB - 1):
        lp.wire.pos[lp.io(RESP)] += MIB  # reads never seen (a hole): the loop's skip passes over them
    rest = len(b"$%d\r\n" % GB) + GB + 2 - (GB // MIB) * MIB  # the body's tail and its CRLF
    lp.feed(RESP, b"y" * (rest - 2) + b"\r\n+PONG\r\n")
    lp.run(eof=True)
    assert most <= MIB + 64  # one read at most, never the body
    assert [r.name for r in lp.records] == ["GET", "PING"]
    assert lp.records[0].end_ns > lp.records[0].start_ns and not lp.records[1].truncated
    assert lp.errors == []


def test_a_1gb_bulk_header_alone_is_one_skip_of_its_body() -> None:
    result = parse_frame(memoryview(b"$1000000000\r\nabc"), RESP, State())
    assert isinstance(result, Skip) and result.size == 13 and result.skip == GB + 2 and not result.more
    result = parse_frame(memoryview(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000000\r\n"), REQ, State())
    # the value of SET k <1 GB>: the header is parsed, the body is passed by the loop
    assert isinstance(result, Skip) and result.skip == GB + 2 and not result.more
    assert result.frame.name == "SET"


def test_a_1gb_set_request_then_more_commands() -> None:
    lp = loop()
    head = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % GB
    lp.feed(REQ, head + b"v" * 4096, length=MIB)
    lp.wire.pos[lp.io(REQ)] += GB + 2 - (MIB - len(head))
    lp.feed(REQ, cmd("GET", "big"))
    lp.feed(RESP, b"+OK\r\n$-1\r\n")
    lp.run(eof=True)
    assert [r.attributes["db.query.text"] for r in lp.records] == ["SET ? ?", "GET ?"]
    assert lp.errors == [] and lp.health.total("unmatched_frames") == 0


def test_a_long_reply_is_parsed_in_pieces_with_bounded_buffers() -> None:
    """LRANGE of 200 000 short elements (~2.6 MB) arriving in 64 KiB reads: never buffered whole."""
    lp = loop()
    lp.feed(REQ, cmd("LRANGE", "l", "0", "-1") + cmd("PING"))
    n = 200_000
    reply = b"*%d\r\n" % n + b"$5\r\nabcde\r\n" * n + b"+PONG\r\n"
    most = 0
    for at in range(0, len(reply), 65536):
        lp.feed(RESP, reply[at : at + 65536])
        most = max(most, lp.parser.buffered())
    assert most < 256 << 10
    assert [r.name for r in lp.records] == ["LRANGE", "PING"]
    assert not any(r.truncated for r in lp.records) and lp.errors == []


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 10_000])
def test_nesting_is_capped(depth: int) -> None:
    reply = b"*1\r\n" * depth + b":1\r\n"
    result = parse_frame(memoryview(reply), RESP, State())
    if depth <= MAX_DEPTH:
        assert isinstance(result, Parsed) and result.size == len(reply)
    else:
        assert result == Invalid("nesting too deep")
    lp = loop()
    lp.feed(REQ, cmd("LRANGE", "l", "0", "-1") + cmd("PING"))
    lp.feed(RESP, reply + b"+PONG\r\n")
    lp.run(eof=True)
    assert lp.records[-1].name == "PING" and lp.records[-1].attributes["db.query.text"] == "PING"
    assert lp.errors == ([] if depth <= MAX_DEPTH else ["nesting too deep"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"*2147483647\r\n", None),  # INT_MAX elements: announced, read in pieces
        (b"%2147483647\r\n", None),  # a map: 2^32 - 2 elements
        (b"*2147483648\r\n", "aggregate too long"),
        (b"*99999999999999999999\r\n", "bad count"),
        (b"$2147483648\r\n", None),  # a 2 GiB bulk string: skipped
        (b"$-2\r\n", "bad length"),
        (b"*-2\r\n", "bad count"),
    ],
)
def test_counts_near_2_to_the_31(header: bytes, expected: str | None) -> None:
    result = parse_frame(memoryview(header + b":1\r\n" * 4), RESP, State())
    if expected is None:
        assert isinstance(result, (NeedData, Skip))
    else:
        assert result == Invalid(expected)


def test_an_endless_aggregate_cut_by_the_close_is_one_truncated_record() -> None:
    lp = loop()
    lp.feed(REQ, cmd("SMEMBERS", "s"))
    lp.feed(RESP, b"~2147483647\r\n" + b":7\r\n" * 40_000)  # 160 KB of elements, then the close
    lp.run(eof=True)
    (r,) = lp.records
    assert r.name == "SMEMBERS" and r.truncated
    assert lp.health.total("unmatched_frames") == 0


def test_a_reply_copied_in_part_costs_that_exchange_only() -> None:
    lp = loop()
    lp.feed(REQ, cmd("GET", "a"))
    value = bulk("v" * 3000)
    lp.feed(RESP, value[:100], length=len(value))  # the rest zero-filled
    lp.feed(REQ, cmd("GET", "b"))
    lp.feed(RESP, bulk("w"))
    lp.run(eof=True)
    first, second = lp.records  # the first without its reply (marked), the second paired right
    assert first.truncated and first.degraded and first.end_ns <= second.start_ns
    assert second.end_ns == lp.clock and not (second.truncated or second.degraded)
    assert lp.errors == []  # zeros standing in for uncopied bytes are lost traffic, not malformed
    assert lp.health.total("gaps") >= 1


def test_a_hole_in_the_commands_resyncs_at_the_next_command() -> None:
    lp = loop()
    lp.feed(REQ, cmd("SET", "a", "1"))
    lp.feed(RESP, b"+OK\r\n")
    lp.feed(REQ, cmd("GET", "a")[5:], hole=5)  # the start of GET never seen
    lp.feed(REQ, cmd("INCR", "n"))
    lp.feed(RESP, b"$1\r\n1\r\n:1\r\n")
    lp.run(eof=True)
    names = [r.name for r in lp.records]
    assert names[0] == "SET" and names[-1] == "INCR"
    assert lp.records[-1].attributes["db.query.text"] == "INCR ?" and lp.records[-1].degraded
    assert lp.errors == []


@pytest.mark.parametrize("skip", [1, 7, 13, 20])
def test_joined_mid_stream_both_ways(skip: int) -> None:
    """The capture starts inside a command and inside a reply: both resync, later ones pair."""
    lp = loop(detect=True, auto_run=False)
    lp.feed(REQ, (cmd("SET", "key:1", "value") + cmd("GET", "key:1") + cmd("PING"))[skip:])
    lp.feed(RESP, (b"$12\r\nolder-answer\r\n" + b"+OK\r\n")[skip:])
    lp.run()
    lp.feed(RESP, bulk("value") + b"+PONG\r\n")
    lp.run(eof=True)
    assert lp.parser.spec is not None and lp.parser.spec.name == "redis"
    assert [r.name for r in lp.records][-2:] == ["GET", "PING"]
    assert lp.records[-1].attributes["db.query.text"] == "PING"


def test_truncation_at_every_offset_never_raises_and_accounts_for_each_command() -> None:
    commands = [cmd("SET", "a", "1"), cmd("HGETALL", "h"), cmd("GET", "big"), cmd("PING")]
    replies = [b"+OK\r\n", b"%1\r\n$1\r\nf\r\n,2.5\r\n", bulk("z" * (SKIP_MIN + 10)), b"+PONG\r\n"]
    wire = b"".join(replies)
    ends = [sum(len(r) for r in replies[: i + 1]) for i in range(len(replies))]
    for cut in range(len(wire) + 1):
        lp = loop()
        lp.feed(REQ, b"".join(commands))
        lp.feed(RESP, wire[:cut])
        lp.run(eof=True)
        whole = sum(1 for e in ends if e <= cut)
        assert whole <= len(lp.records) <= whole + 1, cut
        assert len(lp.records) + lp.health.total("unmatched_frames") == len(commands), cut
        assert lp.errors == [], cut
        assert all(r.truncated for r in lp.records[whole:]), cut
    request_wire = b"".join(commands)
    for cut in range(len(request_wire) + 1):
        lp = loop()
        lp.feed(REQ, request_wire[:cut])
        lp.run(eof=True)
        assert lp.records == [] and lp.errors == [], cut


def test_garbage_replies_are_parse_errors_and_the_loop_moves_on() -> None:
    junks = (b"?what\r\n", b"#x\r\n", b",1.2.3\r\n", b":12a\r\n", b"$3\r\nabcXY", b"_x\r\n", b"+a\x00b\r\n")
    for junk in junks:
        lp = loop()
        lp.feed(REQ, cmd("GET", "a") + cmd("PING"))
        lp.feed(RESP, junk + b"\r\n+PONG\r\n")
        lp.run(eof=True)
        assert len(lp.errors) == 1, junk
        # Which command the rejected bytes answered is unknown: the next exchange is marked degraded.
        assert lp.records and lp.records[0].degraded, junk
        assert len(lp.records) + lp.health.total("unmatched_frames") == 2, junk


def test_spec_hooks_are_wired() -> None:
    assert SPEC.name == "redis" and SPEC.ordered and SPEC.exchange_position is not None
