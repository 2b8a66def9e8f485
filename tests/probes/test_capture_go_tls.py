"""Go crypto/tls plaintext through uprobes at the entry and every RET of (*tls.Conn).Read/Write: a Go
net/http HTTPS server and client (tests/probes/go_tls_peer), HTTP/1.1 and HTTP/2 (ALPN), built with
symbols, stripped and as a PIE, started after the tracer (found through exec) and before it (start-up scan).
Both ends' streams must be exactly the plaintext, in order, with no ciphertext as payload."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from probes.capture import Capture
from probes.fragment import ConnEvent, Io, Source
from protocols.base import Role
from tests.probes.capture_helpers import (
    Event,
    assert_contiguous,
    closes_of,
    collect,
    fragments,
    free_port,
    load_capture,
    stop,
    stream,
)
from tests.support.go_peers import build_peers
from tests.support.servers import self_signed_cert

pytestmark = pytest.mark.kernel

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def peers() -> tuple[Path, Path, Path, Path]:
    return build_peers()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("go-tls-cert"))


@contextmanager
def go_server(binary: Path, cert: tuple[Path, Path]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen([str(binary), "server", f"127.0.0.1:{port}", str(cert[0]), str(cert[1])],
                            stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc, port
    finally:
        stop(proc)


def wait_probed(cap: Capture, binary: Path, seconds: float = 10.0) -> list[Event]:
    """Poll until the tracer probes `binary` (through the exec event of a process running it)."""
    events: list[Event] = []
    deadline = time.monotonic() + seconds
    st = binary.stat()
    while time.monotonic() < deadline:
        events += cap.poll()
        assert cap.tls.go is not None
        if (st.st_dev, st.st_ino) in cap.tls.go.probed:
            return events
        time.sleep(0.01)
    raise AssertionError(f"{binary} was not probed; refused: {cap.tls.go.refused if cap.tls.go else None}")


def run_client(binary: Path, port: int, n: int, proto: str) -> tuple[int, str]:
    """The Go client's n GETs over one connection; returns its pid and output."""
    proc = subprocess.Popen([str(binary), "client", f"https://127.0.0.1:{port}/hello/", str(n), proto],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return proc.pid, out.decode()


def tls_conn(events: list[Event], role: Role, port: int, pid: int) -> ConnEvent:
    found = [
        e for e in events
        if isinstance(e, ConnEvent) and not e.closed and e.info.role == role and e.info.pid == pid
        and (e.info.local.port if role == Role.SERVER else e.info.remote.port) == port
    ]  # fmt: skip
    assert len(found) == 1, f"expected one {role.name} connection of pid {pid} on port {port}: {found}"
    return found[0]


def plaintext(events: list[Event], conn: ConnEvent, io: Io) -> bytes:
    """The direction's stream: all of it from the TLS uprobes, contiguous, and as long as CLOSE says."""
    frags = fragments(events, conn.info.conn_id, io)
    assert frags, (conn.info.conn_id, io)
    assert {f.source for f in frags} == {Source.TLS}, "ciphertext leaked as a syscall payload"
    data = stream(frags)
    assert assert_contiguous(frags) == len(data)
    closes = closes_of(events, conn.info.conn_id)
    assert len(closes) == 1
    assert (closes[0].send_bytes if io == Io.SEND else closes[0].recv_bytes) == len(data)
    return data


def exchange(cap: Capture, binary: Path, port: int, server_pid: int, n: int, proto: str) -> list[Event]:
    client_pid, out = run_client(binary, port, n, proto)
    version = "HTTP/1.1" if proto == "h1" else "HTTP/2.0"
    assert out.count(f"200 {version} hello") == n, out

    def both_closed(events: list[Event]) -> bool:
        return sum(1 for e in events if isinstance(e, ConnEvent) and e.closed and port in
                   (e.info.local.port, e.info.remote.port)) >= 2  # fmt: skip

    time.sleep(0.2)
    events = collect(cap, 10, both_closed)
    client = tls_conn(events, Role.CLIENT, port, client_pid)
    server = tls_conn(events, Role.SERVER, port, server_pid)
    assert client.info.process == server.info.process == binary.name
    requests, responses = plaintext(events, client, Io.SEND), plaintext(events, client, Io.RECV)
    assert plaintext(events, server, Io.RECV) == requests
    assert plaintext(events, server, Io.SEND) == responses
    if proto == "h1":
        assert requests.count(b"GET /hello/") == n and requests.startswith(b"GET /hello/0 HTTP/1.1\r\n")
        assert responses.count(b"HTTP/1.1 200 OK\r\n") == n
        for i in range(n):
            assert b"hello /hello/%d over HTTP/1.1\n" % i in responses
    else:
        assert requests.startswith(H2_PREFACE)
        for i in range(n):
            assert b"hello /hello/%d over HTTP/2.0\n" % i in responses  # DATA frames, uncompressed
    return events


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    cap = load_capture(tmp_path_factory)
    try:
        yield cap
    finally:
        cap.close()


@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize("build", ["symbols", "stripped", "pie"])
def test_go_https_server_and_client_plaintext_both_sides(
    capture: Capture, peers: tuple[Path, Path, Path, Path], cert: tuple[Path, Path], build: str, proto: str
) -> None:
    binary = {"symbols": peers[0], "stripped": peers[1], "pie": peers[3]}[build]
    capture.poll()
    with go_server(binary, cert) as (server, port):
        wait_probed(capture, binary)  # started after the tracer: found through its exec event
        exchange(capture, binary, port, server.pid, 5, proto)
    assert capture.tls.go is not None and not capture.tls.go.refused


def test_go_server_running_before_the_tracer_is_found_at_startup(
    tmp_path_factory: pytest.TempPathFactory, peers: tuple[Path, Path, Path, Path], cert: tuple[Path, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    # A copy: a new inode, which no tracer of this module has probed yet.
    binary = tmp_path / "gopeer-early"
    binary.write_bytes(peers[1].read_bytes())
    binary.chmod(0o755)
    with go_server(binary, cert) as (server, port):
        cap = load_capture(tmp_path_factory)
        try:
            assert cap.tls.go is not None
            names = [e.path for e in cap.tls.go.executables]
            assert f"/proc/{server.pid}/exe" in names, names
            cap.poll()
            exchange(cap, binary, port, server.pid, 3, "h1")
        finally:
            cap.close()


def test_tls_over_a_unix_socket_is_counted_and_a_tcp_socket_reusing_its_fd_stays_plaintext(
    capture: Capture, peers: tuple[Path, Path, Path, Path], cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """A tls.Conn over a Unix socket names no TCP connection: its plaintext calls are counted as dropped
    (tls_unmapped), and the TLS mark its handshake left on the fd must not make the TCP connection that
    reuses the fd number hide its plaintext payload (it did until close() cleared the mark)."""
    binary = peers[0]
    msg = b"unix-tls-" + b"x" * 55
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo_once() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while len(data) < len(msg):
                data += conn.recv(len(msg) - len(data))
            conn.sendall(data)

    echo = threading.Thread(target=echo_once, daemon=True)
    echo.start()
    capture.poll()
    with go_server(binary, cert):
        wait_probed(capture, binary)  # the short-lived unix run below is then probed from its exec
        before = capture.stats()
        args = ["unix", str(tmp_path / "s"), str(cert[0]), str(cert[1]), msg.decode(), f"127.0.0.1:{port}"]
        proc = subprocess.run([str(binary), *args], capture_output=True, timeout=30)
    assert proc.stdout == msg + b"\n" + msg + b"\n", proc.stderr
    echo.join(10)
    listener.close()

    def tcp_closed(events: list[Event]) -> bool:
        return any(isinstance(e, ConnEvent) and e.closed and e.info.remote.port == port for e in events)

    events = collect(capture, 10, tcp_closed)
    after = capture.stats()
    # Client Write, server Read, server Write, client Read: each moved the whole message.
    assert after.tls_unmapped_bytes - before.tls_unmapped_bytes == 4 * len(msg)
    assert after.tls_unmapped - before.tls_unmapped >= 4
    tcp = [e for e in events if isinstance(e, ConnEvent) and not e.closed and e.info.remote.port == port]
    assert len(tcp) == 1, tcp
    for io in (Io.SEND, Io.RECV):
        frags = fragments(events, tcp[0].info.conn_id, io)
        assert {f.source for f in frags} == {Source.SYSCALL}
        assert stream(frags) == msg


def test_uprobe_cap_refuses_an_executable_and_says_so_once(
    tmp_path_factory: pytest.TempPathFactory, peers: tuple[Path, Path, Path, Path], cert: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """With room for one executable's uprobes (19 on go1.26.8), a second executable is refused, with the
    cap named, and logged once however many times it runs."""
    symbols, stripped = peers[0], peers[1]
    cap = load_capture(tmp_path_factory, go_tls_max_uprobes=25)
    try:
        assert cap.tls.go is not None
        with go_server(symbols, cert):
            wait_probed(cap, symbols)
        caplog.set_level("WARNING", logger="l7scope.tls")
        for _ in range(2):
            with go_server(stripped, cert):
                deadline = time.monotonic() + 10
                while str(stripped) not in cap.tls.go.refused and time.monotonic() < deadline:
                    cap.poll()
                    time.sleep(0.01)
        assert "capture.go_tls_max_uprobes" in cap.tls.go.refused[str(stripped)]
        assert cap.tls.go.uprobes <= 25
        said = [r for r in caplog.records if str(stripped) in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in said]
    finally:
        cap.close()


def test_a_keepalive_connection_opened_before_the_tracer_turns_plaintext(
    tmp_path_factory: pytest.TempPathFactory, peers: tuple[Path, Path, Path, Path], cert: tuple[Path, Path]
) -> None:
    """Request 0 before the tracer loads, 1-3 after, on one HTTP/1.1 connection. Each side parks a Read
    before the tracer (net/http's readers wait for the next message), so that call's bytes are not
    seen: the server's request 1 and the client's response 1. Everything after is plaintext. The client
    marks its connection TLS at its first probed Write entry, before that call's syscall binds it: no
    ciphertext from it at all (it was one ciphertext payload and a second generation before)."""
    binary = peers[0]
    with go_server(binary, cert) as (server, port):
        args = ["client", f"https://127.0.0.1:{port}/hello/", "4", "h1", "wait"]
        client = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert client.stdin is not None and client.stdout is not None
        try:

            def request() -> bytes:
                client.stdin.write(b"\n")  # type: ignore[union-attr]
                client.stdin.flush()  # type: ignore[union-attr]
                return client.stdout.readline()  # type: ignore[union-attr]

            assert request() == b"200 HTTP/1.1 hello /hello/0 over HTTP/1.1\n"
            cap = load_capture(tmp_path_factory)
            try:
                cap.poll()
                for i in (1, 2, 3):
                    assert request() == b"200 HTTP/1.1 hello /hello/%d over HTTP/1.1\n" % i
                client.stdin.write(b"\n")
                client.stdin.close()
                client.wait(timeout=10)

                def both_closed(events: list[Event]) -> bool:
                    return sum(1 for e in events if isinstance(e, ConnEvent) and e.closed and port in
                               (e.info.local.port, e.info.remote.port)) >= 2  # fmt: skip

                events = collect(cap, 10, both_closed)
            finally:
                cap.close()
        finally:
            stop(client)
    opens = [e for e in events if isinstance(e, ConnEvent) and not e.closed]
    client_gens = [e for e in opens if e.info.pid == client.pid and e.info.remote.port == port]
    server_gens = [e for e in opens if e.info.pid == server.pid and e.info.local.port == port]
    assert len(client_gens) == 1, client_gens
    assert server_gens, opens
    sent = plaintext(events, client_gens[0], Io.SEND)
    assert [line.split()[1] for line in sent.split(b"\r\n") if line.startswith(b"GET ")] == [
        b"/hello/1", b"/hello/2", b"/hello/3"
    ]  # fmt: skip
    got = plaintext(events, client_gens[0], Io.RECV)
    assert b"hello /hello/2 over" in got and b"hello /hello/3 over" in got
    last = server_gens[-1]  # the first may hold the one ciphertext read of the Read parked before the tracer
    served = plaintext(events, last, Io.RECV)
    assert b"GET /hello/2 " in served and b"GET /hello/3 " in served
    answered = plaintext(events, last, Io.SEND)
    assert all(b"hello /hello/%d over" % i in answered for i in (1, 2, 3))
