"""A small real gRPC service (grpcio, generic handlers: no code generation) and the calls tests make."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
import pytest

SERVICE = "conf.v1.Echo"
CALLS = {"Unary": 3, "ServerStream": 1, "ClientStream": 1, "Bidi": 1, "Fail": 1}  # method -> calls made


def handlers() -> grpc.GenericRpcHandler:
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


def calls(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for i in range(3):
            assert ch.unary_unary("/conf.v1.Echo/Unary")(b"ping%d" % i, timeout=10) == b"pong:ping%d" % i
        assert list(ch.unary_stream("/conf.v1.Echo/ServerStream")(b"x", timeout=10)) == [b"s0", b"s1", b"s2"]
        assert ch.stream_unary("/conf.v1.Echo/ClientStream")(iter([b"a", b"bb", b"c"]), timeout=10) == b"3"
        assert list(ch.stream_stream("/conf.v1.Echo/Bidi")(iter([b"x", b"y"]), timeout=10)) == [b"X", b"Y"]
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/conf.v1.Echo/Fail")(b"q", timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@contextmanager
def echo_server() -> Iterator[int]:
    """The service on a free 127.0.0.1 port (h2c); yields the port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)
