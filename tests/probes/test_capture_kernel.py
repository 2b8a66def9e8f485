"""The socket tracer loaded into this kernel, against real servers and clients on loopback."""

from __future__ import annotations

import ctypes
import hashlib
import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from probes.capture import EVENT_HEADER, EVENT_LAYOUT, Capture
from probes.fragment import ConnEvent, Io, Source
from protocols.base import Endpoint, Role
from tests.probes.capture_helpers import (
    Event,
    assert_contiguous,
    closes_of,
    collect,
    conns_of,
    curl_version,
    fragments,
    nginx_server,
    python_http_server,
    run_curl,
    stop,
    stream,
)

pytestmark = pytest.mark.kernel

BODY = b"hello from l7scope\n" * 20


def curl_request(path: str, port: int, host: str = "127.0.0.1") -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: curl/{curl_version()}\r\n"
        "Accept: */*\r\n\r\n"
    ).encode()


@dataclass
class Exchange:
    """What one curl run against one server produced, as captured."""

    events: list[Event]
    client_pid: int
    server_pid: int
    port: int
    response: bytes  # curl's own view (-i): headers + bodies, exactly as received
    wall_ns: tuple[int, int]  # time.time_ns() before curl started and after the events were collected


def one_conn(events: list[Event], pid: int) -> ConnEvent:
    conns = conns_of(events, pid)
    assert len(conns) == 1, f"expected one connection for pid {pid}, got {list(conns)}"
    return next(iter(conns.values()))


def both_closed(client_pid: int, server_pid: int):
    def done(events: list[Event]) -> bool:
        closed = {e.info.pid for e in events if isinstance(e, ConnEvent) and e.closed}
        return {client_pid, server_pid} <= closed

    return done


@pytest.fixture(scope="module")
def python_exchange(capture: Capture, tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_bytes(BODY)
    server, port = python_http_server(root)
    try:
        capture.poll()
        url = f"http://127.0.0.1:{port}/hello.txt"
        before = time.time_ns()
        client_pid, response = run_curl("-i", url, url, url)
        events = collect(capture, 1.5, until=both_closed(client_pid, server.pid))
        after = time.time_ns()
    finally:
        stop(server)
    return Exchange(events, client_pid, server.pid, port, response, (before, after))


def test_event_times_are_wall_clock(python_exchange: Exchange) -> None:
    """Unix epoch ns (not the kernel's boot-relative clock): spans and records elsewhere mean the same."""
    ex = python_exchange
    before, after = ex.wall_ns
    mine = set(conns_of(ex.events, ex.client_pid)) | set(conns_of(ex.events, ex.server_pid))
    ids = [(e.info.conn_id if isinstance(e, ConnEvent) else e.conn_id, e.ts_ns) for e in ex.events]
    times = [ts for conn_id, ts in ids if conn_id in mine]
    assert times and all(before - 10**7 <= t <= after for t in times), (before, after, times)


def test_event_header_mirror_matches_events_h(capture: Capture) -> None:
    # bcc builds a ctypes type from the compiled C struct: compare offsets and sizes field by field.
    per_cpu = capture._bpf[b"l7_scratch_buf"].Leaf  # one struct l7_scratch per CPU
    hdr_type = dict(per_cpu._type_._fields_)["hdr"]
    assert ctypes.sizeof(hdr_type) == EVENT_HEADER.size
    offset = 0
    for name, code in EVENT_LAYOUT:
        size = struct.calcsize("<" + code)
        assert getattr(hdr_type, name).offset == offset, name
        assert getattr(hdr_type, name).size == size, name
        offset += size


def test_client_and_server_sides_have_roles_and_tuples(python_exchange: Exchange) -> None:
    ex = python_exchange
    client = one_conn(ex.events, ex.client_pid).info
    server = one_conn(ex.events, ex.server_pid).info
    assert client.role == Role.CLIENT and server.role == Role.SERVER
    assert client.remote == Endpoint("127.0.0.1", ex.port)
    assert server.local == Endpoint("127.0.0.1", ex.port)
    assert client.local == server.remote and client.local.port not in (0, ex.port)
    assert client.process == "curl" and server.process.startswith("python")
    node, pid, fd, generation = client.conn_id.split("/")
    assert (node, pid) == ("test", str(ex.client_pid)) and int(fd) >= 0 and int(generation) > 0


def test_keepalive_bytes_exact_and_contiguous(python_exchange: Exchange) -> None:
    ex = python_exchange
    client = one_conn(ex.events, ex.client_pid).info.conn_id
    server = one_conn(ex.events, ex.server_pid).info.conn_id
    request = curl_request("/hello.txt", ex.port) * 3
    for conn_id, io, expected in (
        (client, Io.SEND, request),
        (server, Io.RECV, request),
        (server, Io.SEND, ex.response),
        (client, Io.RECV, ex.response),
    ):
        frags = fragments(ex.events, conn_id, io)
        assert assert_contiguous(frags) == len(expected), (conn_id, io)
        assert stream(frags) == expected, (conn_id, io)
    assert ex.response.count(BODY) == 3


def test_connection_event_precedes_its_fragments(python_exchange: Exchange) -> None:
    # Only this test's processes: other traffic on the machine may have been announced in an earlier poll.
    ours = {f"/{python_exchange.client_pid}/", f"/{python_exchange.server_pid}/"}
    seen: set[str] = set()
    checked = 0
    for event in python_exchange.events:
        if isinstance(event, ConnEvent):
            seen.add(event.info.conn_id)
        elif any(p in event.conn_id for p in ours):
            assert event.conn_id in seen
            checked += 1
    assert checked >= 4


def test_close_events_carry_final_counts(python_exchange: Exchange) -> None:
    ex = python_exchange
    request_len = len(curl_request("/hello.txt", ex.port)) * 3
    for pid, sent, received in (
        (ex.client_pid, request_len, len(ex.response)),
        (ex.server_pid, len(ex.response), request_len),
    ):
        conn_id = one_conn(ex.events, pid).info.conn_id
        closes = closes_of(ex.events, conn_id)
        assert len(closes) == 1, conn_id
        assert (closes[0].send_bytes, closes[0].recv_bytes) == (sent, received)
        last = max(i for i, e in enumerate(ex.events) if getattr(e, "conn_id", None) == conn_id)
        assert ex.events.index(closes[0]) > last, "CLOSE must follow the connection's fragments"


def test_agent_own_pid_is_excluded(drained: Capture, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_bytes(BODY)
    server, port = python_http_server(tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"GET /x.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            our_port = s.getsockname()[1]
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        events = collect(
            drained,
            1.0,
            until=lambda ev: any(
                isinstance(e, ConnEvent) and e.closed and e.info.pid == server.pid for e in ev
            ),
        )
    finally:
        stop(server)
    assert reply.endswith(BODY)
    # The server's side of the same connection is seen, ours is not.
    server_conn = one_conn(events, server.pid).info
    assert server_conn.remote == Endpoint("127.0.0.1", our_port)
    assert stream(fragments(events, server_conn.conn_id, Io.SEND)) == reply
    assert not conns_of(events, os.getpid())
    assert not [e for e in events if getattr(e, "conn_id", "").startswith(f"test/{os.getpid()}/")]


def test_nginx_writev_exact_bytes(drained: Capture, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_bytes(BODY)
    server, port = nginx_server(tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/hello.txt"
        client_pid, response = run_curl("-i", url, url, url)
        events = collect(drained, 1.5, until=both_closed(client_pid, server.pid))
    finally:
        stop(server)
    server_conn = one_conn(events, server.pid).info
    assert server_conn.role == Role.SERVER and server_conn.local == Endpoint("127.0.0.1", port)
    assert server_conn.process == "nginx"
    request = curl_request("/hello.txt", port) * 3
    assert stream(fragments(events, server_conn.conn_id, Io.RECV)) == request
    sent = fragments(events, server_conn.conn_id, Io.SEND)
    assert assert_contiguous(sent) == len(response)
    assert stream(sent) == response
    assert response.count(BODY) == 3


def test_large_response_every_byte_accounted(small_budget: Capture, tmp_path: Path) -> None:
    drained = small_budget  # 8 chunks of 4 KiB per syscall: curl's large reads go past it
    drained.poll()
    (tmp_path / "www").mkdir()
    body = hashlib.sha256(b"seed").digest() * (2 * 1024 * 1024 // 32)  # 2 MiB, position-dependent
    (tmp_path / "www" / "big.bin").write_bytes(body)
    server, port = nginx_server(tmp_path)
    before = drained.stats()
    try:
        client_pid, response = run_curl("-i", f"http://127.0.0.1:{port}/big.bin")
        events = collect(drained, 2.0, until=both_closed(client_pid, server.pid))
    finally:
        stop(server)
    assert response.endswith(body)
    copied_by_side = []
    for pid, io in ((server.pid, Io.SEND), (client_pid, Io.RECV)):
        conn_id = one_conn(events, pid).info.conn_id
        frags = fragments(events, conn_id, io)
        assert assert_contiguous(frags) == len(response), (pid, io)  # copied + not copied = total
        copied = 0
        for frag in frags:
            assert frag.data == response[frag.position : frag.position + len(frag.data)]
            copied += len(frag.data)
        assert 0 < copied <= len(response)
        copied_by_side.append(copied)
        closes = closes_of(events, conn_id)
        assert closes and (closes[0].send_bytes if io == Io.SEND else closes[0].recv_bytes) == len(response)
    # curl reads far more than copy_chunk * max_chunks per recv: the uncopied rest is still counted.
    assert min(copied_by_side) < len(response)
    after = drained.stats()
    assert after.events > before.events and after.truncated > before.truncated
    assert after.lost_events == before.lost_events


def test_sendfile_sizes_only(drained: Capture, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    body = b"s" * 100_000
    (tmp_path / "www" / "f.bin").write_bytes(body)
    server, port = nginx_server(tmp_path, sendfile=True)
    try:
        client_pid, response = run_curl("-i", f"http://127.0.0.1:{port}/f.bin")
        events = collect(drained, 1.5, until=both_closed(client_pid, server.pid))
    finally:
        stop(server)
    conn_id = one_conn(events, server.pid).info.conn_id
    frags = fragments(events, conn_id, Io.SEND)
    assert assert_contiguous(frags) == len(response)
    by_sendfile = [f for f in frags if f.source == Source.SENDFILE]
    assert sum(f.length for f in by_sendfile) == len(body) and all(f.data == b"" for f in by_sendfile)


def test_ipv6_tuple(drained: Capture, tmp_path: Path) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.fail("IPv6 loopback is not available on this machine")
    (tmp_path / "v6.txt").write_bytes(BODY)
    server, port = python_http_server(tmp_path, host="::1")
    try:
        client_pid, response = run_curl("-g", f"http://[::1]:{port}/v6.txt")
        events = collect(drained, 1.5, until=both_closed(client_pid, server.pid))
    finally:
        stop(server)
    assert response == BODY
    client = one_conn(events, client_pid).info
    server_conn = one_conn(events, server.pid).info
    assert client.remote == Endpoint("::1", port) and server_conn.local == Endpoint("::1", port)
    assert client.local == server_conn.remote
    assert stream(fragments(events, server_conn.conn_id, Io.RECV)) == curl_request("/v6.txt", port, "::1")


def test_unprivileged_user_gets_one_line(tmp_path: Path) -> None:
    code = (
        "from probes.capture import Capture, CaptureUnavailable\n"
        "try:\n    Capture()\nexcept CaptureUnavailable as exc:\n    print(exc)\n    raise SystemExit(3)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        timeout=60,
        cwd=root,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root), "HOME": str(tmp_path)},
    )
    lines = proc.stdout.decode().strip().splitlines()
    assert proc.returncode == 3, proc.stderr.decode()
    assert len(lines) == 1 and "root" in lines[0]
    assert proc.stderr == b""
