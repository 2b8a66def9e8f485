"""Three tiers captured with eBPF: curl -> a Python HTTP service -> MariaDB (PyMySQL per request).

`l7scope run --export jsonl:F --map-out map.svg` records it; `l7scope map --from F` draws
curl -> python -> mariadbd with the right protocols, both connection halves joined on this node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.http_server import App, Reply, Request, child_http_server, service_of
from tests.support.l7scope_proc import L7scopeProcess, base_env, run_l7scope
from tests.support.servers import app_user, mariadb

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("mariadbd"), reason="mariadbd not installed"),
]
PASSWORD = "tier-pass"


def shop(db_port: str, password: str) -> App:
    """The middle tier (served by a child process): each GET reads MariaDB, /items answers 200, else 404."""
    import pymysql

    def app(request: Request) -> Reply:
        db = pymysql.connect(
            host="127.0.0.1", port=int(db_port), user="app", password=password, database="shop"
        )
        with db.cursor() as c:
            c.execute("SELECT name FROM items WHERE id = 1")
            row = c.fetchone()
        db.close()
        return Reply(200 if request.path == "/items" else 404, row[0].encode())

    return app


APP = "tests.pipeline.test_topology_three_tier:shop"


def test_three_tier_map(tmp_path: Path) -> None:
    records, map_out = tmp_path / "records.jsonl", tmp_path / "run-map.svg"
    env = base_env()
    args = ("run", "--no-table", "--export", f"jsonl:{records}", "--map-out", str(map_out))
    tables = [
        "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64))",
        "INSERT INTO shop.items VALUES (1, 'apple')",
    ]
    with mariadb(tmp_path / "db", [*app_user(PASSWORD, grant="shop.*"), *tables]) as db_port:
        with (
            L7scopeProcess(*args, env=env, ready_timeout_s=40) as run,
            child_http_server(APP, str(db_port), PASSWORD) as (port, _pid),
        ):
            app_name = service_of(APP)  # the service names itself
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
        assert map_out.exists(), run.text()
    out = run_l7scope("map", "--from", str(records), "--format", "json", env=env, timeout_s=30, check=True)
    edges = {(e["client"], e["server"]): e for e in json.loads(out.stdout)["edges"]}
    front, back = edges[("curl", app_name)], edges[(app_name, "mariadbd")]
    assert front["protocols"] == ["http"] and back["protocols"] == ["mysql"]
    assert front["requests"] == 4 and front["errors"] == 1  # both halves seen, counted once; one 404
    assert back["requests"] >= 4 and back["errors"] == 0  # at least one SELECT per request
    assert not any(c == "curl" and s.endswith(f":{port}") for c, s in edges)  # joined, not an address
    assert not any(s.endswith(f":{db_port}") for _, s in edges)
    svg = tmp_path / "map.svg"
    run_l7scope("map", "--from", str(records), "-o", str(svg), env=env, timeout_s=30, check=True)
    texts = {t.text for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text")}
    assert {"curl", app_name, "mariadbd"} <= texts
    run_texts = {t.text for t in ET.parse(map_out).getroot().iter("{http://www.w3.org/2000/svg}text")}
    assert {"curl", app_name, "mariadbd"} <= run_texts  # `run --map-out` drew the same services at exit
    subprocess.run(["rsvg-convert", "-o", str(tmp_path / "map.png"), str(svg)], check=True, timeout=30)
    assert (tmp_path / "map.png").stat().st_size > 1000  # the picture renders (beside the test's tmp files)
