"""HTTP/1.1 through the real framing loop (ConnTable/ConnParser): deep pipelining, bodies larger than any
buffer (passed, never buffered), bytes the capture did not copy, and request-targets that are not UTF-8."""

from __future__ import annotations

from pipeline.conn_table import ConnTable
from pipeline.framing import Limits
from probes.fragment import Batch, ConnEvent, Fragment, Io, Source
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role
from protocols.http1.types import MAX_PENDING
from protocols.registry import PROTOCOLS
from tests.support.loop import FILLER, PIECE, Wire

BIG = 50 * 1000 * 1000


def conn(role: Role = Role.SERVER) -> ConnInfo:
    return ConnInfo("n/1/3/7", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 50000), role, pid=1)


def feed(table: ConnTable, info: ConnInfo, fragments: list[Fragment], close: bool = False) -> list[L7Record]:
    closed = ConnEvent(info, 0, closed=True) if close else None
    return table.apply(Batch(info, fragments, closed))


def summary(records: list[L7Record]) -> list[tuple[str, str, int, int, int, bool]]:
    return [
        (r.attributes["http.request.method"], r.attributes.get("url.path", ""),
         r.attributes["http.response.status_code"], r.attributes["http.request.body.size"],
         r.attributes["http.response.body.size"], r.truncated)
        for r in records
    ]  # fmt: skip


def get(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

# -- pipelining -----------------------------------------------------------------------------------------


def pipelined(n: int) -> tuple[bytes, bytes]:
    """n GETs and HEADs in one write, and their answers (a HEAD answer declares a body it does not send)."""
    requests, responses = [], []
    for i in range(n):
        if i % 3 == 2:
            requests.append(b"HEAD /h/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            responses.append(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
        else:
            requests.append(get(f"/p/{i}"))
            responses.append(ok(b"%d" % i))
    return b"".join(requests), b"".join(responses)


def check_pipelined(records: list[L7Record], n: int, health: Health) -> None:
    assert len(records) == n
    for i, r in enumerate(records):
        path = r.attributes["url.path"]
        assert path.endswith(f"/{i}"), (i, path)  # in order, and each paired with its own answer
        want = 0 if path.startswith("/h/") else len(str(i))  # a HEAD answer has no body
        assert r.attributes["http.response.body.size"] == want, (i, r.attributes)
    assert health.snapshot() == {("exchanges", "http", ""): n}  # no loss, counted or not


def test_2000_pipelined_requests_in_one_write_are_all_recorded_and_paired() -> None:
    """Was: 256 exchanges (the pending-method FIFO), paired with the wrong answers, 0 parse errors."""
    requests, responses = pipelined(2000)
    for same_batch in (True, False):
        info, health = conn(), Health()
        table, w = ConnTable(PROTOCOLS, health), Wire(conn())
        req, resp = w.frag(Io.RECV, requests), w.frag(Io.SEND, responses)
        records = (
            feed(table, info, [req, resp])
            if same_batch
            else feed(table, info, [req]) + feed(table, info, [resp])
        )
        check_pipelined(records, 2000, health)


def test_pipelining_deeper_than_the_queue_waits_as_bytes_and_answers_arrive_piecemeal() -> None:
    """Requests beyond max_queued_frames stay unparsed bytes until stitching makes room; answers coming a
    few at a time (as a server writes them) still pair one to one."""
    n, limits = 3000, Limits()
    assert limits.max_queued_frames < n <= MAX_PENDING
    requests, responses = pipelined(n)
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health, limits), Wire(conn())
    records = feed(table, info, [w.frag(Io.RECV, requests)])
    parser = table._conns[info.conn_id]
    assert not records and len(parser.queues[next(iter(parser.queues))]) == limits.max_queued_frames
    for at in range(0, len(responses), 7000):
        records += feed(table, info, [w.frag(Io.SEND, responses[at : at + 7000])])
    check_pipelined(records, n, health)


def test_pipelined_requests_never_answered_are_counted_when_the_connection_ends() -> None:
    requests, responses = pipelined(1500)
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(conn())
    records = feed(
        table, info, [w.frag(Io.RECV, requests), w.frag(Io.SEND, responses[: len(responses) // 2])]
    )
    records += feed(table, info, [], close=True)
    assert 0 < len(records) < 1500
    assert len(records) + health.total("unmatched_frames") == 1500  # every request: recorded or counted


# -- bodies larger than any buffer ---------------------------------------------------------------------


def test_a_50mb_response_is_recorded_and_never_buffered() -> None:
    """Was: never recorded (the 32 MiB framing buffer made it a parse error)."""
    info, health = conn(Role.CLIENT), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % BIG
    records = feed(table, info, [w.frag(Io.SEND, get("/ok")), w.frag(Io.RECV, ok(b"hi"))])
    records += feed(table, info, [w.frag(Io.SEND, get("/big")), w.frag(Io.RECV, head)])
    parser = table._conns[info.conn_id]
    body = w.body(Io.RECV, BIG)
    for i in range(0, len(body), 16):  # batch by batch, as the capture delivers them
        records += feed(table, info, body[i : i + 16])
        assert parser.buffered() < 2 * PIECE
    records += feed(table, info, [w.frag(Io.SEND, get("/ok")), w.frag(Io.RECV, ok(b"hi"))])
    records += feed(table, info, [w.frag(Io.SEND, get("/missing")), w.frag(Io.RECV, NOT_FOUND)], close=True)
    assert summary(records) == [
        ("GET", "/ok", 200, 0, 2, False), ("GET", "/big", 200, 0, BIG, False),
        ("GET", "/ok", 200, 0, 2, False), ("GET", "/missing", 404, 0, 0, False),
    ]  # fmt: skip
    big = records[1]
    assert big.end_ns == body[-1].ts_ns  # ends with the body's last byte
    assert health.total("parse_errors") == health.total("gaps") == 0


def test_a_50mb_post_the_capture_copied_in_part_is_recorded_truncated_and_what_follows_stays_paired() -> None:
    """The agent copies at most 128 KiB of a syscall: a client's big writes arrive mostly uncopied, past
    the zero-fill limit. Was: lost at defaults, sometimes with the small requests after it."""
    info, health = conn(Role.CLIENT), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    head = b"POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % BIG
    records = feed(table, info, [w.frag(Io.SEND, get("/ok")), w.frag(Io.RECV, ok(b"hi"))])
    records += feed(table, info, [w.frag(Io.SEND, head)])
    step, copied = 4 << 20, 128 << 10
    for at in range(0, BIG, step):  # 4 MiB writes, 128 KiB of each copied
        n = min(step, BIG - at)
        records += feed(table, info, [w.frag(Io.SEND, FILLER[:copied] * 2, length=n)])
    assert table._conns[info.conn_id].buffered() < 2 * copied
    records += feed(
        table, info, [w.frag(Io.RECV, b"HTTP/1.1 201 Created\r\nContent-Length: 8\r\n\r\ncreated\n")]
    )
    records += feed(table, info, [w.frag(Io.SEND, get("/ok")), w.frag(Io.RECV, ok(b"hi"))])
    records += feed(table, info, [w.frag(Io.SEND, get("/missing")), w.frag(Io.RECV, NOT_FOUND)], close=True)
    assert summary(records) == [
        ("GET", "/ok", 200, 0, 2, False), ("POST", "/submit", 201, BIG, 8, True),
        ("GET", "/ok", 200, 0, 2, False), ("GET", "/missing", 404, 0, 0, False),
    ]  # fmt: skip
    assert not any(r.degraded for r in records)
    assert health.total("parse_errors") == health.total("gaps") == health.total("unmatched_frames") == 0


def test_a_response_sent_with_sendfile_is_passed_by_its_size() -> None:
    """sendfile: the kernel moves the bytes, the capture sees only how many."""
    info, health = conn(Role.SERVER), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG
    records = feed(table, info, [w.frag(Io.RECV, get("/big")), w.frag(Io.SEND, head)])
    records += feed(table, info, [w.frag(Io.SEND, b"", length=BIG, source=Source.SENDFILE)])
    records += feed(table, info, [w.frag(Io.RECV, get("/ok")), w.frag(Io.SEND, ok(b"hi"))], close=True)
    assert summary(records) == [("GET", "/big", 200, 0, BIG, True), ("GET", "/ok", 200, 0, 2, False)]
    assert health.total("parse_errors") == health.total("gaps") == 0


def chunked(size: int, chunk: int) -> bytes:
    data = b"".join(
        b"%x\r\n%s\r\n" % (n, FILLER[:n]) for n in [chunk] * (size // chunk) + [size % chunk] if n
    )
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + data + b"0\r\nX-Sum: 7\r\n\r\n"


def test_a_large_chunked_body_is_passed_chunk_by_chunk() -> None:
    info, health = conn(Role.CLIENT), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    response = chunked(5_000_000, 10_007)  # chunk and read boundaries never line up
    records = feed(table, info, [w.frag(Io.SEND, get("/chunked"))])
    for at in range(0, len(response), PIECE):
        records += feed(table, info, [w.frag(Io.RECV, response[at : at + PIECE])])
        assert table._conns[info.conn_id].buffered() < 2 * PIECE
    records += feed(table, info, [w.frag(Io.SEND, get("/ok")), w.frag(Io.RECV, ok(b"hi"))], close=True)
    assert summary(records) == [
        ("GET", "/chunked", 200, 0, 5_000_000, False),
        ("GET", "/ok", 200, 0, 2, False),
    ]
    assert health.total("parse_errors") == 0


def test_a_chunked_body_whose_chunk_lines_were_not_copied_is_recorded_truncated() -> None:
    """A 1 MiB write of which 128 KiB were copied: later chunk-size lines are zeros (zero-filled)."""
    info, health = conn(Role.CLIENT), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    response = chunked(1_000_000, 4096)
    records = feed(table, info, [w.frag(Io.SEND, get("/chunked"))])
    records += feed(table, info, [w.frag(Io.RECV, response[: 128 << 10], length=len(response))], close=True)
    ((method, path, status, _, _, truncated),) = summary(records)
    assert (method, path, status, truncated) == ("GET", "/chunked", 200, True)
    assert health.total("parse_errors") == 0  # zeros standing in for uncopied bytes are no parse error


def test_a_body_cut_by_the_connection_ending_reports_the_bytes_transferred() -> None:
    info, health = conn(Role.CLIENT), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG
    records = feed(table, info, [w.frag(Io.SEND, get("/big")), w.frag(Io.RECV, head)])
    records += feed(table, info, w.body(Io.RECV, 10 * PIECE), close=True)
    assert summary(records) == [("GET", "/big", 200, 0, 10 * PIECE, True)]


# -- request-targets that are not UTF-8 ------------------------------------------------------------------

RAW = b"GET /caf\xe9/\xff\xfe?q=\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n"


def test_a_request_target_that_is_not_utf8_is_recorded_percent_encoded() -> None:
    """Was: no record and nothing counted (the connection was not even recognised as HTTP)."""
    for before in (b"", get("/ok")):  # first on its connection, or after a request
        info, health = conn(), Health()
        table, w = ConnTable(PROTOCOLS, health), Wire(info)
        fragments = [w.frag(Io.RECV, before), w.frag(Io.SEND, ok(b"hi"))] if before else []
        records = feed(table, info, [*fragments, w.frag(Io.RECV, RAW), w.frag(Io.SEND, NOT_FOUND)])
        r = records[-1]
        assert (r.attributes["url.path"], r.attributes["url.query"], r.name) == (
            "/caf%E9/%FF%FE",
            "q=%C3%A9",
            "GET /caf%E9/%FF%FE",
        )
        assert r.attributes["http.response.status_code"] == 404 and len(records) == 1 + bool(before)
        assert health.total("parse_errors") == 0


def test_control_bytes_in_a_request_target_are_still_a_counted_parse_error() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    feed(table, info, [w.frag(Io.RECV, get("/ok")), w.frag(Io.SEND, ok(b"hi"))])
    records = feed(
        table,
        info,
        [w.frag(Io.RECV, b"GET /a\x01b HTTP/1.1\r\n\r\n" + get("/ok")), w.frag(Io.SEND, ok(b"hi"))],
    )
    assert health.total("parse_errors") == 1 and [r.attributes["url.path"] for r in records] == ["/ok"]


def test_a_request_whose_answer_was_lost_is_counted() -> None:
    """A hole in the responses (lost events) loses /b's answer: /b can never be a record, and is counted;
    /a and /c, either side of it, are recorded."""
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    records = feed(table, info, [w.frag(Io.RECV, get("/a") + get("/b") + get("/c"))])
    records += feed(table, info, [w.frag(Io.SEND, ok(b"a"))])
    w.frag(Io.SEND, ok(b"b"))  # never delivered
    records += feed(table, info, [w.frag(Io.SEND, ok(b"c"))], close=True)
    assert [r.attributes["url.path"] for r in records] == ["/a", "/c"]
    assert health.total("unmatched_frames") == 1 and health.total("gaps") == 1
