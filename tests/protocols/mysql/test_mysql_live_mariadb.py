"""Real traffic: MariaDB on loopback, PyMySQL and mysql-connector clients, captured with tcpdump."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import pcap_segments, records, replay, tshark_commands

from tests.support.servers import app_user
from tests.support.servers import mariadb as mariadb_server

pymysql = pytest.importorskip("pymysql")
mysql_connector = pytest.importorskip("mysql.connector")

PASSWORD = "Pw-s3cret-4711"
LITERAL_SECRET = "hunter2-literal"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not (shutil.which("mariadbd") and shutil.which("tcpdump")), reason="mariadbd / tcpdump not installed"
    ),
]


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tables = [
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64), body LONGTEXT)",
        "INSERT INTO shop.items VALUES (1, 'apple', 'a'), (2, 'pear', 'b'), (3, 'fig', 'c')",
    ]
    with mariadb_server(tmp_path_factory.mktemp("mariadb"), [*app_user(PASSWORD), *tables]) as port:
        yield port


class Capture:
    """tcpdump on lo for one port: started before the traffic, stopped with SIGINT after."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [
                "tcpdump",
                "-i",
                "lo",
                "-U",
                "-s",
                "0",
                "-B",
                "32768",
                "--immediate-mode",
                "-w",
                str(path),
                f"tcp port {port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        deadline = time.monotonic() + 10
        seen = b""
        while b"listening on" not in seen:  # tcpdump says so once the capture is attached
            assert time.monotonic() < deadline, "tcpdump did not start"
            seen += self.proc.stderr.read() or b""
            time.sleep(0.02)

    def stop(self) -> None:
        # tcpdump drops what it has not written yet on SIGINT: wait until the file stops growing.
        deadline, size, still = time.monotonic() + 15, -1, 0
        while still < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.path.stat().st_size if self.path.exists() else 0
            still, size = (still + 1, size) if now == size else (0, now)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), True)
        report = self.proc.stderr.read().decode()
        assert "\n0 packets dropped by kernel" in report, report


def _connections(path: Path, port: int) -> list[list]:
    by_client = pcap_segments(path, port)
    return [by_client[k] for k in sorted(by_client, key=lambda c: by_client[c][0][0])]


def test_pymysql_text_protocol(mariadb: int, tmp_path: Path) -> None:
    cap = Capture(tmp_path / "text.pcap", mariadb)
    try:
        conn = pymysql.connect(host="127.0.0.1", port=mariadb, user="app", password=PASSWORD, database="shop")
        with conn.cursor() as c:
            c.execute("SELECT id, name FROM items WHERE name = %s", ("apple",))
            assert c.fetchall() == ((1, "apple"),)
            with pytest.raises(pymysql.err.ProgrammingError):
                c.execute("SELEC broken FROM nowhere")
            c.execute("USE mysql")
            c.execute(f"UPDATE shop.items SET name = '{LITERAL_SECRET}' WHERE id = 3")
            c.execute("SELECT * FROM shop.items")
            assert len(c.fetchall()) == 3
            c.execute("SELECT REPEAT('x', 1048576) AS big")
            assert len(c.fetchone()[0]) == 1 << 20
        conn.ping()
        conn.select_db("shop")
        conn.close()
        with pytest.raises(pymysql.err.OperationalError):
            pymysql.connect(host="127.0.0.1", port=mariadb, user="app", password="wrong-password")
    finally:
        cap.stop()
    conns = _connections(cap.path, mariadb)
    assert len(conns) == 2
    loop = replay(conns[0])
    assert loop.errors == []
    assert loop.state.server_version.startswith("5.5.5-") and "MariaDB" in loop.state.server_version
    recs = records(loop.exchanges)
    ops = [
        (r.attributes.get("db.operation.name"), r.attributes.get("db.namespace"), r.error_type) for r in recs
    ]
    assert ops == [
        ("LOGIN", "shop", None),
        ("SET", "shop", None),  # PyMySQL's session set-up: SET NAMES, SET AUTOCOMMIT
        ("SET", "shop", None),
        ("SELECT", "shop", None),
        ("SELEC", "shop", "1064"),
        ("USE", "mysql", None),
        ("UPDATE", "mysql", None),
        ("SELECT", "mysql", None),
        ("SELECT", "mysql", None),
        ("PING", "mysql", None),
        ("INIT_DB", "shop", None),
        ("QUIT", "shop", None),
    ]
    by_text = {r.attributes.get("db.query.text"): r for r in recs}
    sel = by_text["SELECT id, name FROM items WHERE name = ?"]
    assert sel.name == "SELECT items" and sel.attributes["db.response.returned_rows"] == 1
    assert sel.attributes["db.collection.name"] == "items"
    bad = by_text["SELEC broken FROM nowhere"]
    assert bad.attributes["db.response.status_code"] == "1064" and bad.error_type == "1064"
    assert by_text["UPDATE shop.items SET name = ? WHERE id = ?"].name == "UPDATE shop.items"
    assert by_text["SELECT * FROM shop.items"].attributes["db.response.returned_rows"] == 3
    big = by_text["SELECT REPEAT(?, ?) AS big"]
    assert big.attributes["db.response.returned_rows"] == 1
    assert big.end_ns > big.start_ns
    assert not any(r.degraded for r in recs)
    dump = repr(recs) + repr(loop.exchanges) + repr(loop.state)
    assert PASSWORD not in dump and LITERAL_SECRET not in dump
    # Frames stay small even for the 1 MiB row.
    assert all(len(t.frame.data) <= 4200 for q in loop.queues.values() for t in q)
    # The failed login: an exchange carrying MariaDB's access-denied code.
    commands, errors = tshark_commands(cap.path, mariadb)
    assert [x.command for x in loop.exchanges][1:] == commands
    assert errors == [1064, 1045]
    failed = records(replay(conns[1]).exchanges)
    assert [(r.name, r.error_type) for r in failed] == [("LOGIN", "1045")]


def test_connector_prepared_statements(mariadb: int, tmp_path: Path) -> None:
    cap = Capture(tmp_path / "binary.pcap", mariadb)
    try:
        conn = mysql_connector.connect(
            host="127.0.0.1", port=mariadb, user="app", password=PASSWORD, database="shop", use_pure=True
        )
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, name FROM items WHERE id > ?", (1,))
        assert len(cur.fetchall()) == 2
        cur.execute("INSERT INTO items (id, name, body) VALUES (?, ?, ?)", (10, "kiwi", "k"))
        conn.commit()
        cur.execute("SELECT body FROM items WHERE id = ?", (10,))
        cur.fetchall()
        cur.close()
        conn.close()
    finally:
        cap.stop()
    (segments,) = _connections(cap.path, mariadb)
    loop = replay(segments)
    assert loop.errors == []
    recs = records(loop.exchanges)
    names = [r.name for r in recs]
    assert names[0] == "LOGIN"
    # Each statement: PREPARE, RESET, EXECUTE (named by the prepared SQL), CLOSE.
    sel = [r for r in recs if r.attributes.get("db.query.text") == "SELECT id, name FROM items WHERE id > ?"]
    assert [r.name for r in sel] == ["PREPARE items", "RESET items", "SELECT items", "CLOSE items"]
    assert sel[2].attributes["db.response.returned_rows"] == 2
    ins = [r for r in recs if r.attributes.get("db.query.text", "").startswith("INSERT INTO items")]
    assert [r.name for r in ins] == ["PREPARE items", "RESET items", "INSERT items", "CLOSE items"]
    assert [x.command for x in loop.exchanges][1:] == tshark_commands(cap.path, mariadb)[0]
    assert "COMMIT" in [r.attributes.get("db.operation.name") for r in recs]
    closes = [x for x in loop.exchanges if x.operation == "CLOSE"]
    assert closes and all(not x.degraded for x in closes)
    assert loop.state.stmts == {}  # every statement was closed
    assert not any(r.degraded for r in recs)
    assert PASSWORD not in repr(recs) + repr(loop.exchanges)
