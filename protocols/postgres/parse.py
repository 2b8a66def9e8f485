"""PostgreSQL framing: one frame per message (type byte, big-endian length), bounded copies.

Request bodies that carry secrets (PasswordMessage, SASLInitialResponse, SASLResponse) or values
(Bind parameters, CopyData, FunctionCall arguments) are never copied; neither is BackendKeyData.
"""

from __future__ import annotations

import re

from protocols.base import NEED_DATA, Direction, Invalid, Parsed, ParseResult, Skip
from protocols.postgres.types import (
    BACKEND,
    CANCEL_CODE,
    COMPLETE,
    DATA_ROW,
    ERR_CAP,
    ERROR,
    FIXED_REQUEST,
    FIXED_RESPONSE,
    FRONTEND,
    GSS_CODE,
    MAX_LEN,
    MAX_STARTUP,
    NAME_CAP,
    PROTOCOL_3,
    READY,
    ROW_FOLD,
    SKIP_OVER,
    SQL_CAP,
    SSL_CODE,
    T_CANCEL,
    T_GSS,
    T_OPAQUE,
    T_SSL,
    T_SSL_REPLY,
    T_STARTUP,
    TAG_CAP,
    B,
    C,
    D,
    E,
    Msg,
    P,
    Q,
    State,
)

_new = tuple.__new__  # builds Msg NamedTuples without their Python-level __new__
_AUTH = ord("R")
# Bytes of a request body kept (the rest is never copied): SQL, or the names before any value.
_REQ_CAP = {Q: SQL_CAP, P: NAME_CAP + 1 + SQL_CAP, B: 2 * NAME_CAP + 2, E: NAME_CAP + 5, D: NAME_CAP + 2,
            C: NAME_CAP + 2}  # fmt: skip
_RESP_CAP = {COMPLETE: TAG_CAP, ERROR: ERR_CAP, READY: 1, _AUTH: 4}
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D} | frozenset(range(0x80, 0x100))
_SQL_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ(/- \t\r\n")
_ERR_FIELDS = frozenset(b"SVCMDHPpqWstcdnFLR")
_AUTH_LENGTHS = {0: 8, 2: 8, 3: 8, 5: 12, 6: 8, 7: 8, 9: 8}  # fixed-size Authentication* messages
_REQ_CANDIDATE = re.compile(rb"(?=[QPBEDSHCXdcfFp]\x00)")
_RESP_CANDIDATE = re.compile(rb"(?=[RKSZTDCENA123nstIGHWdcVv]\x00)")
_SCAN_LIMIT = 1 << 16  # candidates examined per find_boundary call (linear, bounded)
_LOOK = 512  # bytes of a body examined by the plausibility checks


def _be32(b: bytes | memoryview, i: int) -> int:
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def _be16(b: bytes | memoryview, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def _cstrings(body: bytes) -> list[bytes]:
    return body.split(b"\x00")


def _startup_params(body: bytes) -> dict[bytes, bytes] | None:
    """key/value pairs of a StartupMessage body (after the version), or None when malformed."""
    if not body.endswith(b"\x00\x00") and body != b"\x00":
        return None
    parts = body[:-2].split(b"\x00") if len(body) > 1 else []
    if len(parts) % 2:
        return None
    params = dict(zip(parts[::2], parts[1::2], strict=True))
    if b"user" not in params or any(not k or not all(c in _PRINTABLE for c in k) for k in params):
        return None
    return params


# -- parse_frame -----------------------------------------------------------------------------------


_REQUEST = Direction.REQUEST
# Per type byte: None (not a message type in that direction) or (bytes of body kept, fixed length or 0).
_REQ_KIND: list[tuple[int, int] | None] = [
    (_REQ_CAP.get(t, 0), FIXED_REQUEST.get(t, 0)) if t in FRONTEND else None for t in range(256)
]
_RESP_KIND: list[tuple[int, int] | None] = [
    (_RESP_CAP.get(t, 0), FIXED_RESPONSE.get(t, 0)) if t in BACKEND else None for t in range(256)
]


def parse_frame(buf: memoryview, direction: Direction, state: State) -> ParseResult:
    if state.tls or state.ssl_pending:
        special = _special(buf, direction, state)
        if special is not None:
            return special
    n = len(buf)
    if n < 5:
        return NEED_DATA
    t = buf[0]
    request = direction is _REQUEST
    kind = (_REQ_KIND if request else _RESP_KIND)[t]
    if kind is None:
        if request and t == 0:
            return _untyped(buf, state)
        return Invalid("unknown message type")
    length = (buf[1] << 24) | (buf[2] << 16) | (buf[3] << 8) | buf[4]
    if length < 4 or length > MAX_LEN:
        return Invalid("bad length")
    cap, fixed = kind
    if fixed and length != fixed:
        return Invalid("bad length for type")
    size = 1 + length
    if n < size:
        body = length - 4
        keep = body if body < cap else cap
        if body > SKIP_OVER and n >= 5 + keep:  # a long body: keep its head, pass the rest unbuffered
            return Skip(_message(t, length, buf[5 : 5 + keep], request), 5 + keep, body - keep)
        return NEED_DATA
    if cap == 0:
        if t == DATA_ROW and not request:
            return _rows(buf, size)
        return Parsed(_new(Msg, (t, length, b"", 1)), size)
    body = length - 4
    if t in (B, ERROR):
        return Parsed(_message(t, length, buf[5 : 5 + (body if body < cap else cap)], request), size)
    return Parsed(_new(Msg, (t, length, bytes(buf[5 : 5 + (body if body < cap else cap)]), 1)), size)


def _special(buf: memoryview, direction: Direction, state: State) -> ParseResult | None:
    """After an SSLRequest/GSSENCRequest: its one-byte answer, and TLS records passed over (ciphertext
    the capture emitted; the plaintext, when the TLS probes see it, parses as usual). None: plain."""
    n = len(buf)
    t = buf[0]
    if state.gss:  # GSSAPI-encrypted: opaque to the end (its plaintext is never exposed to probes)
        return Parsed(Msg(T_OPAQUE, n), n)
    if 0x14 <= t <= 0x17 and n >= 2 and buf[1] == 3:  # a TLS record
        if n < 5:
            return NEED_DATA
        size = 5 + _be16(buf, 3)
        return Parsed(Msg(T_OPAQUE, size), size) if n >= size else NEED_DATA
    if direction is Direction.RESPONSE and state.ssl_pending and t in b"NSG":
        state.ssl_pending = False
        state.tls = t != 0x4E
        state.gss = t == 0x47
        return Parsed(Msg(T_SSL_REPLY, 1, bytes([t])), 1)
    return None


def _rows(buf: memoryview, size: int) -> Parsed[Msg]:
    """A DataRow and the complete DataRows right after it, as one frame (their values are not read)."""
    n, end, count = len(buf), size, 1
    while count < ROW_FOLD and end + 5 <= n and buf[end] == DATA_ROW:
        nxt = end + 1 + _be32(buf, end + 1)
        if nxt > n or nxt < end + 5:
            break
        end, count = nxt, count + 1
    return Parsed(_new(Msg, (DATA_ROW, size - 1, b"", count)), end)


def _message(t: int, length: int, body: memoryview, request: bool) -> Msg:
    if request:
        if t == B:  # portal and statement names only: the parameter values that follow are not kept
            raw = bytes(body)
            names = raw.split(b"\x00", 2)
            data = b"\x00".join(names[:2]) if len(names) >= 2 else b""
            return _new(Msg, (t, length, data, 1))
        return _new(Msg, (t, length, bytes(body), 1))
    if t == ERROR:
        return _new(Msg, (t, length, _sqlstate(bytes(body)), 1))
    return _new(Msg, (t, length, bytes(body), 1))


def _sqlstate(body: bytes) -> bytes:
    """The SQLSTATE (field 'C') of an ErrorResponse; b"" when not found in the kept bytes."""
    pos = 0
    while pos < len(body) and body[pos] != 0:
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            return b""
        if body[pos] == 0x43:  # 'C'
            code = body[pos + 1 : end]
            return code if len(code) == 5 and code.isalnum() else b""
        pos = end + 1
    return b""


def _untyped(buf: memoryview, state: State) -> ParseResult:
    """StartupMessage, SSLRequest, GSSENCRequest, CancelRequest: a length with no type byte."""
    if len(buf) < 8:
        return NEED_DATA
    length = _be32(buf, 0)
    code = _be32(buf, 4)
    if code in (SSL_CODE, GSS_CODE) and length == 8:
        state.ssl_pending = True
        return Parsed(Msg(T_SSL if code == SSL_CODE else T_GSS, 8), 8)
    if code == CANCEL_CODE and length == 16:
        return Parsed(Msg(T_CANCEL, 16), 16) if len(buf) >= 16 else NEED_DATA  # the secret key is not kept
    if code != PROTOCOL_3 or not 9 <= length <= MAX_STARTUP:
        return Invalid("bad startup message")
    if len(buf) < length:
        return NEED_DATA
    params = _startup_params(bytes(buf[8:length]))
    if params is None:
        return Invalid("bad startup message")
    user = params.get(b"user", b"")[:NAME_CAP]
    database = params.get(b"database", b"")[:NAME_CAP] or user  # the server's own default
    return Parsed(Msg(T_STARTUP, length, user + b"\x00" + database), length)


# -- detection and resynchronisation ---------------------------------------------------------------


def _header(b: bytes | memoryview, i: int, request: bool) -> int:
    """The length of a plausible message header at i, -1 if implausible, -2 if not in view."""
    if i + 5 > len(b):
        return -2
    t = b[i]
    if t not in (FRONTEND if request else BACKEND):
        return -1
    length = _be32(b, i + 1)
    if length < 4 or length > MAX_LEN:
        return -1
    fixed = (FIXED_REQUEST if request else FIXED_RESPONSE).get(t)
    if fixed is not None and length != fixed:
        return -1
    return length


def _cstr_ok(s: bytes) -> bool:
    return all(c in _PRINTABLE for c in s)


def _names_ok(body: bytes, count: int, complete: bool) -> int:
    """Position after `count` printable C strings at the start of body, or -1."""
    pos = 0
    for _ in range(count):
        end = body.find(b"\x00", pos)
        if end < 0:
            return -1 if complete or len(body) - pos > NAME_CAP else len(body)
        if end - pos > NAME_CAP or not _cstr_ok(body[pos:end]):
            return -1
        pos = end + 1
    return pos


def _body(t: int, body: bytes, length: int, request: bool) -> int:
    """0: not this message; 1: possible (a weak sign); 2: a strong sign. `body` may be cut short."""
    complete = len(body) == length - 4
    if request:
        if t == Q:
            if not body or body[0] not in _SQL_START:
                return 0
            if complete:
                return 2 if body.find(b"\x00") == len(body) - 1 and _cstr_ok(body[:-1]) else 0
            return 1 if _cstr_ok(body[:64]) else 0
        if t == P:
            pos = _names_ok(body, 1, complete)
            if pos < 0 or (pos < len(body) and body[pos] not in _SQL_START):
                return 0
            if not complete:
                return 1
            end = body.find(b"\x00", pos)
            if end < 0 or not _cstr_ok(body[pos:end]) or len(body) < end + 3:
                return 0
            return 2 if len(body) == end + 3 + 4 * _be16(body, end + 1) else 0
        if t == B:
            pos = _names_ok(body, 2, complete)
            return 0 if pos < 0 else 2 if complete and _bind_ok(body, pos) else 1 if not complete else 0
        if t == E:
            pos = _names_ok(body, 1, complete)
            return 2 if complete and pos >= 0 and len(body) == pos + 4 else 0 if complete else 1
        if t in (D, C):
            if not body or body[0] not in b"SP":
                return 0
            return 2 if complete and _names_ok(body[1:], 1, True) == len(body) - 1 else 0 if complete else 1
        return 1
    if t == READY:
        return 2 if body[:1] in (b"I", b"T", b"E") else 0
    if t == _AUTH:
        if len(body) < 4:
            return 1
        code = _be32(body, 0)
        expected = _AUTH_LENGTHS.get(code)
        if expected is not None:
            return 2 if length == expected else 0
        return 2 if code in (8, 10, 11, 12) else 0
    if t == DATA_ROW:
        return _data_row(body, complete)
    if t == COMPLETE:
        if not body or not 0x41 <= body[0] <= 0x5A:
            return 0
        return 2 if complete and body.find(b"\x00") == len(body) - 1 and _cstr_ok(body[:-1]) else 0
    if t in (ERROR, ord("N")):
        return _fields(body, complete)
    if t == ord("T"):
        return _row_description(body, complete)
    if t == ord("S"):
        return 2 if complete and _names_ok(body, 2, True) == len(body) else 0
    if t == ord("A"):
        return 2 if complete and _names_ok(body[4:], 2, True) == len(body) - 4 else 0
    if t in (ord("G"), ord("H"), ord("W")):
        return 2 if complete and body[:1] in (b"\x00", b"\x01") and len(body) == 3 + 2 * _be16(body, 1) else 0
    if t == ord("t"):
        return 2 if complete and len(body) >= 2 and len(body) == 2 + 4 * _be16(body, 0) else 0
    return 1


def _bind_ok(body: bytes, pos: int) -> bool:
    """The rest of a Bind after its names: formats, parameter values, result formats, exactly."""
    try:
        nf = _be16(body, pos)
        pos += 2 + 2 * nf
        nv = _be16(body, pos)
        pos += 2
        for _ in range(nv):
            vlen = _be32(body, pos)
            pos += 4 + (0 if vlen == 0xFFFFFFFF else vlen)
        nr = _be16(body, pos)
        return len(body) == pos + 2 + 2 * nr
    except IndexError:
        return False


def _data_row(body: bytes, complete: bool) -> int:
    if len(body) < 2:
        return 0 if complete else 1
    cols, pos = _be16(body, 0), 2
    for _ in range(cols):
        if pos + 4 > len(body):
            return 0 if complete else 1
        vlen = _be32(body, pos)
        if vlen == 0xFFFFFFFF:
            vlen = 0
        elif vlen > MAX_LEN:
            return 0
        pos += 4 + vlen
    return 2 if pos == len(body) and complete else 0 if complete or pos > len(body) else 1


def _row_description(body: bytes, complete: bool) -> int:
    if len(body) < 2:
        return 0 if complete else 1
    fields, pos = _be16(body, 0), 2
    for _ in range(fields):
        end = body.find(b"\x00", pos)
        if end < 0:
            return 0 if complete else 1
        if not _cstr_ok(body[pos:end]):
            return 0
        pos = end + 19
    return 2 if complete and pos == len(body) else 0 if complete or pos > len(body) else 1


def _fields(body: bytes, complete: bool) -> int:
    pos, seen = 0, 0
    while pos < len(body):
        if body[pos] == 0:
            return 2 if complete and pos == len(body) - 1 and seen >= 2 else 0
        if body[pos] not in _ERR_FIELDS:
            return 0
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            return 0 if complete else 1
        if not _cstr_ok(body[pos + 1 : end]):
            return 0
        pos, seen = end + 1, seen + 1
    return 0 if complete else 1


def _plausible(b: bytes | memoryview, i: int, request: bool) -> bool:
    """A message starts at i: a valid type byte, a sane length, a body that fits the type, and the
    next message (when in view) starts with a valid header too. Weak types need that next header."""
    length = _header(b, i, request)
    if length < 0:
        return False
    end = i + 1 + length
    body = bytes(b[i + 5 : min(end, i + 5 + _LOOK)])
    sign = _body(b[i], body, length, request)
    if sign == 0:
        return False
    following = _header(b, end, request)
    if following == -1:
        return False
    return following >= 0 or sign == 2


def _untyped_ok(b: bytes) -> bool:
    if len(b) < 8:
        return False
    length, code = _be32(b, 0), _be32(b, 4)
    if code in (SSL_CODE, GSS_CODE):
        return length == 8
    if code == CANCEL_CODE:
        return length == 16
    if code != PROTOCOL_3 or not 9 <= length <= MAX_STARTUP or len(b) < length:
        return False
    return _startup_params(b[8:length]) is not None


def detect(buf: bytes, direction: Direction) -> bool:
    b = bytes(buf[:4096])
    if len(b) < 5:
        return False
    if direction is Direction.REQUEST and b[0] == 0:
        return _untyped_ok(b)
    return _plausible(b, 0, direction is Direction.REQUEST)


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    """Offset of the next plausible message start (a strict check: see _plausible), or None."""
    request = direction is Direction.REQUEST
    pattern = _REQ_CANDIDATE if request else _RESP_CANDIDATE
    for k, m in enumerate(pattern.finditer(buf, max(start, 0))):
        if k >= _SCAN_LIMIT:
            return None
        i = m.start()
        if _plausible(buf, i, request):
            return i
    return None
