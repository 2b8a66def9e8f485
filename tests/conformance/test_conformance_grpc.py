"""gRPC (HTTP/2, h2c) through `l7scope replay` against tshark: a grpcio service with unary, server-, client-
and bidirectional-streaming calls and a failing call."""

from __future__ import annotations

from pathlib import Path

from tests.conformance.oracle import (
    Tcpdump,
    assert_close,
    client_port,
    needs_tools,
    replay,
    tshark_grpc_calls,
)
from tests.support.grpc_echo import calls as make_calls
from tests.support.grpc_echo import echo_server

pytestmark = needs_tools


def test_grpcio_calls_match_tshark(tmp_path: Path) -> None:
    pcap = tmp_path / "grpc.pcap"
    with echo_server() as port, Tcpdump(pcap, port):
        make_calls(port)
    records = sorted(replay(pcap, tmp_path), key=lambda r: r["start_ns"])
    theirs = tshark_grpc_calls(pcap, port)
    ours = [
        {
            "path": "/" + r["name"],
            "client": client_port(r),
            "grpc_status": r["attributes"]["rpc.grpc.status_code"],
        }
        for r in records
    ]
    assert ours == [{k: c[k] for k in ("path", "client", "grpc_status")} for c in theirs]
    calls = [
        (r["attributes"]["rpc.service"], r["attributes"]["rpc.method"], r["error_type"]) for r in records
    ]
    assert calls == [
        ("conf.v1.Echo", "Unary", None), ("conf.v1.Echo", "Unary", None), ("conf.v1.Echo", "Unary", None),
        ("conf.v1.Echo", "ServerStream", None), ("conf.v1.Echo", "ClientStream", None),
        ("conf.v1.Echo", "Bidi", None), ("conf.v1.Echo", "Fail", None),  # NOT_FOUND: not the server's error
    ]  # fmt: skip
    for r, c in zip(records, theirs, strict=True):
        assert_close(r["start_ns"], c["start_ns"], f"{r['name']} request")
        assert_close(r["end_ns"], c["end_ns"], f"{r['name']} response")
    assert all(r["role"] == "server" and r["protocol"] == "grpc" and not r["degraded"] for r in records)
