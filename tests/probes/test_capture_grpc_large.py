"""gRPC messages larger than the per-syscall copy budget, and a call past its deadline: one record per
call per end, with the status the client saw."""

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
from tests.probes.capture_helpers import collect, fragments

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
# Server and client in one child process: this test's own process is excluded from capture.
PEERS = """
import time
from concurrent import futures
import grpc
big = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
h = grpc.method_handlers_generic_handler("qa.v1.Big", {
    "Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req[:10]),
    "Stream": grpc.unary_stream_rpc_method_handler(lambda req, ctx: (b"m%d" % i for i in range(int(req)))),
    "Slow": grpc.unary_unary_rpc_method_handler(lambda req, ctx: time.sleep(0.4) or req),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=big)
server.add_generic_rpc_handlers((h,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with grpc.insecure_channel(f"127.0.0.1:{port}", options=big) as ch:
    assert ch.unary_unary("/qa.v1.Big/Unary")(b"L" * 1_000_000, timeout=10) == b"L" * 10
    assert len(list(ch.unary_stream("/qa.v1.Big/Stream")(b"3000", timeout=10))) == 3000
    assert ch.unary_unary("/qa.v1.Big/Unary")(b"small", timeout=10) == b"small"
    try:
        ch.unary_unary("/qa.v1.Big/Slow")(b"late", timeout=0.1)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        raise AssertionError("no deadline")
    time.sleep(0.5)  # the handler finishes: stopping now would end the call UNAVAILABLE on the server
server.stop(None).wait(5)
print(port, flush=True)
"""
CALLS = [("qa.v1.Big/Slow", 4, "DEADLINE_EXCEEDED")] + [
    (name, 0, None) for name in ("qa.v1.Big/Stream", "qa.v1.Big/Unary", "qa.v1.Big/Unary")
]


def test_large_grpc_messages_give_a_record_per_call(drained: Capture) -> None:
    child = subprocess.run(
        [sys.executable, "-c", PEERS], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    port = int(child.stdout.split()[-1])
    events = collect(drained, 1.0)
    opened = {e.info.conn_id: e.info for e in events if hasattr(e, "info") and not e.closed}
    ours = {cid: info for cid, info in opened.items() if port in (info.local.port, info.remote.port)}
    assert {info.role for info in ours.values()} == {Role.CLIENT, Role.SERVER}, ours
    got: dict[Role, list[tuple[str, object, str | None]]] = {Role.CLIENT: [], Role.SERVER: []}
    for conn_id, info in ours.items():  # grpcio may open (and drop) more than one connection
        health = Health()
        table = ConnTable(PROTOCOLS, health)
        frags = [f for io in Io for f in fragments(events, conn_id, io)]
        closed = next(
            (e for e in events if hasattr(e, "info") and e.closed and e.info.conn_id == conn_id), None
        )
        records = table.apply(Batch(info, sorted(frags, key=lambda f: f.ts_ns), closed))
        got[info.role] += [(r.name, r.attributes.get("rpc.grpc.status_code"), r.error_type) for r in records]
        # Frames larger than the default 16 KiB are legal once the peer's SETTINGS allow them.
        errors = {k: n for k, n in health.snapshot().items() if k[0] == "parse_errors"}
        assert not any(reason == "frame too large" for _, _, reason in errors), (info.role, errors)
    assert {role: sorted(calls) for role, calls in got.items()} == {Role.CLIENT: CALLS, Role.SERVER: CALLS}
