"""Exact PostgreSQL messages through the real framing loop: each message kind, pipelining, errors,
COPY, asynchronous messages, login with SSLRequest/md5/SCRAM, and what the capture may do to them."""

from __future__ import annotations

import struct

import pytest
from conftest import (
    AUTH_OK,
    BIND_OK,
    CANCEL,
    CLOSE_OK,
    EMPTY,
    FLUSH,
    GSS_REQUEST,
    LITERAL,
    LOGIN_TAIL,
    NO_DATA,
    PARSE_OK,
    READY_FAILED,
    READY_IDLE,
    READY_TX,
    REQ,
    RESP,
    SECRET,
    SSL_REQUEST,
    SUSPENDED,
    SYNC,
    TERMINATE,
    Loop,
    auth,
    bind,
    close,
    complete,
    data_row,
    describe,
    dump,
    error,
    execute,
    extended,
    extended_answer,
    logged_in,
    md5_login,
    msg,
    notice,
    notification,
    parameter_status,
    parse,
    password,
    query,
    result,
    row_description,
    scram_messages,
    startup,
)

from protocols.postgres import SPEC
from protocols.postgres.types import MAX_LEN, STMT_CAP

SELECT = f"SELECT id, name FROM items WHERE name = '{LITERAL}'"


def attrs(loop: Loop) -> list[tuple[str, object, object]]:
    return [(r.name, r.error_type, r.attributes.get("db.response.returned_rows")) for r in loop.records]


def clean(loop: Loop) -> None:
    assert loop.errors == [] and loop.health.total("unmatched_frames") == 0, loop.health.snapshot()
    assert LITERAL not in dump(loop) or all(LITERAL not in repr(r) for r in loop.records)
    assert SECRET not in dump(loop)


def test_simple_query_with_rows_and_semconv_attributes() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query(SELECT))
    loop.feed(RESP, result(("id", "name"), [(b"1", b"apple"), (b"2", None)]) + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    (r,) = loop.records
    assert (
        r.protocol == "postgres" and r.name == "SELECT items" and r.metric == "db.client.operation.duration"
    )
    a = r.attributes
    assert a["db.system.name"] == "postgresql" and a["db.namespace"] == "shop"
    assert a["db.operation.name"] == "SELECT" and a["db.collection.name"] == "items"
    assert a["db.query.text"] == "SELECT id, name FROM items WHERE name = ?"
    assert a["db.response.returned_rows"] == 2 and a["server.port"] == 8080
    assert "db.response.status_code" not in a and r.error_type is None
    assert "db.query.text" not in r.metric_attributes and "db.namespace" in r.metric_attributes
    assert LITERAL not in repr(loop.records) + repr(loop.exchanges)


def test_several_statements_in_one_query_and_an_error() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query("SELECT 1; SELECT 2"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + result(("b",), [(b"2",)]) + READY_IDLE)
    loop.feed(REQ, query(f"INSERT INTO t VALUES ('{LITERAL}'); SELECT * FROM missing"))
    loop.feed(RESP, complete("INSERT 0 1") + error("42P01") + READY_IDLE)
    loop.feed(REQ, query(""))
    loop.feed(RESP, EMPTY + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert attrs(loop) == [("BATCH SELECT", None, 2), ("BATCH", "42P01", None), ("postgresql", None, None)]
    failed = loop.records[1]
    assert failed.attributes["db.response.status_code"] == "42P01"
    assert failed.attributes["db.query.text"] == "INSERT INTO t VALUES (?); SELECT * FROM missing"
    assert "error.type" in failed.metric_attributes and "db.response.status_code" in failed.metric_attributes


def test_extended_query_named_statement_reported_with_its_sql() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, parse("SELECT name FROM items WHERE id = $1", "s1", 1) + describe(b"S", "s1") + SYNC)
    loop.feed(RESP, PARSE_OK + msg(b"t", struct.pack(">HI", 1, 23)) + row_description("name") + READY_IDLE)
    assert loop.records == []  # a prepare alone is no exchange
    for _i in range(2):
        loop.feed(REQ, bind("", "s1", LITERAL.encode()) + execute() + SYNC)
        loop.feed(RESP, BIND_OK + data_row(b"x") + complete("SELECT 1") + READY_IDLE)
    loop.feed(REQ, close(b"S", "s1") + SYNC)
    loop.feed(RESP, CLOSE_OK + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert attrs(loop) == [("SELECT items", None, 1)] * 2
    assert loop.records[0].attributes["db.query.text"] == "SELECT name FROM items WHERE id = $1"
    assert loop.state.stmts == {} and not any(r.degraded for r in loop.records)


def test_pipelined_executes_pair_in_order() -> None:
    loop = Loop()
    logged_in(loop)
    sqls = [f"SELECT name FROM t{i} WHERE id = $1" for i in range(5)]
    loop.feed(REQ, b"".join(extended(s, b"7") for s in sqls) + SYNC + FLUSH)
    loop.feed(RESP, b"".join(extended_answer(("n",), [(b"a",)] * i) for i in range(5)) + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.attributes["db.response.returned_rows"]) for r in loop.records] == [
        (f"SELECT t{i}", i) for i in range(5)
    ]


def test_error_in_pipeline_skips_to_sync_and_every_execute_is_accounted() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(
        REQ, extended("SELECT 1/0") + extended("SELECT a FROM t1") + extended("SELECT b FROM t2") + SYNC
    )
    loop.feed(RESP, PARSE_OK + error("22012") + READY_IDLE)  # the Bind failed; the rest was skipped
    loop.feed(REQ, extended("SELECT c FROM t3") + SYNC)  # after the Sync: runs again
    loop.feed(RESP, extended_answer(("c",), [(b"1",)]) + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.error_type) for r in loop.records] == [
        ("SELECT", "22012"),
        ("SELECT t1", "pipeline_aborted"),
        ("SELECT t2", "pipeline_aborted"),
        ("SELECT t3", None),
    ]
    assert loop.records[0].attributes["db.query.text"] == "SELECT ?/?"
    assert "db.response.status_code" not in loop.records[1].attributes


def test_parse_error_without_execute_is_reported_at_sync() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, parse("SELEC broken", "s9") + describe(b"S", "s9") + SYNC)
    loop.feed(RESP, error("42601") + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.error_type) for r in loop.records] == [("SELEC", "42601")]
    assert b"s9" not in loop.state.stmts


def test_portal_suspension_each_execute_is_an_exchange() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, parse("SELECT n FROM big") + bind("c1") + execute("c1", 2) + FLUSH)
    loop.feed(RESP, PARSE_OK + BIND_OK + data_row(b"1") + data_row(b"2") + SUSPENDED)
    loop.feed(REQ, execute("c1", 2) + SYNC)
    loop.feed(RESP, data_row(b"3") + complete("SELECT 1") + READY_TX)
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.attributes["db.response.returned_rows"]) for r in loop.records] == [
        ("SELECT big", 2),
        ("SELECT big", 1),
    ]
    assert [x.suspended for x in loop.exchanges] == [True, False]


def test_copy_in_and_copy_out() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query("COPY items (id, name) FROM STDIN"))
    loop.feed(RESP, msg(b"G", b"\x00\x00\x02\x00\x00\x00\x00"))
    loop.feed(REQ, msg(b"d", f"1\t{LITERAL}\n".encode()) * 3 + msg(b"c"))
    loop.feed(RESP, complete("COPY 3") + READY_IDLE)
    loop.feed(REQ, query("COPY items TO STDOUT"))
    loop.feed(RESP, msg(b"H", b"\x00\x00\x00") + msg(b"d", b"1\tx\n") * 2 + msg(b"c") + complete("COPY 2"))
    loop.feed(RESP, READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert attrs(loop) == [("COPY items", None, 3), ("COPY items", None, 2)]


def test_async_messages_are_never_paired() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query("LISTEN jobs"))
    loop.feed(RESP, complete("LISTEN") + READY_IDLE)
    loop.feed(RESP, notification() + notification() + parameter_status())  # while idle
    loop.feed(REQ, query("SELECT 1"))
    loop.feed(RESP, notice() + result(("a",), [(b"1",)]) + notification() + READY_IDLE)
    loop.feed(RESP, notification())
    loop.run(eof=True)
    clean(loop)
    assert attrs(loop) == [("LISTEN", None, None), ("SELECT", None, 1)]


def test_login_ssl_refused_then_md5() -> None:
    loop = Loop()
    first, challenge, answer = md5_login()
    loop.feed(REQ, SSL_REQUEST)
    loop.feed(RESP, b"N")
    loop.feed(REQ, first)
    loop.feed(RESP, challenge)
    loop.feed(REQ, answer)
    loop.feed(RESP, LOGIN_TAIL)
    loop.feed(REQ, query("SELECT 1"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.attributes.get("db.namespace")) for r in loop.records] == [
        ("LOGIN", "shop"),
        ("SELECT", "shop"),
    ]
    assert SECRET.encode().hex()[:32] not in dump(loop)


def test_login_scram_secrets_never_kept() -> None:
    loop = Loop()
    for direction, data in scram_messages():
        loop.feed(direction, data)
    loop.feed(REQ, query("SELECT 1"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + READY_IDLE + b"")
    loop.run(eof=True)
    clean(loop)
    assert [r.name for r in loop.records] == ["LOGIN", "SELECT"]
    assert all(len(t.frame.data) == 0 for q in loop.queues.values() for t in q if t.frame.type == ord("p"))


def test_failed_login_is_an_error() -> None:
    loop = Loop()
    loop.feed(REQ, startup())
    loop.feed(RESP, auth(10, b"SCRAM-SHA-256\x00\x00"))
    loop.feed(REQ, password())
    loop.feed(RESP, error("28P01", 'password authentication failed for user "app"'))
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.error_type) for r in loop.records] == [("LOGIN", "28P01")]


def test_ssl_accepted_then_plaintext_startup_from_tls_probes() -> None:
    loop = Loop()
    loop.feed(REQ, SSL_REQUEST)
    loop.feed(RESP, b"S")
    loop.feed(REQ, b"\x16\x03\x01\x00\x05hello")  # a ClientHello record on the socket: passed over
    loop.feed(RESP, b"\x16\x03\x03\x00\x02hi")
    loop.feed(REQ, startup())  # then the plaintext, as the TLS probes see it
    loop.feed(RESP, AUTH_OK + READY_IDLE)
    loop.feed(REQ, query("SELECT 1"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert [r.name for r in loop.records] == ["LOGIN", "SELECT"]


@pytest.mark.parametrize("head", [startup(), SSL_REQUEST, GSS_REQUEST, CANCEL, query("SELECT 1")])
def test_detected_from_the_first_request(head: bytes) -> None:
    assert SPEC.detect(head, REQ)
    loop = Loop(detect=True)
    loop.feed(REQ, head)
    assert loop.parser.spec is not None and loop.parser.spec.name == "postgres"


def test_cancel_request_on_its_own_connection() -> None:
    loop = Loop(detect=True)
    loop.feed(REQ, CANCEL)
    loop.run(eof=True)
    clean(loop)
    assert [r.name for r in loop.records] == ["CANCEL"]
    assert "0x5ec4e7" not in dump(loop).lower() and str(0x5EC4E7) not in dump(loop)


def test_large_result_rows_are_skipped_not_buffered() -> None:
    loop = Loop()
    logged_in(loop)
    big = data_row(b"x" * (12 << 20))
    loop.feed(REQ, query("SELECT body FROM blobs"))
    loop.feed(RESP, row_description("body"))
    for k in range(0, len(big), 1 << 20):
        loop.feed(RESP, big[k : k + (1 << 20)])
        assert loop.parser.buffered() < 2 << 20
    loop.feed(RESP, data_row(b"small") * 3 + complete("SELECT 4") + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert attrs(loop) == [("SELECT blobs", None, 4)]


def test_uncopied_row_bytes_are_zero_filled_and_marked_truncated() -> None:
    loop = Loop()
    logged_in(loop)
    rows = data_row(b"y" * 5000) * 3
    loop.feed(REQ, query("SELECT a FROM t"))
    loop.feed(RESP, row_description("a") + rows[:100], length=len(row_description("a")) + len(rows))
    loop.feed(RESP, complete("SELECT 3") + READY_IDLE)
    loop.feed(REQ, query("SELECT 2"))
    loop.feed(RESP, result(("a",), [(b"2",)]) + READY_IDLE)
    loop.run(eof=True)
    assert loop.errors == []
    assert [r.name for r in loop.records][-1] == "SELECT" and loop.records[-1].truncated is False
    assert any(r.truncated for r in loop.records[:-1]) or loop.health.total("gaps") >= 1


def test_hole_in_the_response_then_the_next_query_is_recorded() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query("SELECT 1"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + READY_IDLE, hole=0)
    loop.feed(REQ, query("SELECT a FROM lost"))
    lost = result(("a",), [(b"1",)] * 10) + READY_IDLE
    loop.wire.pos[loop.io(RESP)] += len(lost)
    loop.feed(REQ, query("SELECT a FROM after"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + READY_IDLE)
    loop.run(eof=True)
    assert loop.errors == []
    names = [r.name for r in loop.records]
    assert names[0] == "SELECT" and names[-1] == "SELECT after"
    assert len(loop.records) + loop.health.total("unmatched_frames") == 3


def test_mid_stream_join_resyncs_at_a_message_boundary() -> None:
    """The capture starts inside a result: the rest of it, then whole exchanges."""
    loop = Loop(detect=True)
    tail = result(("a",), [(b"1",)] * 20) + READY_IDLE
    loop.feed(RESP, tail[37:])
    loop.feed(REQ, extended("SELECT a FROM t WHERE id = $1", b"5") + SYNC)
    loop.feed(RESP, extended_answer(("a",), [(b"5",)]) + READY_IDLE)
    loop.feed(REQ, query("SELECT b FROM u"))
    loop.feed(RESP, result(("b",), [(b"1",)]) + READY_IDLE)
    loop.run(eof=True)
    assert loop.parser.spec is not None and loop.parser.spec.name == "postgres"
    assert loop.errors == []
    assert [r.name for r in loop.records] == ["SELECT t", "SELECT u"]


def test_mid_stream_join_on_a_request_inside_sql() -> None:
    loop = Loop(detect=True)
    loop.feed(REQ, query("SELECT a FROM t WHERE x = 1")[9:] + query("SELECT b FROM u"))
    loop.feed(RESP, result(("a",), [(b"1",)]) + READY_IDLE + result(("b",), [(b"1",)]) + READY_IDLE)
    loop.run(eof=True)
    assert loop.parser.spec is not None and loop.parser.spec.name == "postgres"
    assert [r.name for r in loop.records][-1] == "SELECT u"


def _session() -> list[tuple[object, bytes | tuple[str, bytes]]]:
    return [
        (REQ, startup()),
        (RESP, auth(3)),
        (REQ, ("p", password())),
        (RESP, LOGIN_TAIL),
        (REQ, query(SELECT)),
        (RESP, result(("id", "name"), [(b"1", b"x")]) + READY_IDLE),
        (REQ, extended("SELECT b FROM u WHERE c = $1", b"9") + SYNC),
        (RESP, extended_answer(("b",), [(b"9",)]) + READY_IDLE),
    ]


def test_truncation_at_every_offset_never_raises_or_mispairs() -> None:
    stream = [(d, b if isinstance(b, bytes) else b[1]) for d, b in _session()]
    total = sum(len(b) for _, b in stream)
    for cut in range(total + 1):
        loop = Loop()
        left = cut
        for direction, data in stream:
            if left <= 0:
                break
            loop.feed(direction, data[:left])  # type: ignore[arg-type]
            left -= len(data)
        loop.run(eof=True)
        assert loop.errors == []
        assert SECRET not in dump(loop)
        for r in loop.records:
            assert r.name in ("LOGIN", "SELECT items", "SELECT u")


def test_lengths_near_2_31_are_rejected_not_waited_for() -> None:
    for length in (MAX_LEN + 1, 1 << 31, (1 << 31) - 1, 0xFFFFFFFF, 3):
        for direction, t in ((REQ, b"Q"), (RESP, b"D")):
            loop = Loop()
            loop.feed(direction, msg(t, b"SELECT 1\x00", length=length))
            assert loop.errors and loop.errors[0] in ("bad length", "bad length for type")
            assert loop.parser.buffered() < 100
    loop = Loop()
    loop.feed(REQ, struct.pack(">II", 0x00100000, 0x00030000) + b"user\x00a\x00\x00")
    assert loop.errors == ["bad startup message"]


def test_statement_and_portal_maps_are_bounded() -> None:
    loop = Loop()
    logged_in(loop)
    for i in range(STMT_CAP + 50):
        loop.feed(REQ, parse(f"SELECT {i}", f"s{i}") + bind(f"p{i}", f"s{i}") + SYNC)
        loop.feed(RESP, PARSE_OK + BIND_OK + READY_IDLE)
    assert len(loop.state.stmts) <= STMT_CAP and len(loop.state.portals) <= STMT_CAP
    assert loop.errors == []


def test_execute_of_a_statement_prepared_before_the_capture_is_degraded() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, bind("", "old") + execute() + SYNC)
    loop.feed(RESP, BIND_OK + complete("UPDATE 3") + READY_IDLE)
    loop.feed(REQ, bind("", "old") + describe() + execute() + SYNC)
    loop.feed(RESP, BIND_OK + NO_DATA + complete("DELETE 1") + READY_FAILED)
    loop.run(eof=True)
    clean(loop)
    assert [(r.name, r.degraded) for r in loop.records] == [("postgresql", True), ("postgresql", True)]


def test_query_whose_end_was_not_copied_does_not_take_the_pipeline_after_it() -> None:
    """Seen live (psycopg, 12 MiB row): the client's last recv of the result moved 401,468 bytes, of
    which the capture copied 256, so its CommandComplete and ReadyForQuery were zeros; the pipeline's
    answers after it were taken as the rest of that query's answer (5 rows, the pipeline lost)."""
    loop = Loop()
    logged_in(loop)
    big = row_description("big") + data_row(b"x" * (12 << 20)) + complete("SELECT 1") + READY_IDLE
    loop.feed(REQ, query("SELECT repeat('x', 12582912) AS big"))
    tail = 401_468
    for k in range(0, len(big) - tail, 1 << 20):
        piece = big[k : min(k + (1 << 20), len(big) - tail)]
        loop.feed(RESP, piece[:4096], length=len(piece))
    loop.feed(RESP, big[-tail:][:256], length=tail)
    loop.feed(REQ, b"".join(extended("SELECT $1::int AS tid", b"%d" % i) for i in range(5)) + SYNC + FLUSH)
    loop.feed(RESP, b"".join(extended_answer(("tid",), [(b"1",)]) for _ in range(5)) + READY_IDLE)
    loop.feed(REQ, query("SELECT 2"))
    loop.feed(RESP, result(("a",), [(b"2",)]) + READY_IDLE)
    loop.run(eof=True)
    assert loop.errors == []
    names = [(r.name, r.attributes.get("db.response.returned_rows"), r.truncated) for r in loop.records]
    assert names == [("SELECT", 1, True)] + [("SELECT", 1, False)] * 6
    assert loop.records[1].attributes["db.query.text"] == "SELECT $1::int AS tid"


def test_execute_whose_answer_was_lost_is_recorded_truncated() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, extended("SELECT a FROM t1") + extended("SELECT b FROM t2") + SYNC)
    # The first Execute's rows and CommandComplete never arrive (a hole the loop already crossed).
    loop.feed(RESP, PARSE_OK + BIND_OK + row_description("a") + data_row(b"1"))
    loop.feed(RESP, extended_answer(("b",), [(b"2",)]) + READY_IDLE)
    loop.run(eof=True)
    assert loop.errors == []
    assert [(r.name, r.truncated, r.degraded) for r in loop.records] == [
        ("SELECT t1", True, True),
        ("SELECT t2", False, False),
    ]


def test_gss_encryption_accepted_makes_the_rest_opaque() -> None:
    loop = Loop()
    loop.feed(REQ, GSS_REQUEST)
    loop.feed(RESP, b"G")
    loop.feed(REQ, b"\x00\x00\x00\x40" + bytes(range(64)))  # GSSAPI-wrapped tokens: never parsed
    loop.feed(RESP, b"\x00\x00\x00\x20" + bytes(range(32)))
    loop.run(eof=True)
    assert loop.errors == [] and loop.records == [] and loop.state.gss


def test_gss_encryption_refused_then_plain_login() -> None:
    loop = Loop()
    loop.feed(REQ, GSS_REQUEST)
    loop.feed(RESP, b"N")
    loop.feed(REQ, startup())
    loop.feed(RESP, AUTH_OK + READY_IDLE)
    loop.run(eof=True)
    clean(loop)
    assert [r.name for r in loop.records] == ["LOGIN"]


def test_query_cut_by_a_gap_then_a_pipeline_whose_first_answers_were_lost_too() -> None:
    """A gap takes a query's CommandComplete/ReadyForQuery and the ParseComplete/BindComplete of the
    pipeline after it: the RowDescription, DataRow and CommandComplete that follow were sent after the
    pipeline and are its answers, not the rest of the query's."""
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query("SELECT a FROM big"))
    loop.feed(RESP, row_description("a") + data_row(b"1"))
    loop.feed(
        REQ, b"".join(extended("SELECT t FROM tellers WHERE tid = $1", b"%d" % i) for i in range(3)) + SYNC
    )
    lost = complete("SELECT 1") + READY_IDLE + PARSE_OK + BIND_OK
    answers = extended_answer(("t",), [(b"1",)]) * 3 + READY_IDLE
    loop.wire.pos[loop.io(RESP)] += len(lost)
    loop.feed(RESP, answers[len(PARSE_OK + BIND_OK) :])
    loop.run(eof=True)
    assert loop.errors == []
    assert [(r.name, r.truncated) for r in loop.records] == [
        ("SELECT big", True),
        ("SELECT tellers", True),  # its ParseComplete and BindComplete were lost
        ("SELECT tellers", False),
        ("SELECT tellers", False),
    ]
    assert len(loop.records) + loop.health.total("unmatched_frames") >= 4


def test_answer_cut_by_lost_bytes_and_the_close_is_recorded_truncated() -> None:
    """Under ring pressure the capture copied only the head of a query's answer (its last rows,
    CommandComplete and ReadyForQuery were zeros), then the connection closed: the query is a
    truncated record with the rows seen, not an unmatched frame."""
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, query("SELECT a FROM t1"))
    answer = result(("a",), [(b"1",)] * 3) + READY_IDLE
    cut = len(row_description("a") + data_row(b"1") * 2) + 3
    loop.feed(RESP, answer[:cut], length=len(answer))
    loop.feed(REQ, TERMINATE)
    loop.run(eof=True)
    assert loop.errors == [] and loop.health.total("unmatched_frames") == 0
    assert [(r.name, r.truncated, r.attributes["db.response.returned_rows"]) for r in loop.records] == [
        ("SELECT t1", True, 2)
    ]


def test_unanswered_execute_at_the_close_is_counted() -> None:
    loop = Loop()
    logged_in(loop)
    loop.feed(REQ, extended("SELECT a FROM t1") + SYNC)
    loop.run(eof=True)
    assert loop.records == [] and loop.health.total("unmatched_frames") == 5
