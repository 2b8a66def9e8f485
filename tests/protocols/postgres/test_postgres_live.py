"""Live: `l7scope run` (real eBPF) capturing PostgreSQL 15 with psycopg (simple, extended, pipeline
mode), asyncpg and pgbench on loopback. Client and server are both traced: every exchange exactly once
per side, with the right operation and error."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.l7scope_proc import L7scopeProcess, base_env
from tests.support.servers import PG_BIN, pg_users, postgres

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not (PG_BIN / "postgres").exists(), reason="no PostgreSQL 15"),
]
PASSWORD = "Pw-live-pg-4711"
LITERAL = "hunter2-literal"
TRANSACTIONS, CLIENTS = 20, 2


@pytest.fixture(scope="module")
def pg() -> Iterator[int]:
    with postgres(pg_users(PASSWORD)) as (port, sock):
        subprocess.run(
            [str(PG_BIN / "pgbench"), "-i", "-s", "1", "-q", "-h", str(sock), "-p", str(port),
             "-U", "postgres", "shop"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield port


def _records(out: Path, port: int, n: int) -> list[dict]:
    deadline = time.monotonic() + 60
    mine: list[dict] = []
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        mine = [r for r in map(json.loads, lines) if r["server"] == f"127.0.0.1:{port}"]
        if len(mine) >= n:
            break
        time.sleep(0.5)
    time.sleep(1.5)  # duplicates would arrive now
    lines = out.read_text().splitlines() if out.exists() else []
    return [r for r in map(json.loads, lines) if r["server"] == f"127.0.0.1:{port}"]


def _clients(port: int) -> None:
    dsn = {"host": "127.0.0.1", "port": port, "user": "app", "password": PASSWORD, "dbname": "shop"}
    with psycopg.connect(**dsn, autocommit=True) as c:
        c.execute(f"SELECT bid FROM pgbench_branches WHERE filler = '{LITERAL}'")
        c.execute("SELECT bid FROM pgbench_branches WHERE bid = %s", (1,))
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM missing_table")
        big = c.execute("SELECT repeat('x', 12582912) AS big").fetchone()  # one 12 MiB DataRow
        assert big is not None and len(big[0]) == 12 << 20
        with c.pipeline():
            for i in range(5):
                c.execute("SELECT tid FROM pgbench_tellers WHERE tid = %s", (i + 1,))

    async def run() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="app", password=PASSWORD, database="shop"
        )
        for i in range(3):
            await conn.fetch("SELECT aid FROM pgbench_accounts WHERE aid = $1", i + 1)
        await conn.close()

    asyncio.run(run())


def test_psycopg_asyncpg_pgbench_each_exchange_once_per_side(pg: int, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    env = base_env(L7SCOPE_CAPTURE_ONLY_PORTS=str(pg))
    bench_env = os.environ | {"PGPASSWORD": PASSWORD}
    map_out = tmp_path / "map.json"
    dsn = {"host": "127.0.0.1", "port": pg, "user": "app", "password": PASSWORD, "dbname": "shop"}
    early = psycopg.connect(**dsn, autocommit=True)  # open before the agent: recognised mid-stream
    early.execute("SELECT 1")
    args = ("-v", "run", "--no-table", "--export", f"jsonl:{out}", "--map-out", str(map_out))
    with L7scopeProcess(*args, env=env) as run:  # -v: no secret in the log at any verbosity
        time.sleep(0.5)
        with psycopg.connect(**dsn | {"user": "md5user"}, autocommit=True) as md5:  # an md5 password
            md5.execute("SELECT 1")
        early.execute("SELECT count(*) FROM pgbench_history")
        for _ in range(2):
            early.execute("SELECT count(*) FROM pgbench_history WHERE tid > %s", (0,))
        early.close()
        _clients(pg)
        subprocess.run(
            [str(PG_BIN / "pgbench"), "-n", "-t", str(TRANSACTIONS), "-c", str(CLIENTS), "-h", "127.0.0.1",
             "-p", str(pg), "-U", "app", "shop"],
            check=True, capture_output=True, timeout=120, env=bench_env,
        )  # fmt: skip
        per_side = 3 + 5 + 5 + 3 + 7 * TRANSACTIONS * CLIENTS
        records = _records(out, pg, 2 * per_side)
    by_side = {side: [r for r in records if r["role"] == side] for side in ("client", "server")}
    for side, recs in by_side.items():
        names = Counter((r["name"], r["error_type"]) for r in recs)
        assert names[("UPDATE pgbench_accounts", None)] == TRANSACTIONS * CLIENTS, (side, names)
        assert names[("UPDATE pgbench_tellers", None)] == TRANSACTIONS * CLIENTS, (side, names)
        assert names[("INSERT pgbench_history", None)] == TRANSACTIONS * CLIENTS, (side, names)
        assert names[("SELECT pgbench_accounts", None)] == TRANSACTIONS * CLIENTS + 3, (side, names)
        assert names[("SELECT pgbench_tellers", None)] == 5, (side, names)
        # two here, and pgbench's own "select count(*) from pgbench_branches" (the scale) at its start
        assert names[("SELECT pgbench_branches", None)] == 3, (side, names)
        assert names[("SELECT missing_table", "42P01")] == 1, (side, names)
        assert (
            names[("BEGIN", None)] == TRANSACTIONS * CLIENTS
            and names[("END", None)] == TRANSACTIONS * CLIENTS
        )
        assert names[("SELECT pgbench_history", None)] == 3, (side, names)  # the connection already open
        (big,) = [r for r in recs if r["attributes"].get("db.query.text") == "SELECT repeat(?, ?) AS big"]
        assert big["attributes"]["db.response.returned_rows"] == 1 and big["error_type"] is None
        ids = [r["record_id"] for r in recs]
        assert len(ids) == len(set(ids)), side  # none twice
        assert all(r["protocol"] == "postgres" for r in recs)
    edges = [e for e in json.loads(map_out.read_text())["edges"] if "postgres" in e["protocols"]]
    assert edges and all(e["server"] == "postgres" for e in edges), edges
    assert sum(e["requests"] for e in edges) >= 7 * TRANSACTIONS * CLIENTS
    text = out.read_text()
    assert PASSWORD not in text and LITERAL not in text
    assert PASSWORD not in run.text() and LITERAL not in run.text()
    assert any(r["attributes"].get("db.operation.name") == "LOGIN" for r in by_side["server"])


def test_tls_plaintext_from_the_tls_probes(tmp_path: Path) -> None:
    """SSLRequest answered `S`: the socket then carries TLS records, the plaintext comes through the
    OpenSSL uprobes and starts with the StartupMessage. psql (the system libpq and libssl) and the server
    are traced through them; psycopg's wheel bundles its own libssl, so only its server side is."""
    out = tmp_path / "records.jsonl"
    with postgres(pg_users(PASSWORD), tls=True) as (port, _sock):
        env = base_env(L7SCOPE_CAPTURE_ONLY_PORTS=str(port))
        with L7scopeProcess("run", "--no-table", "--export", f"jsonl:{out}", env=env):
            time.sleep(0.5)
            dsn = {"host": "127.0.0.1", "port": port, "user": "app", "password": PASSWORD, "dbname": "shop"}
            with psycopg.connect(**dsn, sslmode="require", autocommit=True) as c:
                assert c.pgconn.ssl_in_use
                c.execute(f"SELECT '{LITERAL}' AS secret")
                with pytest.raises(psycopg.errors.UndefinedTable):
                    c.execute("SELECT * FROM missing_table")

            subprocess.run(  # psql: the system libpq and libssl, probed on the client side too
                [str(PG_BIN / "psql"), "-X", "-A", "-t", "-c", "SELECT 7 AS n",
                 f"host=127.0.0.1 port={port} user=app dbname=shop sslmode=require"],
                check=True, capture_output=True, timeout=30, env=os.environ | {"PGPASSWORD": PASSWORD},
            )  # fmt: skip
            records = _records(out, port, 7)
    got = Counter((r["role"], r["name"], r["error_type"]) for r in records)
    assert got[("server", "LOGIN", None)] == 2 and got[("client", "LOGIN", None)] == 1, got
    assert got[("server", "SELECT", None)] == 2 and got[("client", "SELECT", None)] == 1, got
    assert got[("server", "SELECT missing_table", "42P01")] == 1, got
    assert all(not r["degraded"] for r in records)
    text = out.read_text()
    assert PASSWORD not in text and LITERAL not in text
