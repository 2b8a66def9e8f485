"""HTTP/1.1 through `l7scope replay` against tshark: nginx + curl (keep-alive, HEAD, 404, POST, chunked both
ways) and a raw-socket client that pipelines several requests in one send."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.oracle import (
    Tcpdump,
    assert_close,
    client_port,
    needs_tools,
    replay,
    tshark_http1_exchanges,
)
from tests.support.servers import nginx as nginx_server

pytestmark = needs_tools

GZIP = "gzip on; gzip_min_length 0; gzip_types text/plain; default_type text/plain;"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nginx with gzip on, so a compressed response has no length and goes out chunked."""
    work = tmp_path_factory.mktemp("nginx")
    (work / "www").mkdir()
    (work / "www" / "text.txt").write_text("line of text\n" * 4000)
    with nginx_server(work, http_extra=GZIP) as port:
        yield port


def _curl(port: int, body: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    null = ["-o", "/dev/null"]
    subprocess.run(
        ["curl", "-sS", *null, f"{base}/ok", *null, f"{base}/missing", *null, f"{base}/www/none?x=1&y=2",
         "--next", "-sS", *null, "-d", "item=1", f"{base}/submit",
         "--next", "-sS", "-I", *null, f"{base}/ok",
         "--next", "-sS", *null, "--compressed", f"{base}/text.txt",
         "--next", "-sS", *null, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{body}",
         f"{base}/submit"],
        check=True, timeout=30,
    )  # fmt: skip


def _pipelined(port: int) -> bytes:
    """Four requests written with one send; the last asks to close so reading to EOF gets every answer.

    No HEAD here: tshark cannot tell a pipelined HEAD's response has no body and swallows what follows.
    """
    reqs = [
        b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /nothing/here HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /text.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(reqs))
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


def _ours(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in sorted(records, key=lambda r: r["start_ns"]):
        a = r["attributes"]
        uri = a["url.path"] + (f"?{a['url.query']}" if "url.query" in a else "")
        status = a.get("http.response.status_code")
        out.append({"method": a["http.request.method"], "uri": uri, "status": status,
                    "client": client_port(r),
                    "start_ns": r["start_ns"], "end_ns": r["end_ns"]})  # fmt: skip
    return out


def test_nginx_curl_and_pipelining_match_tshark(nginx: int, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"payload " * 5000)
    pcap = tmp_path / "http1.pcap"
    with Tcpdump(pcap, nginx):
        _curl(nginx, body)
        answer = _pipelined(nginx)
    assert answer.count(b"HTTP/1.1 ") == 4
    records = replay(pcap, tmp_path)
    ours, theirs = _ours(records), tshark_http1_exchanges(pcap, nginx)
    key = ("method", "uri", "status", "client")
    assert [tuple(x[k] for k in key) for x in ours] == [tuple(x[k] for k in key) for x in theirs]
    # What the traffic was, so an oracle that saw nothing cannot pass.
    got = [(x["method"], x["uri"], x["status"]) for x in ours]
    assert got == [
        ("GET", "/ok", 200), ("GET", "/missing", 404), ("GET", "/www/none?x=1&y=2", 404),
        ("POST", "/submit", 201), ("HEAD", "/ok", 200), ("GET", "/text.txt", 200), ("POST", "/submit", 201),
        ("GET", "/ok", 200), ("GET", "/nothing/here", 404),
        ("POST", "/submit", 201), ("GET", "/text.txt", 200),
    ]  # fmt: skip
    for x, y in zip(ours, theirs, strict=True):
        what = f"{x['method']} {x['uri']}"
        assert_close(x["start_ns"], y["start_ns"], f"{what} request")
        assert_close(x["end_ns"], y["end_ns"], f"{what} response")
    assert {r["role"] for r in records} == {"server"}
    assert all(r["server"] == f"127.0.0.1:{nginx}" and r["protocol"] == "http" for r in records)
    chunked = [r for r in records if r["attributes"]["url.path"] == "/text.txt"]
    assert all(
        r["attributes"].get("http.response.body.size", 0) > 0
        for r in chunked
        if r["attributes"]["http.request.method"] == "GET"
    )
