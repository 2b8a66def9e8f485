"""OpenSSL plaintext through uprobes: curl <-> nginx over HTTPS, Python ssl <-> Python ssl, and
`l7scope run` turning an HTTPS exchange into HTTP records. Ciphertext of those connections never
appears as payload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.capture import Capture
from probes.fragment import ConnEvent, Fragment, Io, Source
from protocols.base import Role
from tests.probes.capture_helpers import (
    Event,
    assert_contiguous,
    closes_of,
    collect,
    curl_version,
    fragments,
    free_port,
    stop,
    stream,
)
from tests.support.servers import curl_keepalive_three, nginx_https, self_signed_cert

pytestmark = pytest.mark.kernel

PEERS = Path(__file__).with_name("tls_peers.py")


def opened(events: list[Event]) -> list[ConnEvent]:
    return [e for e in events if isinstance(e, ConnEvent) and not e.closed]


def conn_on_port(events: list[Event], port: int, role: Role, pid: int | None = None) -> ConnEvent:
    found = [
        e for e in opened(events)
        if e.info.role == role and (e.info.local.port if role == Role.SERVER else e.info.remote.port) == port
        and (pid is None or e.info.pid == pid)
    ]  # fmt: skip
    assert len(found) == 1, f"expected one {role.name} connection on port {port}, got {found}"
    return found[0]


def closed_on_port(port: int, count: int):
    def done(events: list[Event]) -> bool:
        ports = [e.info.local.port for e in events if isinstance(e, ConnEvent) and e.closed]
        ports += [e.info.remote.port for e in events if isinstance(e, ConnEvent) and e.closed]
        return ports.count(port) >= count

    return done


def assert_plaintext_only(events: list[Event], conn_id: str, io: Io, expected: bytes) -> None:
    frags = fragments(events, conn_id, io)
    assert frags, (conn_id, io)
    assert {f.source for f in frags} == {Source.TLS}, "ciphertext leaked as a syscall payload"
    assert assert_contiguous(frags) == len(expected)
    assert stream(frags) == expected
    closes = closes_of(events, conn_id)
    assert len(closes) == 1
    assert (closes[0].send_bytes if io == Io.SEND else closes[0].recv_bytes) == len(expected)


def test_tls_libraries_probed(capture: Capture) -> None:
    assert any("libssl.so.3" in lib.path for lib in capture.tls.libraries)
    assert all({"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"} <= set(lib.symbols)
               for lib in capture.tls.libraries)  # fmt: skip


def test_curl_nginx_https_plaintext_both_sides(drained: Capture, tmp_path: Path) -> None:
    body = b"tls body\n" * 10
    with nginx_https(tmp_path / "ngx") as port:
        (tmp_path / "ngx" / "www" / "a.txt").write_bytes(body)
        url = f"https://127.0.0.1:{port}/a.txt"
        before = drained.stats()
        curl = subprocess.Popen(["curl", "-sk", "-i", "--http1.1", url, url], stdout=subprocess.PIPE)
        response, _ = curl.communicate(timeout=30)
        assert curl.returncode == 0
        events = collect(drained, 3.0, until=closed_on_port(port, 2))
    assert response.count(body) == 2
    request = (
        f"GET /a.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/{curl_version()}\r\n"
        "Accept: */*\r\n\r\n"
    ).encode() * 2
    server = conn_on_port(events, port, Role.SERVER).info
    client = conn_on_port(events, port, Role.CLIENT, pid=curl.pid).info
    assert server.process == "nginx" and client.process == "curl"
    assert_plaintext_only(events, server.conn_id, Io.RECV, request)
    assert_plaintext_only(events, server.conn_id, Io.SEND, response)
    assert_plaintext_only(events, client.conn_id, Io.SEND, request)
    assert_plaintext_only(events, client.conn_id, Io.RECV, response)
    after = drained.stats()
    assert after.tls_cipher_bytes > before.tls_cipher_bytes  # the handshake and records, counted only


def test_python_ssl_server_and_client(drained: Capture, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(PEERS), "server", str(cert), str(key), str(port)],
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        drained.poll()
        client = subprocess.run([sys.executable, str(PEERS), "client", str(port), "5"], capture_output=True,
                                timeout=30, check=True)  # fmt: skip
        events = collect(drained, 3.0, until=closed_on_port(port, 2))
    finally:
        stop(server)
    pings = b"".join(f"PING {i}\n".encode() for i in range(5))
    pongs = pings.replace(b"PING", b"PONG")
    assert client.stdout == pongs
    srv = conn_on_port(events, port, Role.SERVER, pid=server.pid).info
    cli = conn_on_port(events, port, Role.CLIENT).info
    assert_plaintext_only(events, srv.conn_id, Io.RECV, pings)
    assert_plaintext_only(events, srv.conn_id, Io.SEND, pongs)
    assert_plaintext_only(events, cli.conn_id, Io.SEND, pings)
    assert_plaintext_only(events, cli.conn_id, Io.RECV, pongs)
    # One fragment per SSL_write_ex/SSL_read_ex call: each ping arrives whole.
    assert [f.data for f in fragments(events, srv.conn_id, Io.RECV)] == [
        f"PING {i}\n".encode() for i in range(5)
    ]
    assert not [e for e in events if isinstance(e, Fragment) and e.conn_id in (srv.conn_id, cli.conn_id)
                and e.source != Source.TLS]  # fmt: skip


def test_l7scope_run_https_yields_http_records(tmp_path: Path) -> None:
    from tests.support.l7scope_proc import L7scopeProcess, base_env
    from tests.test_end_to_end import EXPECTED, by_role

    out = tmp_path / "records.jsonl"
    with (
        nginx_https(tmp_path / "ngx") as port,
        L7scopeProcess("run", "--export", f"jsonl:{out}", "--no-table", env=base_env()),
    ):
        curl_keepalive_three(port, scheme="https")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if out.exists() and sum(f":{port}" in line for line in out.read_text().splitlines()) >= 6:
                break
            time.sleep(0.25)
        time.sleep(0.5)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [r for r in records if r["server"] == f"127.0.0.1:{port}"]
    assert len(mine) == 6, mine
    found = by_role([
        (r["role"], r["attributes"]["http.request.method"], r["attributes"]["url.path"],
         r["attributes"]["http.response.status_code"])
        for r in mine
    ])  # fmt: skip
    assert found == {"server": EXPECTED, "client": EXPECTED}
    assert {r["attributes"]["url.scheme"] for r in mine} == {"https"}


def test_libssl_at_a_new_path_found_after_exec(drained: Capture, tmp_path: Path) -> None:
    """A process that maps a libssl file nobody mapped before: found through its exec, then traced."""
    system = next(lib.path for lib in drained.tls.libraries if "libssl.so.3" in lib.path)
    private = tmp_path / "lib"
    private.mkdir()
    shutil.copy(system, private / "libssl.so.3")
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(PEERS), "server", str(cert), str(key), str(port)],
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        drained.poll()
        env = dict(os.environ, LD_LIBRARY_PATH=str(private))
        client = subprocess.Popen([sys.executable, str(PEERS), "client", str(port), "2", "1.0"], env=env,
                                  stdout=subprocess.PIPE)  # fmt: skip
        events = collect(drained, 6.0, until=closed_on_port(port, 2))
        out, _ = client.communicate(timeout=10)
    finally:
        stop(server)
    assert out == b"PONG 0\nPONG 1\n"
    assert any(lib.path.endswith(f"{private}/libssl.so.3") for lib in drained.tls.libraries)
    cli = conn_on_port(events, port, Role.CLIENT, pid=client.pid).info
    assert_plaintext_only(events, cli.conn_id, Io.SEND, b"PING 0\nPING 1\n")
