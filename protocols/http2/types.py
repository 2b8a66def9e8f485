"""HTTP/2 frames, the per-stream exchange and the per-connection state (HPACK tables, open streams)."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.http2.headers import HpackSide

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6); PREFACE_KIND is ours for the client magic.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
PREFACE_KIND = -1

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

MAX_FRAME_LEN = (1 << 24) - 1  # the 24-bit length field's limit (SETTINGS_MAX_FRAME_SIZE max)
MAX_HEADER_BLOCK = 256 * 1024  # HEADERS + CONTINUATION bytes kept while a block is assembled
MAX_HEADERS = 128  # header fields kept per block
MAX_STREAMS = 1024  # in-progress streams per connection
MAX_CURSORS = 1024  # gRPC message cursors per direction
MAX_DONE = 256  # recently finished stream ids remembered, so late frames do not reopen them

ERROR_CODES = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)  # fmt: skip


def error_code_name(code: int) -> str:
    return ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else f"0x{code:x}"


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class H2Frame:
    """One HTTP/2 frame. Header-carrying frames hold the decoded block once it is complete."""

    kind: int  # frame type, PREFACE_KIND for the client magic
    stream_id: int
    flags: int
    length: int  # payload length from the frame header
    end_stream: bool = False  # this frame ends its side of the stream (block complete + END_STREAM)
    headers: Headers | None = None  # decoded block (HEADERS/CONTINUATION/PUSH_PROMISE), None if pending
    complete: bool = True  # False: HPACK state unknown, some fields of `headers` could not be decoded
    error_code: int = 0  # RST_STREAM / GOAWAY
    data_len: int = 0  # DATA payload without padding
    msg_count: int = -1  # gRPC length-prefixed messages started in this DATA frame; -1 = unknown
    msg_bytes: int = 0  # their declared lengths, summed
    promised_id: int = 0  # PUSH_PROMISE promised stream; GOAWAY last stream id
    block_start: bool = False  # first frame of a header block (HEADERS / PUSH_PROMISE)


@dataclass(frozen=True, slots=True)
class H2Exchange:
    """One stream: the request side and the response side, as far as they could be decoded."""

    stream_id: int
    start_ns: int
    end_ns: int
    request_headers: Headers
    response_headers: Headers
    trailers: Headers
    request_body_size: int
    response_body_size: int
    request_msgs: int | None  # gRPC length-prefixed messages; None when the framing was not followed
    response_msgs: int | None
    request_msg_bytes: int
    response_msg_bytes: int
    rst_code: int | None  # RST_STREAM error code when the stream was reset
    refused: bool = False  # above a GOAWAY's last stream id: never processed
    degraded: bool = False
    truncated: bool = False
    pushed: bool = False


@dataclass(slots=True)
class StreamAcc:
    """A stream being assembled by the stitcher (mutable, lives in H2State.streams)."""

    stream_id: int
    start_ns: int
    end_ns: int = 0
    request_headers: Headers = ()
    response_headers: Headers = ()
    trailers: Headers = ()
    req_blocks: int = 0
    resp_blocks: int = 0
    req_ended: bool = False
    resp_ended: bool = False
    req_body: int = 0
    resp_body: int = 0
    resp_length: int = -1  # the response's content-length, -1 when absent
    req_msgs: int | None = 0
    resp_msgs: int | None = 0
    req_msg_bytes: int = 0
    resp_msg_bytes: int = 0
    degraded: bool = False
    truncated: bool = False
    pushed: bool = False


@dataclass(slots=True)
class Cursor:
    """Where one direction of one stream is inside gRPC's 5-byte length-prefixed message framing."""

    skip: int = 0  # bytes of the current message body still to come
    partial: bytes = b""  # first bytes of a prefix split across DATA frames


@dataclass(slots=True)
class H2State:
    """Per-connection state: index 0 is the REQUEST direction, 1 the RESPONSE direction."""

    hpack: tuple[HpackSide, HpackSide] = field(default_factory=lambda: (HpackSide(), HpackSide()))
    # Header block being assembled per direction: (kind, stream id, end_stream, promised id, bytes).
    pending: list[tuple[int, int, bool, int, bytearray] | None] = field(default_factory=lambda: [None, None])
    cursors: tuple[dict[int, Cursor], dict[int, Cursor]] = field(default_factory=lambda: ({}, {}))
    started: list[bool] = field(default_factory=lambda: [False, False])
    max_frame: list[int] = field(default_factory=lambda: [MAX_FRAME_LEN, MAX_FRAME_LEN])
    # Per direction: the SETTINGS that govern its frames (sent the other way) were parsed.
    governed: list[bool] = field(default_factory=lambda: [False, False])
    opened: bool = False  # the client preface was seen: the connection's settings history is known
    eof: list[bool] = field(default_factory=lambda: [False, False])  # per direction: its stream ended
    streams: dict[int, StreamAcc] = field(default_factory=dict)
    done: dict[int, None] = field(default_factory=dict)  # recently emitted stream ids (late RST etc.)
    goaway_last: int | None = None
    evicted: int = 0  # streams dropped because MAX_STREAMS were open
    unmatched: int = 0  # streams dropped unanswered (evicted, or open at the close), not yet counted
