"""MySQL through `l7scope replay` against tshark: MariaDB with PyMySQL text queries (an error, a ~1 MB
result) and mysql-connector-python prepared statements, plus a failed login."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.oracle import (
    Tcpdump,
    assert_close,
    client_port,
    needs_tools,
    replay,
    tshark_mysql_exchanges,
)
from tests.support.servers import app_user
from tests.support.servers import mariadb as mariadb_server

pymysql = pytest.importorskip("pymysql")
mysql_connector = pytest.importorskip("mysql.connector")

pytestmark = [needs_tools, pytest.mark.skipif(not shutil.which("mariadbd"), reason="mariadbd not installed")]
PASSWORD = "conf-Pw-81"


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tables = [
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64))",
        "INSERT INTO shop.items VALUES (1, 'apple'), (2, 'pear'), (3, 'fig')",
    ]
    with mariadb_server(tmp_path_factory.mktemp("mariadb"), [*app_user(PASSWORD), *tables]) as port:
        yield port


def _traffic(port: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password=PASSWORD, database="shop")
    with conn.cursor() as c:
        c.execute("SELECT id, name FROM items WHERE name = %s", ("apple",))
        with pytest.raises(pymysql.err.ProgrammingError):
            c.execute("SELEC nothing FROM nowhere")
        with pytest.raises(pymysql.err.ProgrammingError):
            c.execute("SELECT * FROM missing_table")
        c.execute("UPDATE items SET name = 'plum' WHERE id = 3")
        c.execute("SELECT REPEAT('x', 1048576) AS big")
        assert len(c.fetchone()[0]) == 1 << 20
    conn.ping()
    conn.select_db("mysql")
    conn.close()
    cx = mysql_connector.connect(
        host="127.0.0.1", port=port, user="app", password=PASSWORD, database="shop", use_pure=True
    )
    cur = cx.cursor(prepared=True)
    cur.execute("SELECT id, name FROM items WHERE id > ?", (1,))
    assert len(cur.fetchall()) == 2
    cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (10, "kiwi"))
    with pytest.raises(mysql_connector.Error):
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (10, "dup"))  # duplicate key: 1062
    cx.commit()
    cur.close()
    cx.close()
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=port, user="app", password="wrong")


def _matches_redacted(ours: str, theirs: str) -> bool:
    """Our SQL has literals replaced by "?": everything else must be tshark's text, verbatim."""
    pattern = ".+?".join(re.escape(part) for part in ours.split("?"))
    return re.fullmatch(pattern, theirs, re.S) is not None


def test_mariadb_text_and_prepared_match_tshark(mariadb: int, tmp_path: Path) -> None:
    pcap = tmp_path / "mysql.pcap"
    with Tcpdump(pcap, mariadb):
        _traffic(mariadb)
    records = replay(pcap, tmp_path)
    theirs = tshark_mysql_exchanges(pcap, mariadb)
    ours = sorted(records, key=lambda r: r["start_ns"])
    assert [(client_port(r), r["attributes"].get("db.operation.name"), r["error_type"]) for r in ours] == [
        (x["client"], x["operation"], x["error"]) for x in theirs
    ]
    for r, x in zip(ours, theirs, strict=True):
        text = r["attributes"].get("db.query.text")
        if x["query"]:
            assert text and _matches_redacted(text, x["query"]), (text, x["query"])
        assert_close(r["start_ns"], x["start_ns"], f"{r['name']} request")
        if x["end_ns"] is not None:  # QUIT and STMT_CLOSE have no answer
            assert_close(r["end_ns"], x["end_ns"], f"{r['name']} response")
    # What the traffic was, so an oracle that saw nothing cannot pass.
    ops = [(r["name"], r["error_type"]) for r in ours]
    assert ("SELEC", "1064") in ops and ("SELECT missing_table", "1146") in ops
    assert ("INSERT items", "1062") in ops and ("LOGIN", "1045") in ops
    assert {"PREPARE items", "RESET items", "CLOSE items", "PING", "INIT_DB", "QUIT"} <= {n for n, _ in ops}
    big = next(r for r in ours if r["attributes"].get("db.query.text") == "SELECT REPEAT(?, ?) AS big")
    assert big["attributes"]["db.response.returned_rows"] == 1
    assert all(r["role"] == "server" and r["protocol"] == "mysql" and not r["degraded"] for r in ours)
