"""A connection opened before the tracer loaded, used after: attributed, with its role inferred."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.capture import Capture, CaptureOptions
from probes.existing import ExistingConnections, parse_hex_addr, parse_proc_net_tcp
from probes.fragment import ConnEvent, Io
from protocols.base import Endpoint, Role
from tests.probes.capture_helpers import collect, fragments, free_port, stop, stream

SERVER = """
import socket, sys
with socket.create_server(("127.0.0.1", int(sys.argv[1]))) as l:
    print("ready", flush=True)
    c, _ = l.accept()
    with c, c.makefile("rwb") as f:
        for line in f:
            f.write(line.replace(b"PING", b"PONG")); f.flush()
"""
CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rwb")
for line in sys.stdin:
    f.write(line.encode()); f.flush()
    print(f.readline().decode(), end="", flush=True)
"""


def test_proc_net_tcp_rows() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
        "   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
    )
    rows = parse_proc_net_tcp(text)
    assert [r.inode for r in rows] == [111, 222, 333]
    assert rows[1].local == Endpoint("127.0.0.1", 8080) and rows[1].remote == Endpoint("127.0.0.1", 54321)
    snap = ExistingConnections(rows, {222: (10, 4), 333: (11, 5)})
    assert snap.by_fd[(10, 4)].role == Role.SERVER and snap.by_fd[(11, 5)].role == Role.CLIENT
    assert parse_hex_addr("00000000000000000000000001000000:0050") == Endpoint("::1", 80)
    assert parse_hex_addr("0000000000000000FFFF00000100007F:0050") == Endpoint("127.0.0.1", 80)


@pytest.mark.kernel
def test_connection_older_than_the_agent(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE)
    client = None
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)  # fmt: skip
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"PING before\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"PONG before\n"
        cache = Path(os.environ.get("L7SCOPE_HEADER_CACHE", tmp_path / "kernel-headers"))
        with Capture(CaptureOptions(node="old", header_cache=cache, tls=False)) as cap:
            cap.poll()
            for word in (b"after", b"again"):
                client.stdin.write(b"PING " + word + b"\n")
                client.stdin.flush()
                assert client.stdout.readline() == b"PONG " + word + b"\n"
            client.stdin.close()
            client.wait(timeout=10)
            events = collect(
                cap, 2.0, until=lambda ev: sum(isinstance(e, ConnEvent) and e.closed for e in ev) >= 2
            )
    finally:
        for proc in (client, server):
            if proc is not None:
                stop(proc)
    conns = {e.info.pid: e.info for e in events if isinstance(e, ConnEvent) and port in (e.info.remote.port,
             e.info.local.port)}  # fmt: skip
    srv, cli = conns[server.pid], conns[client.pid]
    assert srv.role == Role.SERVER and cli.role == Role.CLIENT
    assert srv.role_inferred and cli.role_inferred
    assert srv.local == Endpoint("127.0.0.1", port) and cli.local == srv.remote
    # Positions count from the agent's first sight of the connection. Even the server's read that was
    # already blocked when the tracer loaded is captured: its buffer is read from the saved registers.
    assert stream(fragments(events, srv.conn_id, Io.RECV)) == b"PING after\nPING again\n"
    assert stream(fragments(events, srv.conn_id, Io.SEND)) == b"PONG after\nPONG again\n"
    assert stream(fragments(events, cli.conn_id, Io.SEND)) == b"PING after\nPING again\n"
    assert stream(fragments(events, cli.conn_id, Io.RECV)) == b"PONG after\nPONG again\n"
