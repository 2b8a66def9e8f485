"""gRPC (HTTP/2, h2c) through `l7scope replay` against tshark: a grpcio service with unary, server-, client-
and bidirectional-streaming calls and a failing call."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.conformance.oracle import (
    Tcpdump,
    assert_close,
    client_port,
    needs_tools,
    replay,
    tshark_grpc_calls,
)

pytestmark = needs_tools


def _handlers() -> grpc.GenericRpcHandler:
    def unary(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        return b"pong:" + req

    def server_stream(req: bytes, ctx: grpc.ServicerContext):
        yield from (b"s%d" % i for i in range(3))

    def client_stream(it, ctx: grpc.ServicerContext) -> bytes:
        return b"%d" % sum(1 for _ in it)

    def bidi(it, ctx: grpc.ServicerContext):
        for m in it:
            yield m.upper()

    def fail(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    return grpc.method_handlers_generic_handler(
        "conf.v1.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )


def _calls(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for i in range(3):
            assert ch.unary_unary("/conf.v1.Echo/Unary")(b"ping%d" % i, timeout=10) == b"pong:ping%d" % i
        assert list(ch.unary_stream("/conf.v1.Echo/ServerStream")(b"x", timeout=10)) == [b"s0", b"s1", b"s2"]
        assert ch.stream_unary("/conf.v1.Echo/ClientStream")(iter([b"a", b"bb", b"c"]), timeout=10) == b"3"
        assert list(ch.stream_stream("/conf.v1.Echo/Bidi")(iter([b"x", b"y"]), timeout=10)) == [b"X", b"Y"]
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/conf.v1.Echo/Fail")(b"q", timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpcio_calls_match_tshark(tmp_path: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    pcap = tmp_path / "grpc.pcap"
    try:
        with Tcpdump(pcap, port):
            _calls(port)
    finally:
        server.stop(grace=None).wait(5)
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
        ("conf.v1.Echo", "Bidi", None), ("conf.v1.Echo", "Fail", "NOT_FOUND"),
    ]  # fmt: skip
    for r, c in zip(records, theirs, strict=True):
        assert_close(r["start_ns"], c["start_ns"], f"{r['name']} request")
        assert_close(r["end_ns"], c["end_ns"], f"{r['name']} response")
    assert all(r["role"] == "server" and r["protocol"] == "grpc" and not r["degraded"] for r in records)
