"""MySQL framing: one frame per wire packet (3-byte length, sequence id, payload), bounded copies."""

from __future__ import annotations

import codecs
import re
import zlib

from protocols.base import NEED_DATA, Direction, Invalid, Parsed, ParseResult
from protocols.mysql.types import (
    CLIENT_COMPRESS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_PLUGIN_AUTH_LENENC,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    COM_CHANGE_USER,
    COM_INIT_DB,
    COM_QUERY,
    COM_STMT_PREPARE,
    COMMAND_NAMES,
    K_COMMAND,
    K_COMPRESSED,
    K_CONTINUATION,
    K_GREETING,
    K_HANDSHAKE_RESPONSE,
    K_PACKET,
    K_SSL_REQUEST,
    MAX_PAYLOAD,
    Packet,
    State,
)

SQL_CAP = 4096  # bytes of SQL kept per command
ERR_CAP = 512  # bytes of an ERR packet kept (code, state, message)
OK_CAP = 64  # bytes of an OK/EOF/PREPARE_OK packet kept
ROW_CAP = 9  # bytes of any other response packet kept (a length-encoded column count at most)
INNER_CAP = SQL_CAP + 16  # decompressed bytes looked at in a compressed packet
NAME_CAP = 256  # user / database name bytes

_SQL_COMMANDS = (COM_QUERY, COM_STMT_PREPARE)
# Commands whose whole payload length is fixed: command byte (+ statement id / argument).
_FIXED_LENGTH = {
    0x01: 1,
    0x09: 1,
    0x0A: 1,
    0x0E: 1,
    0x1F: 1,
    0x08: (1, 2),
    0x19: 5,
    0x1A: 5,
    0x1C: 9,
    0x0C: 5,
    0x1B: 3,
    0x0D: 1,
    0x07: 2,
}
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_SQL_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ(/-# \t\r\n")
_REQ_CANDIDATE = re.compile(rb"(?=[\s\S]{3}\x00[\x01-\x1f])")
# A packet of length 0 never starts a response: skips zero-filled (uncopied) bytes in one regex step.
_RESP_CANDIDATE = re.compile(rb"(?=(?!\x00\x00\x00)[\s\S]{3}[\x00\x01])")
# Candidates examined per call: the framing loop drops what a failed scan covered, so it must cover
# a large result set's rows (about two candidates per row); 64k bounds the worst case near 0.1 s.
_SCAN_LIMIT = 1 << 16
_NAMED_COMMANDS = (0x04, 0x11)  # FIELD_LIST, CHANGE_USER (CREATE_DB/DROP_DB: gone since MySQL 8.0)
_NAMED_MAX = 4096  # a named command's packet: names and a wildcard, never large
_OK_MAX = 256  # an OK packet longer than this is no sign of MySQL in bytes of unknown origin
_new = tuple.__new__  # builds Packet NamedTuples without their Python-level __new__


def _plen(b: bytes | memoryview, i: int = 0) -> int:
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16)


def _utf8(b: bytes) -> bool:
    """Valid UTF-8, allowing a character cut at the end of the view."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(b, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _printable(b: bytes) -> bool:
    return all(c in _PRINTABLE or c >= 0x80 for c in b)


def _plausible_command(b: bytes) -> bool:
    """A seq-0 command packet header + the start of its payload (b is header + up to ~24 bytes)."""
    if len(b) < 5 or b[3] != 0:
        return False
    length = _plen(b)
    cmd = b[4]
    if length == 0 or cmd not in COMMAND_NAMES:
        return False
    nxt = 4 + length
    if len(b) >= nxt + 5 and (b[nxt + 3] != 0 or b[nxt + 4] not in COMMAND_NAMES):
        return False  # the next request packet, when in view, must be a command too
    fixed = _FIXED_LENGTH.get(cmd)
    if fixed is not None:
        return length in fixed if isinstance(fixed, tuple) else length == fixed
    body = b[5 : 4 + min(length, 24)]
    if cmd in _SQL_COMMANDS:
        if cmd == COM_QUERY and body[:2] == b"\x00\x01":  # CLIENT_QUERY_ATTRIBUTES, no attributes
            body = body[2:]
        return length >= 2 and len(body) > 0 and body[0] in _SQL_START and _printable(body)
    if cmd == COM_INIT_DB:
        return 2 <= length <= 1 + NAME_CAP and _printable(body)
    if cmd == 0x17:  # COM_STMT_EXECUTE: id(4) flags(1) iterations(4)=1
        return length >= 10 and (len(b) < 14 or b[10:14] == b"\x01\x00\x00\x00")
    if cmd in _NAMED_COMMANDS:  # a table, schema or user name comes first
        end = body.find(b"\x00")
        name = body if end < 0 else body[:end]
        return 2 <= length <= _NAMED_MAX and len(name) > 0 and _printable(name) and _utf8(name)
    # SEND_LONG_DATA, BINLOG_DUMP, CREATE_DB, DROP_DB: too weak or too rare a sign in unknown bytes.
    return False


def _plausible_handshake_response(b: bytes) -> bool:
    if len(b) < 36 or b[3] != 1:
        return False
    length = _plen(b)
    caps = int.from_bytes(b[4:8], "little")
    if length < 32 or length > 65536 or not caps & CLIENT_PROTOCOL_41:
        return False
    if b[13:36] != bytes(23) and b[13:32] != bytes(19):  # MariaDB puts extended caps in the last 4
        return False
    if length == 32:
        return bool(caps & CLIENT_SSL)
    end = b.find(b"\x00", 36, 36 + 1 + NAME_CAP)
    return end != -1 or (len(b) < 36 + NAME_CAP and _printable(b[36:]))


def _plausible_greeting(b: bytes) -> bool:
    if len(b) < 6 or b[3] != 0 or b[4] != 10:
        return False
    length = _plen(b)
    if length < 30 or length > 1024:
        return False
    end = b.find(b"\x00", 5, 5 + 64)
    return end > 5 and 0x30 <= b[5] <= 0x39 and _printable(b[5:end])


def _plausible_err(b: bytes) -> bool:
    length = _plen(b)
    if len(b) < 7 or b[4] != 0xFF or length < 3 or length > 0xFFFF:
        return False
    code = b[5] | (b[6] << 8)
    if not 1000 <= code < 20000:
        return False
    return len(b) < 8 or b[7] == 0x23 or _printable(b[7:12])  # '#' + SQLSTATE in protocol 4.1


def _plausible_first_response(b: bytes) -> bool:
    """OK / ERR / result-set header with seq 1 (the first packet answering a command)."""
    if len(b) < 5 or b[3] != 1:
        return False
    length = _plen(b)
    first = b[4]
    if first == 0xFF:
        return _plausible_err(b)
    if first == 0x00:
        # An OK answering a command is short; what follows it is the next answer (seq 1) or more results.
        if not 7 <= length <= _OK_MAX:
            return False
        nxt = 4 + length
        return len(b) < nxt + 5 or b[nxt + 3] in (1, 2)
    if 1 <= first <= 0xFA and length == 1:  # column count; the first column definition follows with seq 2
        if len(b) >= 9 and b[8] != 2:
            return False
        return len(b) < 13 or b[9:13] == b"\x03def"
    return False


def detect(buf: bytes, direction: Direction) -> bool:
    b = bytes(buf[:64])
    if direction is Direction.REQUEST:
        return _plausible_command(b) or _plausible_handshake_response(b) or _compressed_header(memoryview(b))
    return (
        _plausible_greeting(b)
        or _plausible_first_response(b)
        or (b[3:4] == b"\x00" and _plausible_err(b))
        or _zlib_packet(b)
    )


def _zlib_packet(b: bytes) -> bool:
    """A compressed-protocol packet holding a zlib stream (a response joined mid-connection)."""
    return (
        len(b) >= 9 and b[7] == 0x78 and b[8] in (0x01, 0x5E, 0x9C, 0xDA) and 2 <= _plen(b) < _plen(b, 4) + 64
    )


def _compressed_header(b: memoryview) -> bool:
    """Whether a REQUEST packet is really a compressed-protocol packet (seen mid-stream)."""
    if len(b) < 9 or b[3] != 0:
        return False
    clen = _plen(b)
    ulen = _plen(b, 4)
    if ulen == 0:  # stored uncompressed: the inner packet fills the compressed payload exactly
        return clen >= 5 and len(b) >= 11 and _plen(b, 7) + 4 <= clen and b[10] == 0
    return b[7] == 0x78 and b[8] in (0x01, 0x5E, 0x9C, 0xDA) and clen < ulen + 64


def _parse_compressed(buf: memoryview) -> ParseResult:
    if len(buf) < 7:
        return NEED_DATA
    clen = _plen(buf)
    size = 7 + clen
    if len(buf) < size:
        return NEED_DATA
    ulen = _plen(buf, 4)
    if ulen == 0:
        inner = bytes(buf[7 : 7 + min(clen, INNER_CAP)])
    else:
        try:
            inner = zlib.decompressobj().decompress(buf[7:size], INNER_CAP)
        except zlib.error:
            inner = b""
    if len(inner) >= 5:
        first = inner[4]
        cap = SQL_CAP + 1 if first in _SQL_COMMANDS else ERR_CAP
        frame = Packet(
            K_COMPRESSED, buf[3], clen, first, inner[4 : 4 + min(_plen(inner), cap)], inner_seq=inner[3]
        )
    else:
        frame = Packet(K_COMPRESSED, buf[3], clen, -1)
    return Parsed(frame, size)


def _handshake_response(payload: memoryview, seq: int, length: int) -> Packet:
    """Login: keeps capability flags, user and database; the auth response is skipped, never copied."""
    caps = int.from_bytes(payload[0:4], "little")
    if length == 32 and caps & CLIENT_SSL:
        return Packet(K_SSL_REQUEST, seq, length, payload[0], caps=caps)
    user_end = bytes(payload[32 : 32 + NAME_CAP + 1]).find(b"\x00")
    if user_end < 0:
        return Packet(K_HANDSHAKE_RESPONSE, seq, length, payload[0], caps=caps)
    user = bytes(payload[32 : 32 + user_end]).decode("utf-8", "replace")
    pos = 32 + user_end + 1
    database = ""
    if caps & CLIENT_CONNECT_WITH_DB and pos < length:
        if caps & CLIENT_PLUGIN_AUTH_LENENC:
            n, pos = _lenenc(payload, pos)
            pos += n
        elif caps & CLIENT_SECURE_CONNECTION:
            pos += 1 + payload[pos]
        else:
            end = bytes(payload[pos:]).find(b"\x00")
            pos = length if end < 0 else pos + end + 1
        if 0 <= pos < length:
            raw = bytes(payload[pos : pos + NAME_CAP + 1])
            end = raw.find(b"\x00")
            database = (raw if end < 0 else raw[:end]).decode("utf-8", "replace")
    return Packet(K_HANDSHAKE_RESPONSE, seq, length, payload[0], user=user, database=database, caps=caps)


def _lenenc(b: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of a length-encoded integer; (-1, pos) when cut off."""
    if pos >= len(b):
        return -1, pos
    first = b[pos]
    if first < 0xFB:
        return first, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first, 0)
    if width == 0 or pos + 1 + width > len(b):
        return -1, pos
    return int.from_bytes(b[pos + 1 : pos + 1 + width], "little"), pos + 1 + width


def _greeting(payload: memoryview, seq: int, length: int) -> Packet:
    raw = bytes(payload[: min(length, 256)])
    end = raw.find(b"\x00", 1)
    if end < 0:
        return Packet(K_GREETING, seq, length, 10, raw[1:65])
    version = raw[1:end]
    caps = 0
    p = end + 1 + 4 + 8 + 1  # thread id, auth-plugin-data part 1, filler
    if p + 2 <= len(raw):
        caps = raw[p] | (raw[p + 1] << 8)
    if p + 5 <= len(raw):
        caps |= (raw[p + 3] | (raw[p + 4] << 8)) << 16  # after charset, status flags
    return Packet(K_GREETING, seq, length, 10, version[:64], caps=caps)


def _command(payload: memoryview, length: int) -> Packet:
    cmd = payload[0]
    if cmd in _SQL_COMMANDS:
        start = 1
        if cmd == COM_QUERY and length >= 3 and payload[1] == 0 and payload[2] == 1:
            start = 3  # CLIENT_QUERY_ATTRIBUTES with zero attributes
        data = (
            b"\x03" + bytes(payload[start : start + SQL_CAP])
            if cmd == COM_QUERY
            else bytes(payload[: 1 + SQL_CAP])
        )
    elif cmd == COM_INIT_DB:
        data = bytes(payload[: 1 + NAME_CAP])
    elif cmd == COM_CHANGE_USER:
        data = b"\x11"  # its payload carries auth data: keep none of it
    else:
        data = bytes(payload[:5])  # statement id for the COM_STMT_* commands
    return _new(Packet, (K_COMMAND, 0, length, cmd, data, "", "", 0, -1))


def parse_frame(buf: memoryview, direction: Direction, state: State) -> ParseResult:
    request = direction is Direction.REQUEST
    if state.tls or state.compress_pending or state.req_compressed or state.resp_compressed:
        return _parse_special(buf, request, state)
    return _parse_plain(buf, request, state)


def _parse_special(buf: memoryview, request: bool, state: State) -> ParseResult:
    """TLS after an SSLRequest, and the compressed protocol: the rare paths, kept off the hot one."""
    if state.tls and not (not request and len(buf) > 4 and buf[3] == 0 and buf[4] == 10):
        return Parsed(Packet(K_PACKET, -1, len(buf), -1), len(buf))  # TLS records: opaque
    if request:
        if state.req_compressed:
            return _parse_compressed(buf)
        if state.compress_pending and len(buf) >= 4 and buf[3] == 0:
            # First command after a compressed login: everything from here on is compressed.
            result = _parse_compressed(buf)
            if isinstance(result, Parsed):
                state.req_compressed = True
            return result
    elif state.resp_compressed:
        return _parse_compressed(buf)
    return _parse_plain(buf, request, state)


def _parse_plain(buf: memoryview, request: bool, state: State) -> ParseResult:
    n = len(buf)
    if n < 4:
        return NEED_DATA
    length = buf[0] | (buf[1] << 8) | (buf[2] << 16)
    size = 4 + length
    if n < size:
        return NEED_DATA
    seq = buf[3]
    first = buf[4] if length else -1
    if request:
        if state.req_continues:
            state.req_continues = length == MAX_PAYLOAD
            return Parsed(Packet(K_CONTINUATION, seq, length, first), size)
        if seq == 0:
            if first not in COMMAND_NAMES:
                if not state.handshake_seen and _compressed_header(buf):
                    result = _parse_compressed(buf)
                    if isinstance(result, Parsed):  # compressed protocol seen mid-stream
                        state.req_compressed = state.resp_compressed = True
                    return result
                return Invalid("unknown command")
            state.req_continues = length == MAX_PAYLOAD
            return Parsed(_command(buf[4:size], length), size)
        state.req_continues = length == MAX_PAYLOAD
        if seq == 1 and length >= 32 and _plausible_handshake_response(bytes(buf[: 36 + NAME_CAP])):
            frame = _handshake_response(buf[4:size], seq, length)
            state.handshake_seen = True
            state.client_caps = frame.caps
            if frame.kind == K_SSL_REQUEST:
                state.tls = True
            elif frame.caps & CLIENT_COMPRESS:
                state.compress_pending = True
            return Parsed(frame, size)
        return Parsed(Packet(K_PACKET, seq, length, first), size)  # auth data or file data: not kept
    if state.resp_continues:
        state.resp_continues = length == MAX_PAYLOAD
        return Parsed(Packet(K_CONTINUATION, seq, length, first), size)
    if length == MAX_PAYLOAD:
        state.resp_continues = True
    if first == 0xFF:
        cap = ERR_CAP
    elif first == 0x00 or first == 0xFE:
        cap = OK_CAP
        if state.compress_pending and first == 0x00 and seq >= 2:
            state.resp_compressed = True  # the login OK: the server compresses from the next packet
    elif seq == 0 and first == 10:
        return Parsed(_greeting(buf[4:size], seq, length), size)
    else:
        cap = ROW_CAP
    # tuple.__new__ with every field: the NamedTuple __new__ wrapper costs as much again, once per packet.
    data = bytes(buf[4 : 4 + (length if length < cap else cap)])
    return Parsed(_new(Packet, (K_PACKET, seq, length, first, data, "", "", 0, -1)), size)


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    """Offset of the next plausible packet start: a command (REQUEST) or a response start."""
    request = direction is Direction.REQUEST
    pattern = _REQ_CANDIDATE if request else _RESP_CANDIDATE
    # Candidates in the view itself, only their heads copied: the cost is the distance to the boundary,
    # not the buffer (the framing loop calls this after every rejected packet).
    for n, m in enumerate(pattern.finditer(buf, max(start, 0))):
        if n >= _SCAN_LIMIT:
            return None
        i = m.start()
        head = bytes(buf[i : i + 64])
        if request:
            if _plausible_command(head):
                return i
        elif _plausible_greeting(head) or _plausible_first_response(head):
            return i
    return None
