"""HTTP/2 framing: detect, parse_frame (one frame per call, header blocks decoded), find_boundary."""

from __future__ import annotations

import re
from struct import Struct

from protocols.base import NEED_DATA, Direction, Invalid, Parsed, ParseResult
from protocols.http2.types import (
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    GOAWAY,
    HEADERS,
    MAX_CURSORS,
    MAX_FRAME_LEN,
    MAX_HEADER_BLOCK,
    PING,
    PREFACE,
    PREFACE_KIND,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Cursor,
    H2Frame,
    H2State,
)

_HDR = Struct(">HBBBI")  # length high 16 bits, length low 8 bits, type, flags, stream id
_U32 = Struct(">I")
_SETTING = Struct(">HI")
_PREFACE_FRAME = H2Frame(PREFACE_KIND, 0, 0, 0)
_SETTINGS_HEADER_TABLE_SIZE = 1
DEFAULT_MAX_FRAME = 16384
_SETTINGS_MAX_FRAME_SIZE = 5
_STREAM_SPAN = 1 << 16  # stream ids seen together mid-stream lie within this (concurrent streams)

# Allowed flags per known frame type (RFC 9113 section 6); unknown types allow anything.
_FLAGS = {
    DATA: FLAG_END_STREAM | FLAG_PADDED,
    HEADERS: FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
    PRIORITY: 0,
    RST_STREAM: 0,
    SETTINGS: FLAG_ACK,
    PUSH_PROMISE: FLAG_END_HEADERS | FLAG_PADDED,
    PING: FLAG_ACK,
    GOAWAY: 0,
    WINDOW_UPDATE: 0,
    CONTINUATION: FLAG_END_HEADERS,
}
_ON_STREAM = (DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION)
_ON_CONNECTION = (SETTINGS, PING, GOAWAY)
_FIXED_LEN = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}
_RESYNC_LEN = 0x40FF  # a resync candidate's length must fit the default 16 KiB max frame (plus slack)
# Candidate headers for resync: length < _RESYNC_LEN, a known type, reserved bit clear, not all zeros.
_PREFACE = re.compile(re.escape(PREFACE))
_CANDIDATE = re.compile(rb"(?=\x00[\x00-\x40][\x00-\xff][\x00-\x09][\x00-\xff][\x00-\x7f])(?!\x00{9})", re.S)


def _idx(direction: Direction) -> int:
    return 0 if direction is Direction.REQUEST else 1


def _header_ok(kind: int, flags: int, stream_id: int, length: int, direction: Direction) -> bool:
    """Could these 9 bytes start a frame travelling in `direction`? (structure, not state)"""
    allowed = _FLAGS.get(kind)
    if allowed is None or flags & ~allowed:
        return False
    if stream_id == 0:
        if kind in _ON_STREAM:
            return False
    elif kind in _ON_CONNECTION:
        return False
    fixed = _FIXED_LEN.get(kind)
    if fixed is not None and length != fixed:
        return False
    if kind == SETTINGS and (length % 6 or (flags & FLAG_ACK and length)):
        return False
    if kind == GOAWAY and length < 8:
        return False
    # Padding takes a length byte and a priority block 5 bytes (RFC 9113 6.1, 6.2): shorter is malformed.
    if length < (flags & FLAG_PADDED and 1) + (kind == HEADERS and flags & FLAG_PRIORITY and 5):
        return False
    # Clients open odd streams; HEADERS/DATA on even ones only come from a server push.
    return not (
        direction is Direction.REQUEST
        and (kind == PUSH_PROMISE or (kind in (DATA, HEADERS, CONTINUATION) and not stream_id & 1))
    )


def _plausible_at(buf: memoryview, i: int, direction: Direction, end: int) -> int | None:
    """Length of the frame at i if its header is plausible, else None."""
    hi, lo, kind, flags, sid = _HDR.unpack_from(buf, i)
    if sid & 0x80000000:
        return None
    length: int = (hi << 8) | lo
    if not _header_ok(kind, flags, sid, length, direction):
        return None
    return length


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    """The next offset >= start where a plausible frame header (or the client preface) begins.

    Scans the view itself, candidate by candidate: the cost is the distance to the boundary, not the
    buffer (the framing loop calls this after every rejected frame)."""
    n = len(buf)
    start = max(start, 0)
    if start >= n:
        return None
    found: int | None = None
    for match in _CANDIDATE.finditer(buf, start):
        i = match.start()
        if i + 9 > n:
            break
        length = _plausible_at(buf, i, direction, n)
        if length is None or (length == 0 and buf[i + 3] == DATA and not buf[i + 4]):
            continue  # an empty DATA frame without flags says nothing: it is what zero-filled bytes read as
        nxt = i + 9 + length
        # Prefer a chain of two headers; at the end of the buffer one plausible header must do.
        if nxt + 9 <= n and _plausible_at(buf, nxt, direction, n) is None:
            continue
        found = i
        break
    if direction is Direction.REQUEST:  # the client preface, if it comes first
        end = n if found is None else found + len(PREFACE) - 1
        preface = _PREFACE.search(buf, start, end)
        if preface is not None:
            return preface.start()
    return found


def detect(first: bytes, direction: Direction) -> bool:
    """Client preface, server SETTINGS first, or (joined mid-stream) a chain of plausible frames."""
    if direction is Direction.REQUEST and len(first) >= 8 and PREFACE.startswith(first[:24]):
        return True
    buf = memoryview(first)
    n = len(buf)
    i = frames = 0
    kinds: list[int] = []
    sids: list[int] = []
    while i + 9 <= n and frames < 8:
        length = _plausible_at(buf, i, direction, n)
        # Without the peer's SETTINGS only the default maximum frame size is a safe bound.
        if length is None or length > DEFAULT_MAX_FRAME:
            return False
        kinds.append(buf[i + 3])
        sid = _U32.unpack_from(buf, i + 5)[0]
        if sid:
            sids.append(sid)
        frames += 1
        i += 9 + length
    if not kinds:
        return False
    if direction is Direction.RESPONSE and kinds[0] == SETTINGS:  # the server preface
        return True
    # Zero-rich binary protocols chain DATA headers by chance: ask for a frame type with more structure,
    # and for stream ids as close together as a connection's concurrently open streams are.
    if all(k == DATA for k in kinds) or (sids and max(sids) - min(sids) > _STREAM_SPAN):
        return False
    # One frame alone must be a HEADERS or SETTINGS that fills the buffer exactly.
    return frames >= 2 or (i == n and kinds[0] in (HEADERS, SETTINGS) and n > 9)


# -- parse_frame ---------------------------------------------------------------------------------


def parse_frame(buf: memoryview, direction: Direction, state: H2State) -> ParseResult:
    n = len(buf)
    d = 0 if direction is Direction.REQUEST else 1
    if d == 0 and not state.started[0]:
        head = bytes(buf[:24])
        if PREFACE.startswith(head):
            if len(head) < 24:
                return NEED_DATA
            state.started[0] = state.opened = True
            state.max_frame[0] = state.max_frame[1] = DEFAULT_MAX_FRAME  # both sides start at the default
            return Parsed(_PREFACE_FRAME, 24)
    if n < 9:
        return NEED_DATA
    hi, lo, kind, flags, sid = _HDR.unpack_from(buf, 0)
    length = (hi << 8) | lo
    sid &= 0x7FFFFFFF  # the reserved bit is ignored on receipt
    if length > state.max_frame[d]:
        return Invalid("frame too large")
    allowed = _FLAGS.get(kind)
    if allowed is not None and not _header_ok(kind, flags & allowed, sid, length, direction):
        return Invalid("malformed frame header")
    if n < 9 + length:
        return NEED_DATA
    if not state.started[d]:
        _first_frame(state, d, kind)
    pending = state.pending[d]
    if pending is not None and kind != CONTINUATION:
        _lose_block(state, d)  # RFC 9113 6.10: nothing may interleave a header block
    payload = buf[9 : 9 + length]
    if kind == DATA:
        frame = _data(payload, flags, sid, length, state.cursors[d])
    elif kind in (HEADERS, PUSH_PROMISE):
        frame = _block_start(payload, kind, flags, sid, length, state, d)
    elif kind == CONTINUATION:
        frame = _continuation(payload, flags, sid, length, state, d)
    elif kind == RST_STREAM:
        frame = H2Frame(kind, sid, flags, length, error_code=_U32.unpack_from(payload, 0)[0])
    elif kind == SETTINGS:
        _settings(payload, flags, state, d)
        frame = H2Frame(kind, sid, flags, length)
    elif kind == GOAWAY:
        last = _U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        code = _U32.unpack_from(payload, 4)[0]
        frame = H2Frame(kind, sid, flags, length, error_code=code, promised_id=last)
    else:  # PRIORITY, PING, WINDOW_UPDATE and unknown types carry nothing a record needs
        frame = H2Frame(kind, sid, flags, length)
    if frame is None:
        return Invalid("bad padding")
    return Parsed(frame, 9 + length)


def _first_frame(state: H2State, d: int, kind: int) -> None:
    """A connection not opened by the client preface (or server SETTINGS) was joined mid-stream."""
    state.started[d] = True
    if d == 0:
        state.hpack[0].desync()
        state.hpack[1].desync()
        state.started[1] = True
    elif kind != SETTINGS:
        state.hpack[1].desync()


def _unpad(payload: memoryview, flags: int) -> memoryview | None:
    if not flags & FLAG_PADDED:
        return payload
    if not payload:
        return None
    pad = payload[0]
    if pad >= len(payload):
        return None
    return payload[1 : len(payload) - pad]


def _data(
    payload: memoryview, flags: int, sid: int, length: int, cursors: dict[int, Cursor]
) -> H2Frame | None:
    body = _unpad(payload, flags)
    if body is None:
        return None
    end = bool(flags & FLAG_END_STREAM)
    cursor = cursors.get(sid)
    count = -1
    total = 0
    if cursor is not None:
        sizes = _scan_messages(body, cursor)
        if sizes is None:
            del cursors[sid]  # not gRPC framing after all: stop counting this stream
        else:
            count = len(sizes)
            total = sum(sizes)
        if end:
            cursors.pop(sid, None)
    return H2Frame(DATA, sid, flags, length, end, data_len=len(body), msg_count=count, msg_bytes=total)


def _scan_messages(body: memoryview, cursor: Cursor) -> list[int] | None:
    """Advance gRPC's length-prefixed framing over one DATA payload; lengths of messages started."""
    sizes: list[int] = []
    n = len(body)
    pos = 0
    if cursor.partial:
        need = 5 - len(cursor.partial)
        head = cursor.partial + bytes(body[:need])
        pos = min(need, n)
        if len(head) < 5:
            cursor.partial = head
            return sizes
        if head[0] > 1:
            return None
        cursor.partial = b""
        cursor.skip = _U32.unpack_from(head, 1)[0]
        sizes.append(cursor.skip)
    while True:
        if cursor.skip:
            step = min(cursor.skip, n - pos)
            pos += step
            cursor.skip -= step
        if pos >= n:
            return sizes
        if n - pos < 5:
            cursor.partial = bytes(body[pos:])
            return sizes
        if body[pos] > 1:  # the compressed flag is 0 or 1
            return None
        size = _U32.unpack_from(body, pos + 1)[0]
        sizes.append(size)
        cursor.skip = size
        pos += 5


def _block_start(
    payload: memoryview, kind: int, flags: int, sid: int, length: int, state: H2State, d: int
) -> H2Frame | None:
    body = _unpad(payload, flags)
    if body is None:
        return None
    promised = 0
    if kind == PUSH_PROMISE:
        if len(body) < 4:
            return None
        promised = _U32.unpack_from(body, 0)[0] & 0x7FFFFFFF
        body = body[4:]
    elif flags & FLAG_PRIORITY:
        if len(body) < 5:
            return None
        body = body[5:]
    end = bool(flags & FLAG_END_STREAM)
    if kind == HEADERS:
        cursors = state.cursors[d]
        if sid not in cursors and not end and len(cursors) < MAX_CURSORS:
            cursors[sid] = Cursor()
    if not flags & FLAG_END_HEADERS:
        state.pending[d] = (kind, sid, end, promised, bytearray(body))
        return H2Frame(kind, sid, flags, length, promised_id=promised, block_start=True)
    headers, complete = state.hpack[d].decode(bytes(body))
    if end:
        state.cursors[d].pop(sid, None)
    return H2Frame(kind, sid, flags, length, end, headers, complete, promised_id=promised, block_start=True)


def _continuation(payload: memoryview, flags: int, sid: int, length: int, state: H2State, d: int) -> H2Frame:
    pending = state.pending[d]
    if pending is None or pending[1] != sid:
        _lose_block(state, d)  # a block whose start we never saw: its table updates are lost
        return H2Frame(CONTINUATION, sid, flags, length, complete=False)
    _, _, end, promised, block = pending
    if len(block) + length > MAX_HEADER_BLOCK:
        _lose_block(state, d)
        return H2Frame(CONTINUATION, sid, flags, length, end, (), False, promised_id=promised)
    block += payload
    if not flags & FLAG_END_HEADERS:
        return H2Frame(CONTINUATION, sid, flags, length, promised_id=promised)
    state.pending[d] = None
    headers, complete = state.hpack[d].decode(bytes(block))
    if end:
        state.cursors[d].pop(sid, None)
    return H2Frame(CONTINUATION, sid, flags, length, end, headers, complete, promised_id=promised)


def _lose_block(state: H2State, d: int) -> None:
    state.pending[d] = None
    state.hpack[d].desync()


def _settings(payload: memoryview, flags: int, state: H2State, d: int) -> None:
    """The sender's settings govern what the other direction may send (its HPACK table, frame size)."""
    if flags & FLAG_ACK:
        if not state.governed[d]:
            # The sender has the peer's SETTINGS, which this side has not parsed yet (each direction is
            # parsed in turn): its frames may be as large as the peer allowed, unknown until then.
            state.max_frame[d] = MAX_FRAME_LEN
        return
    other = 1 - d
    first = state.opened and not state.governed[other]
    state.governed[other] = True
    if first:  # the value the sender's peer really uses from now on (default unless raised here)
        state.max_frame[other] = DEFAULT_MAX_FRAME
    for off in range(0, len(payload) - 5, 6):
        ident, value = _SETTING.unpack_from(payload, off)
        if ident == _SETTINGS_HEADER_TABLE_SIZE:
            state.hpack[other].set_max_allowed(value)
        elif ident == _SETTINGS_MAX_FRAME_SIZE and DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LEN:
            # Only ever raised: frames sent before a lowering SETTINGS arrived may still be larger.
            state.max_frame[other] = max(state.max_frame[other], value)
