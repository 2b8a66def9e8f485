"""Exact RESP bytes through the real framing loop: every reply type, pipelines, transactions, SELECT,
HELLO 3, pub/sub (RESP2 and RESP3), client-side-caching pushes, errors, inline commands, redaction."""

from __future__ import annotations

import pytest
from resp_helpers import REQ, RESP, bulk, cmd, loop, ops

from protocols.base import Direction, NeedData, Parsed
from protocols.redis import SPEC
from protocols.redis.parse import parse_frame
from protocols.redis.types import (
    ARRAY,
    BIG_NUMBER,
    BLOB_ERROR,
    BOOLEAN,
    BULK,
    DOUBLE,
    ERROR,
    INTEGER,
    MAP,
    NULL,
    SET,
    SIMPLE,
    VERBATIM,
    State,
)

# Every reply type of the spec, as redis-server sends it: (bytes, type byte of the frame).
REPLIES = [
    (b"+OK\r\n", SIMPLE),
    (b"-ERR unknown command 'FOO'\r\n", ERROR),
    (b":1000\r\n", INTEGER),
    (b":-3\r\n", INTEGER),
    (b"$5\r\nhello\r\n", BULK),
    (b"$0\r\n\r\n", BULK),
    (b"$-1\r\n", BULK),
    (b"*2\r\n$3\r\nfoo\r\n:1\r\n", ARRAY),
    (b"*0\r\n", ARRAY),
    (b"*-1\r\n", ARRAY),
    (b"*2\r\n*1\r\n:1\r\n*2\r\n+a\r\n-ERR x\r\n", ARRAY),
    (b"_\r\n", NULL),
    (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", MAP),
    (b"~3\r\n+a\r\n+b\r\n:7\r\n", SET),
    (b",1.23\r\n", DOUBLE),
    (b",-inf\r\n", DOUBLE),
    (b",nan\r\n", DOUBLE),
    (b",1e-5\r\n", DOUBLE),
    (b"(3492890328409238509324850943850943825024385\r\n", BIG_NUMBER),
    (b"#t\r\n", BOOLEAN),
    (b"#f\r\n", BOOLEAN),
    (b"=15\r\ntxt:Some string\r\n", VERBATIM),
    (b"!21\r\nSYNTAX invalid syntax\r\n", BLOB_ERROR),
    (b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n"
     b"*2\r\n:2039123\r\n:9543892\r\n", ARRAY),
    (b"*2\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n:5\r\n", ARRAY),  # an attribute before an element
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind"), REPLIES)
def test_every_reply_type_is_one_frame_of_its_type(reply: bytes, kind: int) -> None:
    result = parse_frame(memoryview(reply + b"+NEXT\r\n"), RESP, State())
    assert isinstance(result, Parsed) and result.size == len(reply)
    assert result.frame.kind == kind
    for cut in range(1, len(reply)):  # every prefix waits for more
        assert isinstance(parse_frame(memoryview(reply[:cut]), RESP, State()), NeedData), cut


@pytest.mark.parametrize(("reply", "kind"), REPLIES)
def test_every_reply_type_pairs_with_its_command(reply: bytes, kind: int) -> None:
    lp = loop()
    lp.feed(REQ, cmd("GET", "k") + cmd("PING"))
    lp.feed(RESP, reply + b"+PONG\r\n")
    assert [r.name for r in lp.records] == ["GET", "PING"]
    error = "ERR" if kind == ERROR else "SYNTAX" if kind == BLOB_ERROR else None
    assert lp.records[0].error_type == error
    assert lp.errors == [] and lp.health.total("unmatched_frames") == 0


def test_the_error_prefix_is_the_status_code_and_error_type() -> None:
    lp = loop()
    errors = [
        b"-ERR wrong number of arguments for 'get' command\r\n",
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        b"-MOVED 3999 127.0.0.1:6381\r\n",
        b"-NOAUTH Authentication required.\r\n",
        b"-error lowercase words are no prefix\r\n",
    ]
    for e in errors:
        lp.feed(REQ, cmd("LPUSH", "k", "v"))
        lp.feed(RESP, e)
    assert [r.error_type for r in lp.records] == ["ERR", "WRONGTYPE", "MOVED", "NOAUTH", "ERR"]
    for r in lp.records:
        assert r.attributes["db.response.status_code"] == r.error_type
        assert {"db.response.status_code", "error.type"} <= set(r.metric_attributes)


def test_semconv_attributes_of_a_command() -> None:
    lp = loop()
    lp.feed(REQ, cmd("set", "user:42", "s3cret-value"))
    lp.feed(RESP, b"+OK\r\n")
    (r,) = lp.records
    assert r.protocol == "redis" and r.name == "SET" and r.metric == "db.client.operation.duration"
    assert r.attributes["db.system.name"] == "redis"
    assert r.attributes["db.operation.name"] == "SET"
    assert r.attributes["db.query.text"] == "SET ? ?"
    assert r.attributes["db.namespace"] == "0"
    assert r.attributes["server.port"] == 8080  # the loop's server end
    assert "db.response.status_code" not in r.attributes and r.error_type is None
    assert set(r.metric_attributes) == {
        "db.system.name", "db.namespace", "db.operation.name", "server.address", "server.port",
    }  # fmt: skip
    assert "user:42" not in repr(lp.exchanges) and "s3cret" not in repr(r)


@pytest.mark.parametrize(
    ("command", "text", "operation"),
    [
        (("CLIENT", "SETNAME", "my-app"), "CLIENT SETNAME ?", "CLIENT"),
        (("CONFIG", "GET", "maxmemory"), "CONFIG GET ?", "CONFIG"),
        (("config", "set", "requirepass", "hunter2"), "CONFIG SET ? ?", "CONFIG"),
        (("CONFIG", "hunter2-not-a-subcommand"), "CONFIG ?", "CONFIG"),
        (("ACL", "SETUSER", "bob", ">pw-secret"), "ACL SETUSER ? ?", "ACL"),
        (("PING",), "PING", "PING"),
        (("MSET", *(["k", "v"] * 40)), "MSET" + " ?" * 32 + " ...", "MSET"),
        (("NOSUCHCMD", "a"), "_OTHER ?", "_OTHER"),
        (("AUTH", "default", "pw-in-auth"), "AUTH ? ?", "AUTH"),
        (("HELLO", "3", "AUTH", "default", "pw-in-hello"), "HELLO ? ? ? ?", "HELLO"),
    ],
)
def test_query_text_keeps_command_and_known_subcommand_only(
    command: tuple[str, ...], text: str, operation: str
) -> None:
    lp = loop()
    lp.feed(REQ, cmd(*command))
    lp.feed(RESP, b"+OK\r\n")
    (r,) = lp.records
    assert r.attributes["db.query.text"] == text and r.attributes["db.operation.name"] == operation
    frames = repr(lp.exchanges) + repr(lp.state)
    for secret in ("my-app", "maxmemory", "hunter2", "pw-secret", "pw-in-auth", "pw-in-hello", "bob"):
        assert secret not in frames + repr(r)


def test_auth_credentials_are_never_copied_into_frames() -> None:
    """The frame of AUTH keeps the command name and the argument count: nothing else of the bytes."""
    for data in (
        cmd("AUTH", "pw-0123456789"),
        b"AUTH pw-0123456789\r\n",
        cmd("HELLO", "3", "AUTH", "u", "pw-0123456789"),
    ):
        result = parse_frame(memoryview(data), REQ, State())
        assert isinstance(result, Parsed)
        assert "pw-0123456789" not in repr(result.frame)
        assert result.frame.name in ("AUTH", "HELLO")


def test_a_pipeline_of_500_commands_pairs_in_order() -> None:
    lp = loop()
    n = 500
    lp.feed(REQ, b"".join(cmd("GET", f"k{i}") if i % 3 else cmd("INCR", f"c{i}") for i in range(n)))
    replies = b"".join(bulk(f"v{i}") if i % 3 else b":%d\r\n" % i for i in range(n))
    for at in range(0, len(replies), 997):  # replies in reads that split messages anywhere
        lp.feed(RESP, replies[at : at + 997])
    assert len(lp.records) == n
    assert [r.name for r in lp.records] == ["GET" if i % 3 else "INCR" for i in range(n)]
    assert lp.errors == [] and lp.health.total("unmatched_frames") == 0
    # Each exchange is stamped by its own command's write and its own reply's read.
    assert all(r.start_ns <= r.end_ns for r in lp.records)


def test_a_pipeline_deeper_than_the_queue_limit_is_paired_not_evicted() -> None:
    lp = loop()
    n = 3000  # more than Limits.max_queued_frames (1024)
    lp.feed(REQ, cmd("PING") * n)
    lp.feed(RESP, b"+PONG\r\n" * n)
    assert len(lp.records) == n and lp.health.total("unmatched_frames") == 0


def test_multi_exec_queued_replies_then_the_array() -> None:
    lp = loop()
    lp.feed(REQ, cmd("MULTI") + cmd("SET", "a", "1") + cmd("INCR", "a") + cmd("SELECT", "2") + cmd("EXEC"))
    lp.feed(RESP, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:2\r\n+OK\r\n")
    lp.feed(REQ, cmd("GET", "a"))
    lp.feed(RESP, bulk("2"))
    assert ops(lp) == [
        ("MULTI", "MULTI", "0", None),
        ("SET", "SET ? ?", "0", None),
        ("INCR", "INCR ?", "0", None),
        ("SELECT", "SELECT ?", "0", None),  # queued: the database changes when EXEC runs it
        ("EXEC", "EXEC", "2", None),
        ("GET", "GET ?", "2", None),
    ]


def test_exec_aborted_and_discard_end_the_transaction() -> None:
    lp = loop()
    lp.feed(REQ, cmd("MULTI") + cmd("SELECT", "5") + cmd("NOPE") + cmd("EXEC") + cmd("GET", "x"))
    lp.feed(RESP, b"+OK\r\n+QUEUED\r\n-ERR unknown command 'NOPE'\r\n")
    lp.feed(RESP, b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n")
    assert [(n, ns, e) for n, _, ns, e in ops(lp)] == [
        ("MULTI", "0", None), ("SELECT", "0", None), ("_OTHER", "0", "ERR"), ("EXEC", "0", "EXECABORT"),
        ("GET", "0", None),
    ]  # fmt: skip
    assert not lp.state.multi


def test_select_sets_the_namespace_of_later_commands() -> None:
    lp = loop()
    lp.feed(
        REQ, cmd("GET", "a") + cmd("SELECT", "7") + cmd("GET", "a") + cmd("SELECT", "99") + cmd("GET", "a")
    )
    lp.feed(RESP, b"$-1\r\n+OK\r\n$-1\r\n-ERR DB index is out of range\r\n$-1\r\n")
    assert [ns for _, _, ns, _ in ops(lp)] == ["0", "7", "7", "7", "7"]


def test_hello_3_switches_to_resp3_and_reset_back() -> None:
    lp = loop()
    lp.feed(REQ, cmd("HELLO", "3"))
    lp.feed(
        RESP, b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
    )
    assert lp.state.resp3
    lp.feed(REQ, cmd("HGETALL", "h") + cmd("SMEMBERS", "s") + cmd("ZSCORE", "z", "m") + cmd("EXISTS", "k"))
    lp.feed(RESP, b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n~1\r\n$1\r\nm\r\n,1.5\r\n:1\r\n")
    lp.feed(REQ, cmd("SELECT", "3") + cmd("RESET") + cmd("GET", "k"))
    lp.feed(RESP, b"+OK\r\n+RESET\r\n_\r\n")
    assert [r.name for r in lp.records] == [
        "HELLO",
        "HGETALL",
        "SMEMBERS",
        "ZSCORE",
        "EXISTS",
        "SELECT",
        "RESET",
        "GET",
    ]
    assert [r.attributes["db.namespace"] for r in lp.records][-3:] == ["3", "0", "0"]
    assert not lp.state.resp3
    lp.feed(REQ, cmd("HELLO", "4"))
    lp.feed(RESP, b"-NOPROTO unsupported protocol version\r\n")
    assert lp.records[-1].error_type == "NOPROTO" and not lp.state.resp3


def test_resp2_subscribe_one_record_per_command_and_messages_are_not_replies() -> None:
    lp = loop()
    lp.feed(REQ, cmd("SUBSCRIBE", "news", "sport"))
    confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n"
    lp.feed(RESP, confirm[:20])
    lp.feed(RESP, confirm[20:])
    message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    lp.feed(RESP, message * 50)
    lp.feed(REQ, cmd("PSUBSCRIBE", "n*"))
    lp.feed(RESP, message + b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n")
    lp.feed(RESP, b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n" + message)
    lp.feed(REQ, cmd("PING"))
    lp.feed(RESP, message + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    lp.feed(REQ, cmd("UNSUBSCRIBE"))
    lp.feed(
        RESP,
        b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:1\r\n",
    )
    lp.feed(REQ, cmd("PUNSUBSCRIBE"))
    lp.feed(RESP, b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n")
    lp.feed(REQ, cmd("LRANGE", "l", "0", "-1"))  # no longer subscribed: this array is a reply
    lp.feed(RESP, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n")
    lp.run(eof=True)
    assert [(r.name, r.attributes["db.query.text"]) for r in lp.records] == [
        ("SUBSCRIBE", "SUBSCRIBE ? ?"), ("PSUBSCRIBE", "PSUBSCRIBE ?"), ("PING", "PING"),
        ("UNSUBSCRIBE", "UNSUBSCRIBE"), ("PUNSUBSCRIBE", "PUNSUBSCRIBE"), ("LRANGE", "LRANGE ? ? ?"),
    ]  # fmt: skip
    assert lp.state.pushes == 54 and not lp.state.subscribed
    assert lp.errors == [] and lp.health.total("unmatched_frames") == 0
    assert not any(r.degraded or r.error for r in lp.records)


def test_resp3_subscribe_confirmations_and_messages_are_pushes() -> None:
    lp = loop()
    lp.feed(REQ, cmd("HELLO", "3"))
    lp.feed(RESP, b"%1\r\n$5\r\nproto\r\n:3\r\n")
    lp.feed(REQ, cmd("SUBSCRIBE", "a", "b"))
    lp.feed(RESP, b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
    lp.feed(RESP, b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n" * 10)
    lp.feed(REQ, cmd("GET", "k"))  # RESP3 allows any command while subscribed
    lp.feed(RESP, b">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nyo\r\n$1\r\nv\r\n")
    lp.feed(REQ, cmd("LRANGE", "l", "0", "-1"))  # an array that looks like a RESP2 delivery: a reply
    lp.feed(RESP, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n")
    lp.run(eof=True)
    assert [r.name for r in lp.records] == ["HELLO", "SUBSCRIBE", "GET", "LRANGE"]
    assert lp.state.pushes == 11 and lp.health.total("unmatched_frames") == 0


def test_client_tracking_invalidation_pushes_never_stall_pairing() -> None:
    lp = loop()
    lp.feed(REQ, cmd("HELLO", "3") + cmd("CLIENT", "TRACKING", "on") + cmd("GET", "k"))
    lp.feed(RESP, b"%0\r\n+OK\r\n$1\r\nv\r\n")
    invalidate = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    lp.feed(REQ, cmd("GET", "k"))
    lp.feed(RESP, invalidate + bulk("w") + invalidate)
    lp.feed(RESP, b">2\r\n$10\r\ninvalidate\r\n_\r\n")  # FLUSHALL: every key, a null
    lp.run(eof=True)
    assert [r.attributes["db.query.text"] for r in lp.records] == [
        "HELLO ?",
        "CLIENT TRACKING ?",
        "GET ?",
        "GET ?",
    ]
    assert lp.state.pushes == 3 and lp.health.total("unmatched_frames") == 0


def test_subscribe_refused_is_an_error_record() -> None:
    lp = loop()
    lp.feed(REQ, cmd("SUBSCRIBE") + cmd("PING"))
    lp.feed(RESP, b"-ERR wrong number of arguments for 'subscribe' command\r\n+PONG\r\n")
    assert [(r.name, r.error_type) for r in lp.records] == [("SUBSCRIBE", "ERR"), ("PING", None)]


def test_inline_commands_on_a_redis_connection() -> None:
    lp = loop()
    lp.feed(REQ, b"PING\r\nset k v\r\nSELECT 4\r\n\r\nget k\n")
    lp.feed(RESP, b"+PONG\r\n+OK\r\n+OK\r\n$1\r\nv\r\n")
    assert ops(lp) == [
        ("PING", "PING", "0", None), ("SET", "SET ? ?", "0", None), ("SELECT", "SELECT ?", "4", None),
        ("GET", "GET ?", "4", None),
    ]  # fmt: skip
    assert lp.health.total("unmatched_frames") == 1  # the empty line: answered by nothing, counted


def test_a_connection_is_detected_by_its_commands_or_by_its_replies() -> None:
    lp = loop(detect=True)
    lp.feed(REQ, cmd("SET", "a", "b"))
    lp.feed(RESP, b"+OK\r\n")
    assert [r.name for r in lp.records] == ["SET"]
    # "get a" alone is no sign of Redis (memcached says the same): the reply decides.
    lp = loop(detect=True, auto_run=False)
    lp.feed(REQ, b"get a\r\n")
    assert not lp.run() and lp.parser.spec is None
    lp.feed(RESP, b"$1\r\nb\r\n")
    lp.run()
    assert [r.name for r in lp.records] == ["GET"]


def test_replies_are_never_commands() -> None:
    assert SPEC.detect(cmd("GET", "k"), Direction.REQUEST)
    for reply, _ in REPLIES:
        assert not SPEC.detect(reply, Direction.REQUEST), reply


def test_frames_keep_no_user_data() -> None:
    """Unknown command names, status texts and aggregates' first elements may be anything (a password
    typed as a command, a stored value): frames keep only words from the protocol's own vocabulary."""
    for data, direction in (
        (cmd("hunter2-typed-as-a-command", "x"), REQ),
        (b"hunter2-inline-word arg\r\n", REQ),
        (b"+hunter2-status\r\n", RESP),
        (b"*2\r\n$14\r\nhunter2-stored\r\n:1\r\n", RESP),
        (b"*2\r\n+hunter2-simple\r\n:1\r\n", RESP),
        (b"-ERR hunter2 in an error message\r\n", RESP),
    ):
        result = parse_frame(memoryview(data), direction, State())
        assert isinstance(result, Parsed) and "hunter2" not in repr(result.frame), data
    lp = loop()
    lp.feed(REQ, cmd("hunter2-typed-as-a-command"))
    lp.feed(RESP, b"-ERR unknown command 'hunter2-typed-as-a-command'\r\n")
    (r,) = lp.records
    assert r.name == "_OTHER" and r.error_type == "ERR" and "hunter2" not in repr(lp.exchanges) + repr(r)


def test_the_live_table_of_run_and_top_shows_redis_rows() -> None:
    from pipeline.live_table import LiveTable

    lp = loop()
    lp.feed(REQ, cmd("GET", "a") + cmd("GET", "b") + cmd("LPUSH", "a", "x"))
    lp.feed(RESP, bulk("1") + b"$-1\r\n-WRONGTYPE Operation against a key\r\n")
    table = LiveTable(clock=lambda: 100.0)
    table.export(lp.records)
    rows = {(r.protocol, r.role, r.name): (r.requests, r.errors) for r in table.rows()}
    assert rows == {("redis", "server", "GET"): (2, 0), ("redis", "server", "LPUSH"): (1, 1)}


def test_monitor_feed_lines_are_not_replies() -> None:
    lp = loop()
    lp.feed(REQ, cmd("MONITOR"))
    lp.feed(RESP, b"+OK\r\n")
    feed = b'+1700000000.123456 [0 127.0.0.1:5555] "set" "k" "v"\r\n'
    lp.feed(RESP, feed * 30)
    lp.feed(REQ, cmd("RESET"))
    lp.feed(RESP, feed + b"+RESET\r\n")
    lp.feed(REQ, cmd("GET", "k"))
    lp.feed(RESP, bulk("v"))
    lp.run(eof=True)
    assert [r.name for r in lp.records] == ["MONITOR", "RESET", "GET"]
    assert lp.state.pushes == 31 and not lp.state.monitor
    assert lp.health.total("unmatched_frames") == 0 and '"k"' not in repr(lp.queues)


def test_a_pipeline_of_inline_commands_and_a_long_inline_line() -> None:
    lp = loop()
    lp.feed(REQ, b"INCR n\r\n" * 5000 + b"SET k " + b"v" * 5000 + b"\r\n")
    lp.feed(RESP, b"".join(b":%d\r\n" % i for i in range(5000)) + b"+OK\r\n")
    assert [r.name for r in lp.records] == ["INCR"] * 5000 + ["SET"]
    assert lp.records[-1].attributes["db.query.text"] == "SET ? ?" and lp.errors == []


def test_joining_a_subscribed_resp2_connection_counts_deliveries_as_pushes() -> None:
    lp = loop(detect=True)
    message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    lp.feed(RESP, message * 3 + b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n")
    lp.feed(REQ, cmd("PING"))
    lp.feed(RESP, message + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    lp.run(eof=True)
    assert [r.name for r in lp.records] == ["PING"] and lp.state.pushes == 5 and lp.state.subscribed
    assert lp.health.total("unmatched_frames") == 0 and lp.errors == []


def test_client_reply_off_and_skip_leave_commands_unanswered_without_mispairing() -> None:
    lp = loop()
    lp.feed(REQ, cmd("CLIENT", "REPLY", "OFF") + cmd("SET", "a", "1") + cmd("INCR", "n"))
    lp.feed(REQ, cmd("CLIENT", "REPLY", "ON") + cmd("GET", "a"))
    lp.feed(RESP, b"+OK\r\n" + bulk("1"))
    lp.feed(REQ, b"CLIENT REPLY SKIP\r\n" + cmd("DEL", "a") + cmd("EXISTS", "a"))
    lp.feed(RESP, b":0\r\n")
    lp.run(eof=True)
    assert [r.attributes["db.query.text"] for r in lp.records] == [
        "CLIENT REPLY ?", "SET ? ?", "INCR ?", "CLIENT REPLY ?", "GET ?",
        "CLIENT REPLY ?", "DEL ?", "EXISTS ?",
    ]  # fmt: skip
    unanswered = [lp.records[i] for i in (0, 1, 2, 5, 6)]  # each ends with its own command
    assert all(r.end_ns == r.start_ns for r in unanswered)
    assert lp.records[4].end_ns > lp.records[4].start_ns and lp.records[7].end_ns == lp.clock
    assert lp.health.total("unmatched_frames") == 0 and lp.errors == []
