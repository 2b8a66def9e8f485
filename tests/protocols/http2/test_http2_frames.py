"""parse_frame on exact frame bytes (hyperframe builds them), detect and find_boundary."""

from __future__ import annotations

import random

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from protocols.base import NEED_DATA, Direction, Invalid, Parsed
from protocols.http2 import SPEC
from protocols.http2.parse import detect, find_boundary, parse_frame
from protocols.http2.types import PREFACE, PREFACE_KIND, H2Frame, H2State

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


def started() -> H2State:
    """A state that has seen the client preface (HPACK in sync, default frame size limits)."""
    state = SPEC.new_state()
    assert parse_frame(memoryview(PREFACE), REQ, state) == Parsed(H2Frame(PREFACE_KIND, 0, 0, 0), 24)
    return state


def one(data: bytes, direction: Direction = REQ, state: H2State | None = None) -> H2Frame:
    state = state if state is not None else started()
    r = parse_frame(memoryview(data), direction, state)
    assert isinstance(r, Parsed), r
    assert r.size == len(data)
    return r.frame


def test_preface_is_a_request_frame_and_partial_preface_needs_data() -> None:
    state = SPEC.new_state()
    for k in range(24):
        assert parse_frame(memoryview(PREFACE[:k]), REQ, state) is NEED_DATA
    assert state.started == [False, False]
    r = parse_frame(memoryview(PREFACE + b"\x00"), REQ, state)
    assert isinstance(r, Parsed) and r.frame.kind == PREFACE_KIND and r.size == 24
    assert state.hpack[0].synced and state.hpack[1].synced


def test_data_frame_plain_and_padded_counts_grpc_messages() -> None:
    state = started()
    enc = Encoder()
    hdr = HeadersFrame(1, enc.encode([(":method", "POST"), (":path", "/a.B/C")]), flags=["END_HEADERS"])
    one(hdr.serialize(), REQ, state)
    body = b"\x00\x00\x00\x00\x03abc" + b"\x01\x00\x00\x00\x02xy"
    f = one(DataFrame(1, body, flags=["PADDED", "END_STREAM"], pad_length=7).serialize(), REQ, state)
    assert (f.kind, f.stream_id, f.end_stream, f.data_len, f.msg_count, f.msg_bytes) == (0, 1, True, 15, 2, 5)
    assert f.length == 15 + 1 + 7
    # No HEADERS seen for stream 3 in this direction: the message framing is unknown.
    g = one(DataFrame(3, b"hello").serialize(), REQ, state)
    assert (g.data_len, g.msg_count, g.end_stream) == (5, -1, False)


def test_headers_with_priority_and_padding_decode() -> None:
    enc = Encoder()
    block = enc.encode([(":status", "200"), ("content-type", "application/grpc")])
    raw = HeadersFrame(
        1, block, flags=["END_HEADERS", "PRIORITY", "PADDED"], pad_length=4, depends_on=0, stream_weight=15
    ).serialize()
    f = one(raw, RESP)
    assert f.kind == 1 and f.block_start and f.complete and not f.end_stream
    assert f.headers == ((":status", "200"), ("content-type", "application/grpc"))


def test_headers_and_continuations_are_assembled_before_decoding() -> None:
    state = started()
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/x/y"), ("x-long", "v" * 300)])
    a, b, c = block[:5], block[5:40], block[40:]
    f1 = one(HeadersFrame(1, a, flags=["END_STREAM"]).serialize(), REQ, state)
    assert f1.headers is None and not f1.end_stream and state.pending[0] is not None
    f2 = one(ContinuationFrame(1, b).serialize(), REQ, state)
    assert f2.headers is None and not f2.end_stream
    f3 = one(ContinuationFrame(1, c, flags=["END_HEADERS"]).serialize(), REQ, state)
    assert f3.kind == 9 and f3.end_stream and f3.complete
    assert f3.headers == ((":method", "GET"), (":path", "/x/y"), ("x-long", "v" * 300))
    assert state.pending[0] is None


def test_continuation_interrupted_loses_the_block_and_desyncs_hpack() -> None:
    state = started()
    block = Encoder().encode([(":method", "GET"), (":path", "/a")])
    one(HeadersFrame(1, block[:2]).serialize(), REQ, state)
    one(PingFrame(0, b"12345678").serialize(), REQ, state)
    assert state.pending[0] is None and not state.hpack[0].synced


def test_control_frames() -> None:
    f = one(PriorityFrame(3, depends_on=1, stream_weight=20).serialize())
    assert (f.kind, f.stream_id, f.length) == (2, 3, 5)
    f = one(RstStreamFrame(3, error_code=8).serialize())
    assert (f.kind, f.stream_id, f.error_code) == (3, 3, 8)
    state = started()
    f = one(SettingsFrame(0, settings={1: 65536, 5: 32768}).serialize(), REQ, state)
    assert (f.kind, f.length) == (4, 12)
    assert state.hpack[1].max_allowed == 65536 and state.max_frame[1] == 32768 and state.max_frame[0] == 16384
    f = one(SettingsFrame(0, flags=["ACK"]).serialize(), RESP)
    assert (f.kind, f.flags, f.length) == (4, 1, 0)
    f = one(PingFrame(0, b"abcdefgh", flags=["ACK"]).serialize(), RESP)
    assert (f.kind, f.flags) == (6, 1)
    f = one(GoAwayFrame(0, last_stream_id=7, error_code=11, additional_data=b"calm").serialize(), RESP)
    assert (f.kind, f.promised_id, f.error_code) == (7, 7, 11)
    f = one(WindowUpdateFrame(0, window_increment=1000).serialize(), RESP)
    assert (f.kind, f.stream_id) == (8, 0)


def test_push_promise_carries_a_header_block() -> None:
    block = Encoder().encode([(":method", "GET"), (":path", "/style.css"), (":scheme", "https")])
    raw = PushPromiseFrame(1, promised_stream_id=2, data=block, flags=["END_HEADERS", "PADDED"], pad_length=3)
    f = one(raw.serialize(), RESP)
    assert (f.kind, f.stream_id, f.promised_id) == (5, 1, 2)
    assert f.headers == ((":method", "GET"), (":path", "/style.css"), (":scheme", "https"))


def test_unknown_frame_type_is_skipped() -> None:
    raw = (5).to_bytes(3, "big") + bytes([0xFA, 0xFF]) + (1).to_bytes(4, "big") + b"hello"
    f = one(raw)
    assert (f.kind, f.stream_id, f.length) == (0xFA, 1, 5)


def test_need_data_until_complete_and_does_not_mutate() -> None:
    state = started()
    raw = HeadersFrame(1, Encoder().encode([(":method", "GET"), (":path", "/")]), flags=["END_HEADERS"])
    data = raw.serialize()
    for k in range(len(data)):
        assert parse_frame(memoryview(data[:k]), REQ, state) is NEED_DATA
    assert state.cursors[0] == {} and state.hpack[0].cache == {}
    assert isinstance(parse_frame(memoryview(data), REQ, state), Parsed)


def test_structurally_impossible_frames_are_invalid() -> None:
    bad = [
        PingFrame(0, b"12345678").serialize()[:2] + b"\x07" + PingFrame(0).serialize()[3:-1],  # length 7
        (3).to_bytes(3, "big") + b"\x00\x00" + (0).to_bytes(4, "big") + b"abc",  # DATA on stream 0
        (4).to_bytes(3, "big") + b"\x03\x00" + (0).to_bytes(4, "big") + b"abcd",  # RST on stream 0
        (7).to_bytes(3, "big") + b"\x04\x00" + (0).to_bytes(4, "big") + b"1234567",  # SETTINGS 7 bytes
        (20000).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"),  # beyond the 16 KiB default
    ]
    for raw in bad:
        assert isinstance(parse_frame(memoryview(raw), REQ, started()), Invalid), raw
    # A padding length beyond the payload.
    raw = (3).to_bytes(3, "big") + b"\x00\x08" + (1).to_bytes(4, "big") + b"\x09ab"
    assert isinstance(parse_frame(memoryview(raw), REQ, started()), Invalid)


def _valid_stream() -> bytes:
    enc = Encoder()
    return (
        HeadersFrame(1, enc.encode([(":method", "GET"), (":path", "/")]), flags=["END_HEADERS"]).serialize()
        + DataFrame(1, b"x" * 40, flags=["END_STREAM"]).serialize()
        + WindowUpdateFrame(0, window_increment=40).serialize()
    )


def test_find_boundary_after_garbage_and_inside_a_frame() -> None:
    stream = _valid_stream()
    junk = bytes([0xFF, 0x13, 0x37, 0x42, 0x99, 0xAB, 0xCD, 0xEF, 0x01, 0x80, 0x80])
    assert find_boundary(memoryview(junk + stream), REQ, 0) == len(junk)
    assert find_boundary(memoryview(stream), REQ, 0) == 0
    first = 9 + stream[2]
    # From inside the first frame the next plausible header is the DATA frame.
    assert find_boundary(memoryview(stream), REQ, 1) == first
    assert find_boundary(memoryview(b"\x00" * 64), REQ, 0) is None  # zero fill is no frame
    assert find_boundary(memoryview(b"GET / HTTP/1.1\r\n" + PREFACE), REQ, 0) == 16
    rnd = random.Random(7)
    hits = sum(find_boundary(memoryview(rnd.randbytes(4096)), REQ, 0) is not None for _ in range(50))
    assert hits <= 5


def test_detect_is_strict() -> None:
    assert detect(PREFACE + SettingsFrame(0).serialize(), REQ)
    assert detect(SettingsFrame(0, settings={4: 65535}).serialize(), RESP)
    assert detect(_valid_stream(), REQ)  # joined mid-stream
    assert not detect(PREFACE, RESP)
    not_h2 = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        bytes.fromhex("160301020001000200030300") + b"\x00" * 20,  # TLS ClientHello record
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",  # Redis
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # PostgreSQL SSLRequest
        b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00x\x00\x00",  # PostgreSQL startup
        b"\x00\x00\x00\x1f\x00\x12\x00\x03\x00\x00\x00\x01\x00\x07console\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00",  # Kafka-ish
    ]
    for data in not_h2:
        assert not detect(data, REQ), data
        assert not detect(data, RESP), data
    rnd = random.Random(3)
    assert not any(detect(rnd.randbytes(200), d) for _ in range(300) for d in (REQ, RESP))


def test_large_frames_after_the_senders_settings_ack_before_the_peers_settings_are_parsed() -> None:
    """Each direction is parsed in turn: a client's ACK vouches for the server SETTINGS not yet parsed."""
    state = started()
    one(SettingsFrame(0).serialize(), REQ, state)
    big = DataFrame(1, b"x" * 100_000).serialize()
    assert parse_frame(memoryview(big), REQ, state) == Invalid("frame too large")  # no ACK yet: default
    one(SettingsFrame(0, flags=["ACK"]).serialize(), REQ, state)
    assert one(big, REQ, state).data_len == 100_000
    # The server's SETTINGS, parsed later, give the exact limit again.
    one(SettingsFrame(0, settings={5: 131072}).serialize(), RESP, state)
    assert state.max_frame[0] == 131072
    too_big = DataFrame(1, b"x" * 140_000).serialize()
    assert parse_frame(memoryview(too_big), REQ, state) == Invalid("frame too large")
    # Without MAX_FRAME_SIZE the default holds; a later ACK does not widen what is now known.
    state = started()
    one(SettingsFrame(0, flags=["ACK"]).serialize(), REQ, state)
    one(SettingsFrame(0).serialize(), RESP, state)
    one(SettingsFrame(0, flags=["ACK"]).serialize(), REQ, state)
    assert state.max_frame[0] == 16384


def test_resync_skips_the_zero_filled_bytes_a_capture_did_not_copy() -> None:
    """Bytes past the capture's copy budget are zero-filled: 8 zeros and the next byte read as an empty
    DATA frame, which resync took for a boundary and then misparsed the real frames after it."""
    frames = (
        DataFrame(3, b"payload").serialize()
        + HeadersFrame(3, b"\x88", flags=["END_STREAM", "END_HEADERS"]).serialize()
    )
    for zeros in (8, 64, 4096):
        buf = memoryview(bytes(zeros) + frames)
        assert find_boundary(buf, RESP, 1) == zeros, zeros
    # A zero run that ends in a stream id: 8 zeros then 0x03 was "DATA, length 0, stream 3".
    buf = memoryview(bytes(64) + b"\x03" + bytes(7) + frames)
    assert find_boundary(buf, RESP, 1) == 72
