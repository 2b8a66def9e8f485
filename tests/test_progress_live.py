"""Issue 12, live: the request that stopped all monitoring, sent to real servers under `l7scope run`.

`GET /ok` with `Content-Length: -1` once sent the pipeline into an endless loop: no record for any
connection afterwards, SIGTERM ignored. Now it is one parse error; the good requests after it, on
another connection and on the same one, are recorded; SIGTERM ends the process within 5 s.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.pipeline.progress_inputs import GET_OK, NEGATIVE_REQUEST
from tests.support.http_traffic import HttpTarget
from tests.support.l7scope_proc import L7scopeProcess, base_env
from tests.support.servers import nginx

pytestmark = pytest.mark.kernel


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send a request, read its whole response (head and Content-Length body)."""
    sock.sendall(request)
    sock.settimeout(5)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            length = int({k.strip().lower(): v for k, v in fields.items()}.get(b"content-length", b"0"))
            if len(body) >= length:
                break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    time.sleep(0.2)  # think time: a response is never mistaken for the next request's
    return data


def test_negative_content_length_is_one_parse_error_and_monitoring_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    with (
        nginx(tmp_path / "nginx") as port,
        HttpTarget() as keep_alive,
        L7scopeProcess("run", "--no-table", "--export", f"jsonl:{out}", env=base_env()) as proc,
    ):
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as first:  # nginx: 400, then it closes
            assert exchange(first, NEGATIVE_REQUEST).startswith(b"HTTP/1.1 400")
        with socket.create_connection(("127.0.0.1", port)) as other:  # another connection
            assert exchange(other, GET_OK).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", keep_alive.port)) as same:  # a server that keeps it
            exchange(same, NEGATIVE_REQUEST)
            assert exchange(same, GET_OK).startswith(b"HTTP/1.1 200")
            assert exchange(same, GET_OK).startswith(b"HTTP/1.1 200")
        servers = {f"127.0.0.1:{port}": 1, f"127.0.0.1:{keep_alive.port}": 2}

        def recorded() -> dict[str, int]:
            lines = out.read_text().splitlines() if out.exists() else []
            found = [json.loads(line) for line in lines]
            good = [r for r in found if r["role"] == "server" and r["name"] == "GET /ok"]
            good = [r for r in good if r["attributes"]["http.response.status_code"] == 200]
            return {s: sum(r["server"] == s for r in good) for s in servers}

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and recorded() != servers:
            time.sleep(0.25)
        assert recorded() == servers
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        rc = proc.wait(10)
        took = time.monotonic() - sent
        logs = [json.loads(line) for line in proc.text().splitlines() if line.startswith("{")]
    assert rc == 0 and took < 5.0, (rc, took)
    (summary,) = [line for line in logs if line["msg"].startswith("pipeline stopped")]
    assert summary["parse_errors"] >= 2  # the two malformed requests, at least from the servers' side
    assert summary["parser_stuck"] == 0
