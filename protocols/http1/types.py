"""HTTP/1.x frames, the exchange and the per-connection state.

Frames keep only the fields the pipeline uses: sensitive headers (Authorization, Cookie, ...) are
never copied out of the buffer, so nothing downstream can leak them. Frames and the exchange are
NamedTuples: immutable like frozen dataclasses, but built several times faster (one per message).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from protocols.base import Timed

MAX_HEADER_BYTES = 64 * 1024  # start line + headers + the blank line
MAX_HEADERS = 100
# Request methods awaiting their response: at least the framing loop's queue (Limits.max_queued_frames),
# which holds deeper pipelines back as unparsed bytes, or the responses beyond would be misframed.
MAX_PENDING = 8192
MAX_INTERIM = 8  # 1xx responses remembered for the exchange in progress
MAX_TRAILERS = 16  # trailer fields kept (the rest are parsed and dropped)


class Request(NamedTuple):
    method: str
    target: str  # request-target as sent (origin-form "/p?q", absolute-form, authority, "*")
    version: str  # "1.1" or "1.0"
    seq: int  # per-connection request number, matched by the response that answers it
    host: str = ""
    user_agent: str = ""
    traceparent: str = ""
    content_type: str = ""
    body_size: int = 0  # decoded body bytes (sum of chunk sizes when chunked)
    wire_size: int = 0  # bytes on the wire: headers + body framing
    chunked: bool = False
    expect_continue: bool = False
    upgrade: str = ""  # protocols asked for in `Upgrade` ("websocket", "h2c"), lowercased
    close: bool = False  # `Connection: close`
    trailers: tuple[tuple[str, str], ...] = ()


class Response(NamedTuple):
    status: int
    reason: str
    version: str
    seq: int  # seq of the request it answers, -1 when unknown (no pending request was known)
    method: str = ""  # method of that request ("" when unknown)
    content_type: str = ""
    body_size: int = 0
    wire_size: int = 0
    chunked: bool = False
    close_delimited: bool = False  # the body ended with the connection
    upgrade: str = ""  # the protocol switched to on 101 ("websocket", "h2c"), or "connect" on a tunnel
    close: bool = False
    trailers: tuple[tuple[str, str], ...] = ()
    cut: bool = False  # the stream ended (connection closed or reset) before the body did

    @property
    def interim(self) -> bool:
        """1xx other than 101: not the final response (100 Continue, 103 Early Hints)."""
        return 100 <= self.status < 200 and self.status != 101


class Passthrough(NamedTuple):
    """Bytes after a protocol switch (101 or a CONNECT tunnel): not HTTP/1, stitch drops them."""

    size: int


Http1Frame = Request | Response | Passthrough


@dataclass(slots=True)
class Chunks:
    """A chunked body being passed chunk by chunk (its data skipped unseen): the message so far."""

    frame: Request | Response  # its headers (body_size and wire_size not yet final)
    body: int  # decoded bytes so far
    wire: int  # bytes of the message passed so far


class Exchange(NamedTuple):
    request: Timed[Request]
    response: Timed[Response]
    interim: tuple[int, ...] = ()  # statuses of 1xx responses that preceded the final one
    degraded: bool = False  # the response was parsed without knowing its request's method

    @property
    def upgrade(self) -> str:
        return self.response.frame.upgrade

    @property
    def truncated(self) -> bool:
        return self.request.truncated or self.response.truncated


@dataclass(slots=True)
class Http1State:
    # (seq, method, asked to upgrade) of requests parsed but not yet answered by a final response.
    pending: deque[tuple[int, str, bool]] = field(default_factory=lambda: deque(maxlen=MAX_PENDING))
    next_seq: int = 0
    answered: int = -1  # highest request seq stitched to a final response
    request_tunnel: bool = False  # request direction carries another protocol now
    response_tunnel: bool = False  # response direction carries another protocol now
    response_eof: bool = False  # the response stream ended: a close-delimited body is complete
    interim: list[int] = field(default_factory=list)  # 1xx statuses stitched, awaiting the final one
    unmatched: int = 0  # frames stitch dropped unpaired, not yet counted (take_unmatched)
    request_chunks: Chunks | None = None  # a chunked request body in progress
    response_chunks: Chunks | None = None
