"""A grpcio server and client (h2c, many small iovecs per sendmsg): both directions captured, every byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.conn_table import ConnTable
from probes.capture import Capture
from probes.fragment import Batch, Io
from probes.health import Health
from protocols.base import Role
from protocols.registry import PROTOCOLS
from tests.probes.capture_helpers import assert_contiguous, collect, fragments, stream
from tests.support.grpc_echo import CALLS, SERVICE

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
# Server and client in one child process: this test's own process is excluded from capture.
PEERS = """
import sys
from tests.support.grpc_echo import calls, echo_server
with echo_server() as port:
    calls(port)
    print(port, flush=True)
"""


def test_grpc_calls_are_captured_whole_from_both_ends(drained: Capture) -> None:
    child = subprocess.run(
        [sys.executable, "-c", PEERS], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    port = int(child.stdout.split()[-1])
    events = collect(drained, 1.0)
    opened = {cid: e.info for e in events if hasattr(e, "info") for cid in [e.info.conn_id] if not e.closed}
    ours = {cid: info for cid, info in opened.items() if port in (info.local.port, info.remote.port)}
    roles = {info.role: cid for cid, info in ours.items()}
    assert set(roles) == {Role.CLIENT, Role.SERVER}, ours
    client, server = roles[Role.CLIENT], roles[Role.SERVER]
    for conn_id in (client, server):
        for io in Io:
            assert_contiguous(fragments(events, conn_id, io))
    requests = stream(fragments(events, client, Io.SEND))  # every byte copied, none only counted
    assert requests.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    # What one end read is what the other wrote (a closing GOAWAY may go unread at shutdown).
    assert requests.startswith(stream(fragments(events, server, Io.RECV)))
    assert stream(fragments(events, server, Io.SEND)).startswith(stream(fragments(events, client, Io.RECV)))
    # ... and they parse into every call, from each end.
    table = ConnTable(PROTOCOLS, Health())
    for conn_id in (client, server):
        frags = [f for io in Io for f in fragments(events, conn_id, io)]
        records = table.apply(Batch(ours[conn_id], sorted(frags, key=lambda f: f.ts_ns)))
        assert sorted(r.name for r in records) == sorted(
            f"{SERVICE}/{m}" for m, n in CALLS.items() for _ in range(n)
        )
        assert not any(r.degraded or r.truncated for r in records)
