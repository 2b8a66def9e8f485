"""PostgreSQL through `l7scope replay` against tshark's pgsql dissector: psycopg simple, extended and
pipelined queries (with errors and an aborted pipeline), COPY, an md5 login, a failed login and asyncpg
prepared statements, recorded with tcpdump. Operations, errors and times (within 1 ms) must agree."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.oracle import Tcpdump, assert_close, client_port, epoch_ns, needs_tools, replay, tshark
from tests.support.servers import PG_BIN, pg_users
from tests.support.servers import postgres as postgres_server

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

pytestmark = [
    needs_tools,
    pytest.mark.skipif(not (PG_BIN / "postgres").exists(), reason="PostgreSQL 15 absent"),
]
PASSWORD = "conf-Pw-pg-81"
LITERAL = "hunter2-literal"
_ENDS_EXECUTE = {"Command completion", "Empty query", "Portal suspended"}


@pytest.fixture(scope="module")
def pg() -> Iterator[int]:
    tables = [
        "CREATE TABLE items (id int PRIMARY KEY, name text)",
        "INSERT INTO items VALUES (1, 'apple'), (2, 'pear')",
    ]
    with postgres_server(pg_users(PASSWORD)) as (port, sock):
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="shop", autocommit=True) as c:
            for t in tables:
                c.execute(t.encode())
        yield port


def _traffic(port: int) -> None:
    dsn = {"host": "127.0.0.1", "port": port, "password": PASSWORD, "dbname": "shop", "sslmode": "prefer"}
    with psycopg.connect(user="app", autocommit=True, **dsn) as c:
        c.execute(f"SELECT id, name FROM items WHERE name = '{LITERAL}'")
        c.execute("SELECT id, name FROM items WHERE id > %s", (0,))
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("SELEC broken")
        with c.pipeline():
            for i in range(3):
                c.execute("SELECT name FROM items WHERE id = %s", (i,))
        with pytest.raises(psycopg.errors.DivisionByZero), c.pipeline():
            c.execute("SELECT 1/0")
            c.execute("SELECT %s::int", (5,))
        with c.cursor().copy("COPY items TO STDOUT") as cp:
            for _ in cp:
                pass
        c.execute("SELECT 1; SELECT 2")
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM missing_table")
        with c.cursor().copy("COPY items (id, name) FROM STDIN") as cp:
            cp.write_row((10, LITERAL))
        c.execute("LISTEN jobs")
        with psycopg.connect(user="app", autocommit=True, **dsn) as other:
            other.execute("NOTIFY jobs, 'job-1'")
        time.sleep(0.05)  # the notification arrives while this connection is idle
        c.execute("SELECT 4")
        slow = threading.Timer(0.3, c.cancel)  # a CancelRequest on a connection of its own
        slow.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT pg_sleep(5)")
        slow.join()
    with psycopg.connect(user="md5user", **dsn) as c:
        c.execute("SELECT 3").fetchall()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            user="app", host="127.0.0.1", port=port, password="wrong", dbname="shop", sslmode="disable"
        )

    async def with_asyncpg() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="app", password=PASSWORD, database="shop", ssl=False
        )
        assert len(await conn.fetch("SELECT id, name FROM items WHERE id >= $1", 1)) == 3
        await conn.execute("UPDATE items SET name = $1 WHERE id = $2", LITERAL, 2)
        async with conn.transaction():  # a cursor: Execute with a row limit, PortalSuspended
            assert len([r async for r in conn.cursor("SELECT id FROM items", prefetch=1)]) == 3
        await conn.close()

    asyncio.run(with_asyncpg())


def tshark_pg_exchanges(pcap: Path, port: int) -> list[dict[str, Any]]:
    """Exchanges from tshark's dissection: messages paired by the protocol's own rules."""
    rows = tshark(
        pcap,
        ["tcp.stream", "frame.time_epoch", "tcp.srcport", "tcp.dstport", "pgsql.type", "pgsql.query",
         "pgsql.code"],
        decode=f"tcp.port=={port},pgsql", where="pgsql",
    )  # fmt: skip
    streams: dict[str, dict[str, list[Any]]] = {}
    for stream, when, sport, dport, types, queries, codes in rows:
        s = streams.setdefault(stream, {"client": [], "server": [], "port": []})
        ts = epoch_ns(when)
        queries_left = [q for q in queries.split(",") if q] if queries else []
        codes_left = [c for c in codes.split(",") if c] if codes else []
        for t in types.split(","):
            if int(dport) == port:
                q = queries_left.pop(0) if t in ("Simple query", "Parse") and queries_left else ""
                s["client"].append((t, ts, q))
                s["port"] = [int(sport)]
            else:
                code = codes_left.pop(0) if t == "Error" and codes_left else ""
                if t not in ("Notice", "Notification", "Parameter status"):
                    s["server"].append((t, ts, code))
    out: list[dict[str, Any]] = []
    for s in streams.values():
        out += _pair(s["client"], s["server"], s["port"][0] if s["port"] else 0)
    return sorted(out, key=lambda x: x["start_ns"])


def _pair(
    client: list[tuple[str, int, str]], server: list[tuple[str, int, str]], port: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    srv = list(server)
    stmts: dict[int, str] = {}
    aborted, pending, batch_query, batch_start = False, None, "", None

    def take(until: set[str]) -> tuple[int | None, str]:
        error = ""
        while srv:
            t, ts, code = srv.pop(0)
            error = error or code
            if t in until or (t == "Error" and until != {"Ready for query"}):
                return ts, error
        return None, error

    for t, ts, query in client:
        x = {"client": port, "start_ns": ts, "end_ns": None, "error": None, "query": query}
        if aborted and t not in ("Sync", "Termination"):
            if t == "Parse":
                batch_query = query
            if t == "Execute":
                if pending is not None:
                    out.append(pending)
                    pending = None
                else:
                    out.append(
                        {
                            **x,
                            "start_ns": batch_start or ts,
                            "error": "pipeline_aborted",
                            "query": batch_query,
                        }
                    )
                batch_start = None
            continue
        if t == "Cancel request":
            out.append({**x, "operation": "CANCEL"})
        elif t == "Startup message":
            end, error = take({"Ready for query", "Error"})
            out.append({**x, "operation": "LOGIN", "end_ns": end, "error": error or None})
        elif t == "Simple query":
            end, error = take({"Ready for query"})
            out.append({**x, "operation": _op(query), "end_ns": end, "error": error or None})
        elif t in ("Parse", "Bind", "Describe"):
            batch_start = batch_start or ts
            if t == "Parse":
                batch_query = query
            until = {"Parse": {"Parse completion"}, "Bind": {"Bind completion"}}.get(
                t, {"Row description", "No data"}
            )
            end, error = take(until)
            if error:
                aborted = True
                pending = {**x, "start_ns": batch_start, "end_ns": end, "error": error, "query": batch_query}
                batch_start = None
        elif t == "Execute":
            end, error = take(_ENDS_EXECUTE)
            out.append(
                {
                    **x,
                    "start_ns": batch_start or ts,
                    "end_ns": end,
                    "error": error or None,
                    "query": batch_query,
                }
            )
            batch_start = None
            aborted = bool(error)
        elif t == "Sync":
            take({"Ready for query"})
            aborted, batch_start = False, None
            if pending is not None:
                out.append(pending)
                pending = None
    del stmts
    return out


def _op(query: str) -> str:
    parts = [p for p in query.split(";") if p.strip()]
    ops = {p.split()[0].upper() for p in parts}
    if len(parts) > 1:
        return f"BATCH {ops.pop()}" if len(ops) == 1 else "BATCH"
    return ops.pop() if ops else ""


def test_postgres_replay_matches_tshark(pg: int, tmp_path: Path) -> None:
    pcap = tmp_path / "pg.pcap"
    with Tcpdump(pcap, pg):
        _traffic(pg)
    records = sorted(replay(pcap, tmp_path), key=lambda r: r["start_ns"])
    theirs = tshark_pg_exchanges(pcap, pg)
    ours = [(client_port(r), r["error_type"]) for r in records]
    assert ours == [(x["client"], x["error"]) for x in theirs]
    for r, x in zip(records, theirs, strict=True):
        assert_close(r["start_ns"], x["start_ns"], f"{r['name']} request")
        if x["end_ns"] is not None:
            assert_close(r["end_ns"], x["end_ns"], f"{r['name']} response")
        if x.get("operation"):
            assert r["attributes"].get("db.operation.name") == x["operation"], (r, x)
    ops = [(r["name"], r["error_type"]) for r in records]
    assert (
        ("SELEC", "42601") in ops and ("SELECT missing_table", "42P01") in ops and ("SELECT", "22012") in ops
    )
    assert ("SELECT", "pipeline_aborted") in ops and ("LOGIN", "28P01") in ops and ("COPY items", None) in ops
    assert ("UPDATE items", None) in ops and ops.count(("LOGIN", None)) == 4
    assert ("CANCEL", None) in ops and ("SELECT", "57014") in ops and ("LISTEN", None) in ops
    assert ops.count(("COPY items", None)) == 2 and ops.count(("SELECT items", None)) >= 4 + 2
    assert all(r["protocol"] == "postgres" and not r["degraded"] for r in records)
    assert {r["attributes"]["db.system.name"] for r in records} == {"postgresql"}
    text = pcap.with_suffix(".jsonl").read_text()
    assert PASSWORD not in text and LITERAL not in text
