"""Real traffic: curl against a Python HTTP/1.1 server on 127.0.0.1, recorded with tcpdump, parsed back."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dpkt
import pytest

from protocols.base import ConnInfo, Direction, Endpoint, Role
from protocols.http1 import SPEC
from tests.support.http_server import HttpServer, Reply, Request


def demo(request: Request) -> Reply:
    """Plain, HEAD, chunked with a trailer, an upload (after 100 Continue) and a 404."""
    plain = (("Content-Type", "text/plain"), ("Set-Cookie", "sid=topsecret"))
    if request.method == "POST":
        return Reply(201, b"got %d\n" % len(request.body), plain)
    if request.method == "HEAD" or request.path.startswith("/plain"):
        return Reply(200, b"hello world\n", plain)  # HEAD: the headers only
    if request.path == "/chunked":
        return Reply(200, headers=(("Trailer", "X-Checksum"),), chunks=(b"first,", b"second,", b"third"),
                     trailers=(("X-Checksum", "42"),))  # fmt: skip
    return Reply(404, b"no such thing\n", plain)


# (method, path, status, response body size) in the order curl sends them, on one keep-alive connection.
EXPECTED = [
    ("GET", "/plain?x=1", 200, 12),
    ("HEAD", "/plain", 200, 0),
    ("GET", "/chunked", 200, 18),
    ("POST", "/upload", 201, 9),  # the server answers Expect: 100-continue first
    ("GET", "/missing/123", 404, 14),
]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not shutil.which("tcpdump") or not shutil.which("curl"), reason="needs tools"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc: subprocess.Popen, stream, needle: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if needle in line:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited before {needle!r}")
    raise TimeoutError(needle)


def payloads(pcap: Path, port: int) -> dict[tuple[int, str], bytes]:
    """Client port -> ("request"/"response") -> concatenated TCP payload (loopback: in order)."""
    out: dict[tuple[int, str], bytes] = {}
    with pcap.open("rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(frame).data
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
                continue
            key = (tcp.sport, "request") if tcp.dport == port else (tcp.dport, "response")
            out[key] = out.get(key, b"") + bytes(tcp.data)
    return out


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[dict[tuple[int, str], bytes], int]:
    port = free_port()
    pcap = tmp_path / "lo.pcap"
    server = HttpServer(demo, port, threaded=False).start()
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-n", "-w", str(pcap), f"tcp port {port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_line(dump, dump.stderr, "listening on")
        base = f"http://127.0.0.1:{port}"
        upload = tmp_path / "upload.bin"
        upload.write_bytes(b"u" * 2000)
        quiet = ["-s", "-o", "/dev/null", "--http1.1"]
        cmd = ["curl", *quiet, f"{base}/plain?x=1", "--next", *quiet, "-I", f"{base}/plain",
               "--next", *quiet, f"{base}/chunked", "--next", *quiet, "--data-binary", f"@{upload}",
               "-H", "Authorization: Bearer topsecret", "-H", "Expect: 100-continue", f"{base}/upload",
               "--next", *quiet, f"{base}/missing/123"]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=20)
        time.sleep(0.3)  # let tcpdump write the last packets
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        server.close()
    return payloads(pcap, port), port


def test_curl_exchanges_found(recorded, make_loop) -> None:
    streams, port = recorded
    clients = sorted({client for client, _ in streams})
    assert len(clients) == 1, "curl should reuse one keep-alive connection"
    client = clients[0]
    loop = make_loop()
    loop.feed(Direction.REQUEST, streams[(client, "request")])
    loop.feed(Direction.RESPONSE, streams[(client, "response")])
    exchanges = loop.run(eof=True)
    assert not loop.errors
    found = [
        (x.request.frame.method, x.request.frame.target, x.response.frame.status, x.response.frame.body_size)
        for x in exchanges
    ]
    assert found == EXPECTED
    upload = exchanges[3]
    assert upload.request.frame.expect_continue and upload.interim == (100,)
    assert upload.request.frame.body_size == 2000
    assert exchanges[2].response.frame.chunked
    assert exchanges[2].response.frame.trailers == (("x-checksum", "42"),)
    conn = ConnInfo("lo/1", Endpoint("127.0.0.1", port), Endpoint("127.0.0.1", client), Role.SERVER)
    records = [SPEC.to_record(x, conn) for x in exchanges]
    assert [r.name for r in records] == ["GET /plain", "HEAD /plain", "GET /chunked", "POST /upload",
                                         "GET /missing/{id}"]  # fmt: skip
    assert all(r.attributes["user_agent.original"].startswith("curl/") for r in records)
    assert all(r.attributes["server.address"] == "127.0.0.1" and r.attributes["server.port"] == port
               for r in records)  # fmt: skip
    assert "topsecret" not in repr(records)
