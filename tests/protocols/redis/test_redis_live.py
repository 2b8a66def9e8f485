"""Redis, live: `l7scope run` (real eBPF) tracing redis-server and its clients on 127.0.0.1.

redis-py on both protocols (plain commands, an error, a pipeline, MULTI/EXEC, SELECT, pub/sub, an ACL
user's AUTH whose password must appear nowhere in the output), and `redis-benchmark -P 16`: every
command exactly once on each traced side, counted against the server's own INFO commandstats.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka_broker import free_port
from tests.support.l7scope_proc import L7scopeProcess
from tests.support.servers import redis as redis_server
from tests.test_end_to_end import base_env

redis = pytest.importorskip("redis")

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed"),
]
PASSWORD = "Rd-s3cret-pass-9071"
SECRET_VALUE = "value-hunter2-4417"


@contextmanager
def traced(tmp_path: Path) -> Iterator[tuple[int, L7scopeProcess, Path]]:
    """redis-server and `l7scope run --export jsonl` tracing only its port; yields (port, run, jsonl)."""
    out = tmp_path / "records.jsonl"
    port = free_port()
    env = base_env(L7SCOPE_CAPTURE_ONLY_PORTS=str(port))
    with redis_server(tmp_path / "redis", port):
        run = L7scopeProcess("run", "--no-table", "--export", f"jsonl:{out}", env=env)
        try:
            yield port, run, out
        finally:
            run.stop()


def read_records(out: Path, port: int, n: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """The records of `port`, once there are at least n (or the timeout), plus a second for any extra."""
    deadline = time.monotonic() + timeout_s
    mine: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        mine = [r for r in map(json.loads, lines) if r["server"] == f"127.0.0.1:{port}"]
        if len(mine) >= n:
            break
        time.sleep(0.5)
    time.sleep(1.0)
    lines = out.read_text().splitlines() if out.exists() else []
    return [r for r in map(json.loads, lines) if r["server"] == f"127.0.0.1:{port}"]


def commandstats(port: int) -> Counter[str]:
    """redis-server's own count of the commands it ran, by db.operation.name."""
    info = redis.Redis(port=port, protocol=2).info("commandstats")
    calls: Counter[str] = Counter()
    for name, stats in info.items():
        calls[name.removeprefix("cmdstat_").split("|")[0].upper()] += stats["calls"]
    return calls


def by_side(records: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {"client": Counter(), "server": Counter()}
    for r in records:
        out[r["role"]][r["attributes"]["db.operation.name"]] += 1
    return out


def redis_py_traffic(port: int) -> None:
    admin = redis.Redis(port=port, protocol=2)
    admin.execute_command("ACL", "SETUSER", "app", "on", f">{PASSWORD}", "~*", "&*", "+@all")
    for protocol in (2, 3):
        r = redis.Redis(port=port, protocol=protocol, username="app", password=PASSWORD)
        r.set("k", SECRET_VALUE)
        assert r.get("k") == SECRET_VALUE.encode()
        with pytest.raises(redis.ResponseError):
            r.lpush("k", "x")  # WRONGTYPE
        p = r.pipeline(transaction=False)
        for i in range(200):
            p.incr(f"n{i % 7}")
        p.execute()
        tx = r.pipeline(transaction=True)  # MULTI, 3 x QUEUED, EXEC
        tx.set("t", "1").incr("t").get("t")
        assert tx.execute()[1] == 2
        r.execute_command("SELECT", "5")
        r.hset("h", "f", "v")
        sub = r.pubsub()
        sub.subscribe("news", "sport")
        for _ in range(2):
            assert sub.get_message(timeout=5)["type"] == "subscribe"
        for i in range(5):
            admin.publish("news", f"m{i}")
        got = [sub.get_message(timeout=5) for _ in range(5)]
        assert [m["data"] for m in got if m] == [f"m{i}".encode() for i in range(5)]
        sub.unsubscribe()
        sub.get_message(timeout=5)
        sub.close()
        r.close()
    admin.close()


def test_redis_py_both_protocols_recorded_on_both_sides(tmp_path: Path) -> None:
    with traced(tmp_path) as (port, run, out):
        redis_py_traffic(port)
        ran = commandstats(port)
        expected = sum(ran.values())  # everything but the INFO of commandstats itself
        recs = read_records(out, port, 2 * expected)
    summary = run.log("pipeline stopped")
    assert summary, "".join(run.lines[-20:])
    log = "".join(run.lines)
    sides = by_side(recs)
    for side in ("client", "server"):
        got = sides[side]
        for op in ("SET", "GET", "LPUSH", "INCR", "MULTI", "EXEC", "SELECT", "HSET", "PUBLISH", "AUTH"):
            assert got[op] == ran[op], (side, op, got, ran)
        assert got["SUBSCRIBE"] == 2 and got["UNSUBSCRIBE"] == 2, (side, got)  # one record per command
    server = [r for r in recs if r["role"] == "server"]
    assert {r["error_type"] for r in server if r["attributes"]["db.operation.name"] == "LPUSH"} == {
        "WRONGTYPE"
    }
    assert {r["attributes"]["db.namespace"] for r in server if r["name"] == "HSET"} == {"5"}
    assert {r["attributes"]["db.query.text"] for r in server if r["name"] == "AUTH"} == {"AUTH ? ?"}
    assert {r["attributes"]["db.query.text"] for r in server if r["name"] == "ACL"} == {
        "ACL SETUSER ? ? ? ? ? ?"
    }
    assert all(r["protocol"] == "redis" and r["attributes"]["db.system.name"] == "redis" for r in recs)
    # The password and the stored value: in no record, in no log line.
    text = out.read_text() + log
    assert PASSWORD not in text and SECRET_VALUE not in text
    assert "{redis" not in str(summary.get("losses", "")), summary  # no unmatched frame, no parse error


def test_redis_benchmark_pipelined_every_command_once_per_side(tmp_path: Path) -> None:
    n = 10_000
    with traced(tmp_path) as (port, run, out):
        subprocess.run(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(n), "-t", "set,get", "-P", "16",
             "-c", "4", "-q"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        ran = commandstats(port)
        recs = read_records(out, port, 4 * n)
    summary = run.log("pipeline stopped")
    assert summary, "".join(run.lines[-20:])  # the stop summary is logged once the pipeline has stopped
    assert ran["SET"] == ran["GET"] == n
    sides = by_side(recs)
    for side in ("client", "server"):
        assert sides[side]["SET"] == n and sides[side]["GET"] == n, (side, sides[side], summary)
    # redis-py's CLIENT SETINFO (for the commandstats) is refused by redis-server 7.0: only that fails
    assert {(r["name"], r["error_type"]) for r in recs if r["error_type"]} <= {("CLIENT", "ERR")}
    assert {r["attributes"]["db.query.text"] for r in recs if r["name"] in ("SET", "GET")} == {
        "SET ? ?",
        "GET ?",
    }
    assert summary["capture_lost_events"] == 0 and "{redis" not in str(summary.get("losses", "")), summary
