"""Redis through `l7scope replay` against tshark's `resp` dissector: redis-server 7 and redis-py, RESP2.

tshark's dissector knows RESP2 only: RESP3 replies (maps, nulls `_`, pushes) are not dissected, and a
null bulk string (`$-1`) leaves no field at all, so the traffic compared here is RESP2 with flat replies
(status, error, integer, bulk string): then each reply is one field occurrence and tshark's replies can
be counted per frame. RESP3 and pub/sub are covered against the server itself in test_redis_live.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.oracle import (
    Tcpdump,
    assert_close,
    client_port,
    epoch_ns,
    needs_tools,
    replay,
    tshark,
    values,
)
from tests.support.servers import redis as redis_server

redis = pytest.importorskip("redis")

pytestmark = [
    needs_tools,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server missing"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


def _traffic(port: int) -> None:
    r = redis.Redis(port=port, protocol=2)
    r.set("a", "1")
    assert r.get("a") == b"1"
    assert r.incr("n") == 1
    with pytest.raises(redis.ResponseError):
        r.lpush("a", "x")  # WRONGTYPE
    with pytest.raises(redis.ResponseError):
        r.execute_command("NOSUCHCOMMAND", "k")
    r.hset("h", "f", "v")
    assert r.hget("h", "f") == b"v"
    r.execute_command("SELECT", "3")
    r.set("b", "2")
    p = r.pipeline(transaction=False)
    for _ in range(50):
        p.get("b")
    assert p.execute() == [b"2"] * 50
    r.execute_command("SELECT", "0")
    r.close()


def tshark_exchanges(pcap: Path, port: int) -> list[dict[str, Any]]:
    """Commands in capture order, each with the time of the frame that ended its reply (replies counted
    per frame as their field occurrences: this traffic's replies are all flat)."""
    rows = tshark(
        pcap,
        ["tcp.stream", "frame.time_epoch", "tcp.srcport", "tcp.dstport", "resp.array.length",
         "resp.bulk_string.value", "resp.string", "resp.error", "resp.integer"],
        decode=f"tcp.port=={port},resp", where="tcp.len > 0",
    )  # fmt: skip
    out: list[dict[str, Any]] = []
    waiting: dict[str, list[dict[str, Any]]] = {}
    for stream, when, sport, dport, lengths, bulks, strings, errors, integers in rows:
        ts = epoch_ns(when)
        if int(dport) == port:
            args = [bytes.fromhex(v) for v in values(bulks)]
            for n in map(int, values(lengths)):
                name, args = args[0].decode().upper(), args[n:]
                x = {"client": int(sport), "command": name, "start_ns": ts, "end_ns": None, "error": None}
                out.append(x)
                waiting.setdefault(stream, []).append(x)
            continue
        # An error's text may hold the aggregator's comma: this traffic's errors come one to a frame.
        errs = [errors.split(" ", 1)[0]] if errors else []
        count = len(values(bulks)) + len(values(strings)) + len(errs) + len(values(integers))
        answered = [waiting[stream].pop(0) for _ in range(count)]
        for x in answered:
            x["end_ns"] = ts
        if errs:
            assert len(answered) == 1, answered
            answered[0]["error"] = errs[0]
    return out


def test_redis_py_resp2_matches_tshark(server: int, tmp_path: Path) -> None:
    pcap = tmp_path / "redis.pcap"
    with Tcpdump(pcap, server):
        _traffic(server)
    ours = sorted(replay(pcap, tmp_path), key=lambda r: r["start_ns"])
    theirs = tshark_exchanges(pcap, server)
    assert all(x["end_ns"] is not None for x in theirs)
    known = [
        (x["client"], "_OTHER" if x["command"] == "NOSUCHCOMMAND" else x["command"], x["error"])
        for x in theirs
    ]
    assert [(client_port(r), r["attributes"]["db.operation.name"], r["error_type"]) for r in ours] == known
    for r, x in zip(ours, theirs, strict=True):
        assert_close(r["start_ns"], x["start_ns"], f"{r['name']} request")
        assert_close(r["end_ns"], x["end_ns"], f"{r['name']} reply")
    # What the traffic was, so an oracle that saw nothing cannot pass.
    ops = [(r["name"], r["error_type"], r["attributes"]["db.namespace"]) for r in ours]
    assert ("LPUSH", "WRONGTYPE", "0") in ops and ("_OTHER", "ERR", "0") in ops
    assert ops.count(("GET", None, "3")) == 50 and ops[-1] == ("SELECT", None, "0")
    assert all(r["role"] == "server" and r["protocol"] == "redis" and not r["degraded"] for r in ours)
    texts = {r["attributes"]["db.query.text"] for r in ours}
    assert {"SET ? ?", "HSET ? ? ?", "SELECT ?", "GET ?"} <= texts
