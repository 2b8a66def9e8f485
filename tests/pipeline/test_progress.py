"""Progress of the framing loop: input that once stopped it for good, and the watchdog behind it.

Issue 12: `Content-Length: -1` in a request (or -5 in a response, or a chunk size `zz`) sent the loop
round forever: the rejected message was kept whole for resync and found again at offset 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from progress_inputs import (
    BAD,
    CHUNK_ZZ_REQUEST,
    CHUNK_ZZ_RESPONSE,
    GET_OK,
    NEGATIVE_REQUEST,
    NEGATIVE_RESPONSE,
    OK_200,
    REQ,
    VALID,
    h2_frame,
    negative_content_length_pcap,
    packet,
)
from test_framing import conn, run

from pipeline.conn_table import ConnTable
from pipeline.framing import ConnParser, Limits, ParserStuck
from pipeline.health import Health
from pipeline.stream import DataStream
from probes.fragment import Io
from protocols import http1
from protocols.base import Direction, Role
from protocols.registry import PROTOCOLS
from tests.support.loop import Wire

pytestmark = pytest.mark.timeout(60)  # without the fix these never return
REPO = Path(__file__).resolve().parents[2]


def _fragments(w: Wire, role: Role, script: list[tuple[Direction, bytes]]) -> list:
    request_io = Io.RECV if role == Role.SERVER else Io.SEND
    other = Io.SEND if request_io == Io.RECV else Io.RECV
    return [w.frag(request_io if d is REQ else other, data) for d, data in script]


def _statuses(records: list) -> list[int]:
    return [r.attributes["http.response.status_code"] for r in records]


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=["server", "client"])
def test_negative_content_length_request_is_one_parse_error_later_requests_recorded(role: Role) -> None:
    info, health = conn(role), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    first = run(table, info, *_fragments(w, role, [(REQ, NEGATIVE_REQUEST)]))
    later = run(table, info, *_fragments(w, role, [(REQ, GET_OK), (Direction.RESPONSE, OK_200)]))
    assert first == [] and _statuses(later) == [200]
    assert health.snapshot()[("parse_errors", "http1", "bad content-length")] == 1
    other = conn(role, conn_id="n/1/3/8")  # another connection, parsed after it
    recs = run(table, other, *_fragments(Wire(other), role, [(REQ, GET_OK), (Direction.RESPONSE, OK_200)]))
    assert _statuses(recs) == [200] and health.total("parser_stuck") == 0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(NEGATIVE_RESPONSE, "bad content-length"), (CHUNK_ZZ_RESPONSE, "bad chunk size")],
    ids=["content-length-minus-5", "chunk-size-zz"],
)
def test_malformed_response_is_one_parse_error_and_the_next_is_recorded(bad: bytes, reason: str) -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    recs = run(table, info, w.frag(Io.RECV, GET_OK), w.frag(Io.SEND, bad))
    recs += run(table, info, w.frag(Io.RECV, GET_OK), w.frag(Io.SEND, OK_200), close=True)
    assert _statuses(recs) == [200]
    assert health.snapshot()[("parse_errors", "http1", reason)] == 1
    assert health.total("parser_stuck") == 0


def test_chunk_size_zz_in_a_request_is_one_parse_error() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    recs = run(table, info, w.frag(Io.RECV, CHUNK_ZZ_REQUEST))
    recs += run(table, info, w.frag(Io.RECV, GET_OK), w.frag(Io.SEND, OK_200))
    assert _statuses(recs) == [200]
    assert health.snapshot()[("parse_errors", "http1", "bad chunk size")] == 1
    assert health.total("parser_stuck") == 0


def test_http2_frame_just_over_the_size_limit_found_again_by_resync_is_one_parse_error() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    run(table, info, *_fragments(w, Role.SERVER, VALID["http2"]))
    run(table, info, w.frag(Io.RECV, h2_frame(0, 0, 1, length=16385)))
    assert health.snapshot()[("parse_errors", "http2", "frame too large")] == 1
    assert health.total("parser_stuck") == 0


@pytest.mark.parametrize(
    ("protocol", "index"), [(p, i) for p in ("http1", "http2", "mysql") for i in range(len(BAD[p]))]
)
def test_every_adversarial_input_ends_after_a_valid_conversation(protocol: str, index: int) -> None:
    """Each protocol's adversarial inputs, in their direction, after a valid conversation, then closed."""
    direction, bad = BAD[protocol][index]
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    recs = run(table, info, *_fragments(w, Role.SERVER, VALID[protocol]))
    recs += run(table, info, *_fragments(w, Role.SERVER, [(direction, bad)]), close=True)
    assert {r.protocol for r in recs} == {"http" if protocol != "mysql" else "mysql"}
    assert health.total("parser_stuck") == 0 and len(table) == 0


# -- the watchdog --------------------------------------------------------------------------------------


class _NoConsume(DataStream):
    """A stream that never advances: what a bug in skipping bytes would look like to the loop."""

    def consume(self, n: int) -> None:
        pass


def test_a_frame_that_consumes_nothing_raises_parser_stuck() -> None:
    info = conn()
    parser = ConnParser(info, PROTOCOLS, Limits(), Health())
    parser.streams[Io.RECV] = _NoConsume()
    parser.add(Wire(info).frag(Io.RECV, GET_OK))
    with pytest.raises(ParserStuck, match=r"n/1/3/7: http1 request parsing made no progress at byte 0"):
        parser.process()


def test_rejected_bytes_that_are_not_skipped_raise_parser_stuck() -> None:
    """Resync finds the rejected message again, parses it, rejects it: the third step there is a repeat."""
    info, w = conn(), Wire(conn())
    parser = ConnParser(info, PROTOCOLS, Limits(), Health())
    parser.add(w.frag(Io.RECV, GET_OK))
    parser.process()
    parser.streams[Io.RECV] = _NoConsume()
    parser.add(w.frag(Io.RECV, NEGATIVE_REQUEST))
    with pytest.raises(ParserStuck, match=r"n/1/3/7: http1 request parsing made no progress at byte 29"):
        parser.process()


def test_a_stuck_connection_is_a_counted_drop_logged_once_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    info, other, health = conn(), conn(conn_id="n/1/3/8"), Health()
    table, w, w2 = ConnTable(PROTOCOLS, health), Wire(info), Wire(other)
    assert _statuses(run(table, info, w.frag(Io.RECV, GET_OK), w.frag(Io.SEND, OK_200))) == [200]
    table._conns[info.conn_id].streams[Io.RECV] = _NoConsume()  # from byte 29 on
    with caplog.at_level(logging.WARNING, logger="l7scope.conn_table"):
        assert run(table, info, w.frag(Io.RECV, NEGATIVE_REQUEST)) == []
        assert info.conn_id not in table._conns  # forgotten
        assert _statuses(run(table, other, w2.frag(Io.RECV, GET_OK), w2.frag(Io.SEND, OK_200))) == [200]
        table._conns[info.conn_id] = broken = ConnParser(info, PROTOCOLS, Limits(), health)
        broken.streams[Io.RECV] = _NoConsume()
        run(table, info, w.frag(Io.RECV, GET_OK))  # stuck again: counted again, not logged again
    assert health.snapshot()[("parser_stuck", "http1", "no progress")] == 2
    logged = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert logged == [
        "connection n/1/3/7 dropped: http1 parser stuck (no progress): "
        "n/1/3/7: http1 request parsing made no progress at byte 29"
    ]
    # The connection's later bytes start afresh, like a connection joined mid-stream.
    recs = run(table, info, w.frag(Io.RECV, GET_OK), w.frag(Io.SEND, OK_200))
    assert _statuses(recs) == [200]


def _raising(buf: memoryview, direction: Direction, state: object) -> object:
    if bytes(buf[:4]) == b"POST":
        raise ZeroDivisionError("a parser bug")
    return http1.parse_frame(buf, direction, state)  # type: ignore[arg-type]


def _wrong_type(buf: memoryview, direction: Direction, state: object) -> object:
    return None if bytes(buf[:4]) == b"POST" else http1.parse_frame(buf, direction, state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parse", "reason"),
    [(_raising, "parser raised ZeroDivisionError"), (_wrong_type, "parser raised TypeError")],
    ids=["raises", "returns-none"],
)
def test_a_parser_bug_costs_its_connection_only(parse: object, reason: str) -> None:
    spec = dataclasses.replace(http1.SPEC, parse_frame=parse)
    info, other, health = conn(), conn(conn_id="n/1/3/8"), Health()
    table = ConnTable((spec,), health)
    w, w2 = Wire(info), Wire(other)
    post = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert run(table, info, w.frag(Io.RECV, GET_OK), w.frag(Io.SEND, OK_200), w.frag(Io.RECV, post)) == []
    assert len(table) == 0 and health.snapshot()[("parser_stuck", "http1", reason)] == 1
    assert _statuses(run(table, other, w2.frag(Io.RECV, GET_OK), w2.frag(Io.SEND, OK_200))) == [200]


# -- the capture file of the report ----------------------------------------------------------------------


def test_replay_of_the_negative_content_length_capture_ends_promptly(tmp_path: Path) -> None:
    """`l7scope replay` of a ~1.3 KB pcap holding the request hung forever; now: one parse error, and the
    good exchanges before it on its connection and after it on another are recorded."""
    pcap = negative_content_length_pcap(tmp_path / "negative-content-length.pcap")
    out = tmp_path / "records.jsonl"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "l7scope.cli", "replay", str(pcap), "--export", f"jsonl:{out}"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and time.monotonic() - started < 15, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "l7scope: 2 exchanges, 1 parse errors"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    got = sorted((r["client"], r["name"], r["attributes"]["http.response.status_code"]) for r in records)
    assert got == [("127.0.0.1:40000", "GET /ok", 200), ("127.0.0.1:40002", "GET /ok", 200)]


# -- cost: resync after every rejected message must not re-read the whole buffer ------------------------

DENSE_JUNK = {  # rejected messages back to back: the loop resyncs after each one
    "http1": (REQ, b"GET / HTTP/1.1\r\nbad\r\n\r\n"),
    "http2": (REQ, h2_frame(1, 0x8 | 0x4, 1, b"\x09")),  # HEADERS whose padding is longer than it
    "mysql": (REQ, packet(0, b"\x03SELECT 1") * 2 + packet(0, b"\xee")),  # two queries, an unknown command
    "redis": (REQ, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n?\r\n"),  # a command, then a line that is none
}


def _seconds_to_parse(protocol: str, size: int) -> float:
    direction, unit = DENSE_JUNK[protocol]
    best = float("inf")
    for _ in range(2):
        # Queued requests unbounded: MySQL's valid queries between the junk are never answered here.
        parser = ConnParser(conn(), PROTOCOLS, Limits(max_queued_frames=1 << 30), Health())
        w = Wire(conn())
        for fragment in _fragments(w, Role.SERVER, VALID[protocol]):
            parser.add(fragment)
        parser.process()
        parser.add(_fragments(w, Role.SERVER, [(direction, unit * (size // len(unit)))])[0])
        started = time.perf_counter()
        parser.process()
        best = min(best, time.perf_counter() - started)
        assert parser.health.total("parse_errors") >= size // len(unit) // 2
    return best


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http1", "http2", "mysql", "redis"])
def test_resync_cost_grows_with_the_bytes_not_their_square(protocol: str) -> None:
    """find_boundary used to copy the whole buffer (and http1 the rest of it per candidate): 16x the junk
    took 75x the time for HTTP/1.1, over 100x for HTTP/2 (2 MB of HEADERS with bad padding: minutes)."""
    # 32x the bytes: linear is ~32x the time, quadratic ~1000x; the margin absorbs a loaded machine.
    small, large = _seconds_to_parse(protocol, 64 << 10), _seconds_to_parse(protocol, 2 << 20)
    assert large / small < 150, (small, large)
