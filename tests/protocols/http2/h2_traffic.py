"""Real HTTP/2 bytes from two `h2` endpoints talking to each other, driven through the real framing loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from struct import pack

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived

from protocols.base import ConnInfo, Direction, Endpoint, Role
from protocols.http2 import SPEC
from protocols.http2.types import H2Exchange, H2State
from tests.support.loop import Loop

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
CONN = ConnInfo("c1", Endpoint("127.0.0.1", 50051), Endpoint("127.0.0.1", 40000), Role.SERVER)
CLIENT_CONN = ConnInfo("c2", Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.1", 50051), Role.CLIENT)


def grpc_msg(payload: bytes, compressed: bool = False) -> bytes:
    return pack(">BI", int(compressed), len(payload)) + payload


def grpc_request_headers(path: str, extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    return [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1:50051"),
        ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "grpc-python/1.0"),
        *extra,
    ]  # fmt: skip


def _ack(conn: H2Connection, events: list) -> None:
    for ev in events:
        if isinstance(ev, DataReceived) and ev.flow_controlled_length:
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)


class Conversation:
    """A client and a server h2 endpoint; every byte each sends is recorded in order, by direction."""

    def __init__(self, preface: bool = True) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.chunks: list[tuple[Direction, bytes]] = []
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.flush()
        if not preface:
            self.chunks.clear()

    def flush(self) -> None:
        for _ in range(4):  # replies (ACKs, window updates) may trigger more replies
            c = self.client.data_to_send()
            s = self.server.data_to_send()
            if not c and not s:
                return
            if c:
                self.chunks.append((REQ, c))
                _ack(self.server, self.server.receive_data(c))
            if s:
                self.chunks.append((RESP, s))
                _ack(self.client, self.client.receive_data(s))

    def unary(self, path: str, req: bytes, resp: bytes, status: int = 0, extra=()) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, grpc_request_headers(path, extra))
        self.client.send_data(sid, grpc_msg(req), end_stream=True)
        self.flush()
        if status == 0:
            self.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.server.send_data(sid, grpc_msg(resp))
            self.server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
        else:
            self.server.send_headers(
                sid,
                [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", str(status))],
                end_stream=True,
            )
        self.flush()
        return sid


@dataclass
class Driven:
    exchanges: list[H2Exchange] = field(default_factory=list)
    invalid: int = 0  # parse errors the loop counted
    loop: Loop | None = None


def drive(chunks, state: H2State | None = None, split: int | None = None) -> tuple[Driven, H2State]:
    """Feed chunks (direction, bytes) through the real framing loop, one pass per chunk (or piece of
    one, cut at `split`), chunk t stamped t microseconds. `state`: carry on with that HTTP/2 state."""
    loop = Loop(SPEC)
    if state is not None:
        loop.parser.state = state
    for t, (direction, data) in enumerate(chunks):
        pieces = [data] if split is None else [data[:split], data[split:]]
        for piece in pieces:
            if piece:
                loop.feed(direction, piece, ts=t * 1000)
                loop.run()
    return Driven(loop.exchanges, len(loop.errors), loop), loop.state
