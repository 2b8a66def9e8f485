"""Three tiers captured with eBPF: curl -> a Python HTTP service -> MariaDB (PyMySQL per request).

`l7scope run --export jsonl:F --map-out map.svg` records it; `l7scope map --from F` draws
curl -> python -> mariadbd with the right protocols, both connection halves joined on this node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.servers import app_user, mariadb
from tests.test_alerting_e2e import l7scope_run, stop
from tests.test_end_to_end import base_env

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("mariadbd"), reason="mariadbd not installed"),
]
PASSWORD = "tier-pass"

APP = """
import sys
import pymysql
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB_PORT, PASSWORD = int(sys.argv[1]), sys.argv[2]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        db = pymysql.connect(host="127.0.0.1", port=DB_PORT, user="app", password=PASSWORD, database="shop")
        with db.cursor() as c:
            c.execute("SELECT name FROM items WHERE id = 1")
            body = c.fetchone()[0].encode()
        db.close()
        self.send_response(200 if self.path == "/items" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
"""


@contextmanager
def app(work: Path, db_port: int) -> Iterator[tuple[int, int]]:
    (work / "app.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, str(work / "app.py"), str(db_port), PASSWORD], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid
    finally:
        stop(proc)


def test_three_tier_map(tmp_path: Path) -> None:
    records, map_out = tmp_path / "records.jsonl", tmp_path / "run-map.svg"
    env = base_env()
    tables = [
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64))",
        "INSERT INTO shop.items VALUES (1, 'apple')",
    ]
    with mariadb(tmp_path / "db", [*app_user(PASSWORD, grant="shop.*"), *tables]) as db_port:
        with (
            l7scope_run(env, "--export", f"jsonl:{records}", "--map-out", str(map_out)) as log,
            app(tmp_path, db_port) as (port, _pid),
        ):
            app_name = "app"  # `python .../app.py`: named by the program its command line runs
            for path in ("/items", "/items", "/items", "/missing"):
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}{path}"],
                               check=True, timeout=10)  # fmt: skip
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                text = records.read_text() if records.exists() else ""
                if text.count('"protocol":"mysql"') >= 8 and text.count(f"127.0.0.1:{port}") >= 8:
                    break
                time.sleep(0.25)
            time.sleep(0.5)
        assert map_out.exists(), "".join(log)
    out = subprocess.run(
        [sys.executable, "-m", "l7scope.cli", "map", "--from", str(records), "--format", "json"],
        capture_output=True, text=True, timeout=30, check=True, env=env,
    )  # fmt: skip
    edges = {(e["client"], e["server"]): e for e in json.loads(out.stdout)["edges"]}
    front, back = edges[("curl", app_name)], edges[(app_name, "mariadbd")]
    assert front["protocols"] == ["http"] and back["protocols"] == ["mysql"]
    assert front["requests"] == 4 and front["errors"] == 1  # both halves seen, counted once; one 404
    assert back["requests"] >= 4 and back["errors"] == 0  # at least one SELECT per request
    assert not any(c == "curl" and s.endswith(f":{port}") for c, s in edges)  # joined, not an address
    assert not any(s.endswith(f":{db_port}") for _, s in edges)
    svg = tmp_path / "map.svg"
    subprocess.run(
        [sys.executable, "-m", "l7scope.cli", "map", "--from", str(records), "-o", str(svg)],
        check=True, timeout=30, env=env,
    )  # fmt: skip
    texts = {t.text for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text")}
    assert {"curl", app_name, "mariadbd"} <= texts
    run_texts = {t.text for t in ET.parse(map_out).getroot().iter("{http://www.w3.org/2000/svg}text")}
    assert {"curl", app_name, "mariadbd"} <= run_texts  # `run --map-out` drew the same services at exit
    subprocess.run(["rsvg-convert", "-o", str(tmp_path / "map.png"), str(svg)], check=True, timeout=30)
    assert (tmp_path / "map.png").stat().st_size > 1000  # the picture renders (beside the test's tmp files)
