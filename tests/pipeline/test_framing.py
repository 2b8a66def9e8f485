"""The framing loop over real protocol specs: detection, role inference, gaps, truncation."""

from __future__ import annotations

import dataclasses

from pipeline.conn_table import ConnTable
from probes.fragment import Batch, ConnEvent, Fragment, Io, Source
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, Role
from protocols.registry import PROTOCOLS
from tests.support.loop import Wire

REQ = b"GET /users/42?x=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t/1\r\n\r\n"
RESP_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
RESP_404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
POST = b"POST /orders HTTP/1.1\r\nHost: example.test\r\nContent-Length: 4\r\n\r\nbody"
RESP_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nno"


def conn(role: Role = Role.SERVER, conn_id: str = "n/1/3/7") -> ConnInfo:
    return ConnInfo(
        conn_id, Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 50000), role, pid=1, process="srv"
    )


def run(table: ConnTable, info: ConnInfo, *fragments: Fragment, close: bool = False) -> list:
    closed = ConnEvent(info, 0, closed=True) if close else None
    return table.apply(Batch(info, list(fragments), closed))


def test_keep_alive_exchanges_become_records_with_capture_times() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(conn())
    recs = run(
        table,
        info,
        w.frag(Io.RECV, REQ),
        w.frag(Io.SEND, RESP_200),
        w.frag(Io.RECV, REQ),
        w.frag(Io.SEND, RESP_404),
        w.frag(Io.RECV, POST),
        w.frag(Io.SEND, RESP_500),
    )
    assert [
        (r.attributes["http.request.method"], r.attributes["http.response.status_code"]) for r in recs
    ] == [("GET", 200), ("GET", 404), ("POST", 500)]
    assert [(r.start_ns, r.end_ns) for r in recs] == [(2000, 3000), (4000, 5000), (6000, 7000)]
    assert recs[2].error_type == "500" and recs[1].error_type is None  # servers: 5xx only
    assert len({r.record_id for r in recs}) == 3 and all(r.record_id.startswith(info.conn_id) for r in recs)
    assert health.total("parse_errors") == 0


def test_split_fragments_and_out_of_order_arrival() -> None:
    info = conn()
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    a, b = w.frag(Io.RECV, REQ[:10]), w.frag(Io.RECV, REQ[10:])
    resp = w.frag(Io.SEND, RESP_200)
    recs = run(table, info, b, resp, a)  # reordered within a batch
    assert [r.attributes["url.path"] for r in recs] == ["/users/42"]
    c, d = w.frag(Io.RECV, POST[:7]), w.frag(Io.RECV, POST[7:])
    assert run(table, info, d) == []  # a hole: held, not misparsed
    assert [r.attributes["http.request.method"] for r in run(table, info, c, w.frag(Io.SEND, RESP_404))] == [
        "POST"
    ]


def test_unknown_role_is_inferred_from_who_sends_requests() -> None:
    info = conn(Role.UNKNOWN)
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    recs = run(table, info, w.frag(Io.SEND, REQ), w.frag(Io.RECV, RESP_200))
    assert len(recs) == 1
    assert recs[0].role == Role.CLIENT and recs[0].conn.role_inferred
    assert recs[0].metric == "http.client.request.duration"


def test_joined_mid_stream_resyncs_at_the_next_message() -> None:
    info = conn()
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    w.pos[Io.RECV], w.pos[Io.SEND] = 1000, 5000
    recs = run(table, info, w.frag(Io.RECV, b"tail of an old body" + REQ), w.frag(Io.SEND, RESP_200))
    assert [r.attributes["http.response.status_code"] for r in recs] == [200]


def test_lost_bytes_force_a_resync_without_misparsing() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    run(table, info, w.frag(Io.RECV, REQ), w.frag(Io.SEND, RESP_200[:20]))
    # 10 bytes of the response are never seen; the next exchange must still parse
    later = [w.frag(Io.SEND, RESP_200[30:], skip=10), w.frag(Io.RECV, POST), w.frag(Io.SEND, RESP_404)]
    recs = run(table, info, *later)
    recs += run(table, info)  # the loop waits a round for late fragments before giving the hole up
    recs += run(table, info)
    assert [r.attributes["http.request.method"] for r in recs] == ["POST"]
    assert health.total("gaps") >= 1


def test_truncated_body_is_skipped_by_size_and_flagged() -> None:
    info = conn()
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    copied = big + b"x" * 100
    recs = run(
        table,
        info,
        w.frag(Io.RECV, REQ),
        w.frag(Io.SEND, copied, length=len(big) + 100000),
        w.frag(Io.RECV, REQ),
        w.frag(Io.SEND, RESP_404),
    )
    assert [(r.attributes["http.response.status_code"], r.truncated) for r in recs] == [
        (200, True),
        (404, False),
    ]


def test_other_protocols_and_noise_are_not_claimed() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    noise = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200), b"*1\r\n$4\r\nPING\r\n"]
    recs = run(table, info, *(w.frag(Io.RECV, n) for n in noise), close=True)
    assert recs == [] and health.total("unclaimed_connections") == 1


def test_close_delimited_response_completes_when_the_connection_closes() -> None:
    info = conn(Role.CLIENT)
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    body = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    assert run(table, info, w.frag(Io.SEND, REQ), w.frag(Io.RECV, body)) == []
    recs = run(table, info, close=True)
    assert [
        (r.attributes["http.response.status_code"], r.attributes.get("http.response.body.size")) for r in recs
    ] == [(200, 13)]


def test_a_hole_in_a_quiet_connection_is_given_up_on_a_timer() -> None:
    info, now = conn(), [0.0]
    table, w = ConnTable(PROTOCOLS, Health(), clock=lambda: now[0]), Wire(info)
    run(table, info, w.frag(Io.RECV, REQ), w.frag(Io.SEND, RESP_200[:20]))
    after = [w.frag(Io.SEND, RESP_200[30:], skip=10), w.frag(Io.RECV, POST), w.frag(Io.SEND, RESP_404)]
    assert run(table, info, *after) == []
    now[0] = 0.5
    assert table.expire() == []  # too early: the missing fragment may still come
    now[0] = 5.0
    recs = table.expire() + table.expire()
    assert [r.attributes["http.request.method"] for r in recs] == ["POST"]


def test_a_guessed_role_is_corrected_by_the_content() -> None:
    guess = dataclasses.replace(conn(Role.SERVER), role_inferred=True)  # wrong: this side sends requests
    table, w = ConnTable(PROTOCOLS, Health()), Wire(guess)
    recs = run(table, guess, w.frag(Io.SEND, REQ), w.frag(Io.RECV, RESP_200))
    assert [(r.role, r.conn.role_inferred, r.attributes["http.response.status_code"]) for r in recs] == [
        (Role.CLIENT, True, 200)
    ]


def test_a_known_role_is_not_second_guessed() -> None:
    info, health = conn(Role.SERVER), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    assert run(table, info, w.frag(Io.SEND, REQ), w.frag(Io.RECV, RESP_200), close=True) == []
    assert health.total("unclaimed_connections") == 1


def test_zeros_standing_in_for_uncopied_bytes_are_a_gap_not_a_parse_error() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    # One write of two pipelined responses of which the capture copied 20 bytes: the rest is zeros.
    both = RESP_200 + RESP_404
    recs = run(table, info, w.frag(Io.RECV, REQ), w.frag(Io.RECV, REQ), w.frag(Io.SEND, both[:20], len(both)))
    recs += run(table, info, w.frag(Io.RECV, POST), w.frag(Io.SEND, RESP_500))
    recs += run(table, info, close=True)
    # The GETs' answers were lost: they are not paired with the POST's response.
    got = [(r.attributes["http.request.method"], r.attributes["http.response.status_code"]) for r in recs]
    assert got == [("POST", 500)]
    assert health.total("parse_errors") == 0
    assert health.total("gaps") == 1
    assert health.total("unmatched_frames") >= 1


def test_malformed_bytes_next_to_zero_fill_are_still_a_parse_error() -> None:
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    bad = b"HTTP/1.1 2xx Broken\r\n\r\n"
    run(table, info, w.frag(Io.RECV, REQ), w.frag(Io.SEND, big + b"x" * 10, len(big) + 1000))
    recs = run(table, info, w.frag(Io.RECV, REQ), w.frag(Io.SEND, bad), w.frag(Io.RECV, POST),
               w.frag(Io.SEND, RESP_500))  # fmt: skip
    assert health.total("parse_errors") == 1
    assert [r.attributes["http.response.status_code"] for r in recs][-1:] == [500]


def test_plaintext_from_the_tls_library_is_https() -> None:
    info = conn()
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    tls = [
        dataclasses.replace(f, source=Source.TLS) for f in (w.frag(Io.RECV, REQ), w.frag(Io.SEND, RESP_200))
    ]
    (rec,) = run(table, info, *tls)
    assert rec.attributes["url.scheme"] == "https" and rec.conn.tls
    (plain,) = run(
        ConnTable(PROTOCOLS, Health()), info, Wire(info).frag(Io.RECV, REQ), w.frag(Io.SEND, RESP_404)
    )
    assert plain.attributes["url.scheme"] == "http"


def test_a_response_to_a_request_never_seen_is_not_paired_with_the_next_one() -> None:
    """A capture that joins a keep-alive connection between a request and its response (or a server
    that answers before the request's body is in): the orphan response must not shift every pair."""
    info = conn()
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)

    def later(io: Io, data: bytes) -> Fragment:
        w.ts += 10_000_000  # 10 ms between the events: think time
        return w.frag(io, data)

    first = [later(Io.SEND, RESP_200), later(Io.RECV, REQ), later(Io.SEND, RESP_404)]
    recs = run(table, info, *first, later(Io.RECV, POST), later(Io.SEND, RESP_500))
    recs += run(table, info, later(Io.RECV, REQ), later(Io.SEND, RESP_200))
    got = [(r.attributes["http.request.method"], r.attributes["http.response.status_code"]) for r in recs]
    assert got == [("GET", 404), ("POST", 500), ("GET", 200)]
    assert [r.degraded for r in recs] == [True, True, False]  # matched by time until the seqs agree again


def test_a_response_stamped_a_little_before_its_request_still_answers_it() -> None:
    """Events of one exchange stamped by two threads (a client's writer and reader) may be out of order."""
    info = conn(Role.CLIENT)
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    response = w.frag(Io.RECV, RESP_200)
    request = dataclasses.replace(w.frag(Io.SEND, REQ), ts_ns=response.ts_ns + 500_000)
    (rec,) = run(table, info, request, response)
    assert rec.attributes["http.response.status_code"] == 200 and not rec.degraded


def test_a_response_cut_off_by_the_connection_ending_is_recorded_truncated() -> None:
    """A download the client aborted (RST), or a capture that ended mid-body: the exchange is known."""
    info = conn(Role.CLIENT)
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"y" * 100
    assert run(table, info, w.frag(Io.SEND, REQ), w.frag(Io.RECV, head + b"x" * 50)) == []
    (rec,) = run(table, info, close=True)
    assert (rec.attributes["http.response.status_code"], rec.truncated) == (200, True)
    assert rec.attributes["http.response.body.size"] == 50
    table, w = ConnTable(PROTOCOLS, Health()), Wire(info)
    assert run(table, info, w.frag(Io.SEND, REQ), w.frag(Io.RECV, chunked)) == []
    (rec,) = run(table, info, close=True)
    assert (rec.attributes["http.response.status_code"], rec.truncated) == (200, True)


def test_client_requests_carry_url_full_and_servers_do_not() -> None:
    client, server = conn(Role.CLIENT), conn(Role.SERVER)
    w = Wire(client)
    (rec,) = run(ConnTable(PROTOCOLS, Health()), client, w.frag(Io.SEND, REQ), w.frag(Io.RECV, RESP_200))
    assert rec.attributes["url.full"] == "http://example.test/users/42?x=1"
    w = Wire(server)
    (rec,) = run(ConnTable(PROTOCOLS, Health()), server, w.frag(Io.RECV, REQ), w.frag(Io.SEND, RESP_200))
    assert "url.full" not in rec.attributes


def test_a_fragment_lost_inside_a_large_body_in_one_batch_costs_only_that_bodys_bytes() -> None:
    """Was: a whole 50 MB upload arriving in one batch was buffered as zero-filled bytes before any
    parsing, so the fragments after one lost in its body (held behind the hole) outgrew the 4 MiB
    bound, the hole was forced and the unparsed head went with it: the POST, its response and the
    request after it lost (a `run` under a 50 MB POST, one ring event lost). Now the batch is parsed as
    it is added, the body is skipped as it arrives, and the hole is only a hole in the skipped body."""
    info, health = conn(), Health()
    table, w = ConnTable(PROTOCOLS, health), Wire(info)
    body, piece, copied = 52 << 20, 16 << 10, 4096  # nginx reads 16 KiB; the ring holds 4 KiB of each
    head = b"POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % body
    frags = [w.frag(Io.RECV, head)]
    for n in range(body // piece):
        if n == 2200:  # ~35 MB in: one event lost, its bytes never seen
            w.pos[Io.RECV] += piece
            continue
        frags.append(w.frag(Io.RECV, b"p" * copied, length=piece))
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 8\r\n\r\naccepted"
    frags += [w.frag(Io.SEND, created), w.frag(Io.RECV, REQ), w.frag(Io.SEND, RESP_200)]
    recs = run(table, info, *frags)
    got = [
        (r.attributes["http.request.method"], r.attributes["http.response.status_code"], r.truncated)
        for r in recs
    ]
    assert got == [("POST", 201, True), ("GET", 200, False)]
    assert recs[0].attributes["http.request.body.size"] == body
    assert health.total("gaps") == 0 and health.total("unmatched_frames") == 0
