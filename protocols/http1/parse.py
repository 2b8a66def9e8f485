"""HTTP/1.x message framing: detect, parse_frame, find_boundary (RFC 9112), sans-IO.

Header blocks are cut with `bytes.find` and `split`; bodies are skipped by length (Content-Length,
chunk sizes) without looking at their bytes, so zero-filled (uncaptured) body bytes are harmless. A body
not yet all in the buffer is never waited for: parse_frame returns Skip and the framing loop passes it
as it arrives (a chunked one chunk by chunk, the chunk-size lines parsed, the data skipped).
"""

from __future__ import annotations

import re

from protocols.base import NEED_DATA, Direction, Invalid, Parsed, ParseResult, Skip
from protocols.http_semconv import b3_as_traceparent

from .types import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_TRAILERS,
    Chunks,
    Http1State,
    Passthrough,
    Request,
    Response,
)

KNOWN_METHODS = (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    # WebDAV (RFC 4918, 3253, 3648, 3744, 4437, 5323, 5842, 4791)
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT",
    "MKCALENDAR", "ACL", "BIND", "UNBIND", "REBIND", "CHECKIN", "CHECKOUT", "UNCHECKOUT",
    "VERSION-CONTROL", "MKWORKSPACE", "UPDATE", "LABEL", "MERGE", "BASELINE-CONTROL", "MKACTIVITY",
    "ORDERPATCH", "MKREDIRECTREF", "UPDATEREDIRECTREF",
)  # fmt: skip
_METHODS = {m.encode(): m for m in KNOWN_METHODS}
_METHOD_PREFIXES = frozenset(m[:i] for m in _METHODS for i in range(len(m) + 1))
_MAX_METHOD = max(len(m) for m in _METHODS)
_METHODS_LONGEST_FIRST = sorted(_METHODS, key=len, reverse=True)
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_VISIBLE = bytes(range(0x21, 0x7F))
# Request-target bytes servers accept: visible ASCII, and raw octets >= 0x80 (recorded percent-encoded).
_TARGET = _VISIBLE + bytes(range(0x80, 0x100))
_all_visible = re.compile(rb"[\x21-\x7e]*").fullmatch  # a regex beats translate() on the hot path
# A control byte in a reason phrase (RFC 9112: HTAB, SP, VCHAR, obs-text only): e.g. zeros standing in
# for bytes the capture did not copy, which must not swallow the next response into this one's head.
_control_in_reason = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_HEX = b"0123456789abcdefABCDEF"
_MAX_START_LINE = 16 * 1024
_MAX_CHUNK_LINE = 4096
_FIRST_COPY = 4096
_CRLF = b"\r\n"
_REQUEST = Direction.REQUEST
_NO_PENDING = (-1, "", False)
_new = tuple.__new__  # builds the NamedTuple frames without their Python-level __new__

# Never kept, even as trailers (request/response headers are picked by name, so they never are).
_SENSITIVE = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key", b"api-key",
     b"x-auth-token", b"x-csrf-token", b"x-xsrf-token", b"proxy-authenticate", b"www-authenticate"}
)  # fmt: skip
_SENSITIVE_PARTS = (b"token", b"secret", b"password", b"apikey", b"api-key", b"api_key", b"auth", b"cookie")


class _Bad(Exception):
    """Internal: the bytes are not a valid HTTP/1 message; becomes Invalid(reason)."""


# ---------------------------------------------------------------------------------------- detect


def _target_state(method: bytes, target: bytes, final: bool) -> int:
    """0 impossible, 1 possible but not yet telling, 2 a plausible request-target (prefix)."""
    if target.translate(None, _TARGET):
        return 0
    first = target[:1]
    if first == b"/":
        return 2
    if first == b"*":
        return 2 if method == b"OPTIONS" and target == b"*" else (0 if final or len(target) > 1 else 1)
    if method == b"CONNECT":  # authority-form host:port
        if b":" in target:
            return 2
        return 0 if final else 1
    cut = target.find(b"://")  # absolute-form, as sent to proxies
    if cut > 0:
        return 2 if target[:cut].isalnum() else 0
    if final:
        return 0
    return 1 if target.rstrip(b":/").isalnum() else 0


def check_request_line(data: bytes) -> int:
    """0: cannot start a request; 1: could, too short to tell; 2: a (prefix of a) valid request line."""
    end = data.find(_CRLF, 0, _MAX_START_LINE)
    complete = end >= 0
    line = data[:end] if complete else data[:_MAX_START_LINE]
    sp1 = line.find(b" ", 0, _MAX_METHOD + 1)
    if sp1 < 0:
        if complete or len(line) > _MAX_METHOD:
            return 0
        return 1 if line in _METHOD_PREFIXES else 0
    method = line[:sp1]
    if method not in _METHODS:
        return 0
    sp2 = line.find(b" ", sp1 + 1)
    target = line[sp1 + 1 :] if sp2 < 0 else line[sp1 + 1 : sp2]
    final = complete or sp2 >= 0
    if not target:
        return 0 if final else 1
    state = _target_state(method, target, final)
    if state == 0 or sp2 < 0:
        return 0 if complete else state
    version = line[sp2 + 1 :]
    if complete or version.endswith(b"\r"):  # a lone CR: the version must be whole already
        return 2 if version.rstrip(b"\r") in _VERSIONS else 0
    return 2 if b"HTTP/1.1".startswith(version) or b"HTTP/1.0".startswith(version) else 0


def check_status_line(data: bytes) -> int:
    """0: cannot start a response; 1: could, too short to tell; 2: a (prefix of a) valid status line."""
    p = data[:13]
    if len(p) < 8:
        return 1 if b"HTTP/1.1".startswith(p) or b"HTTP/1.0".startswith(p) else 0
    if p[:8] not in _VERSIONS:
        return 0
    tail = p[8:]
    if not tail:
        return 2
    if tail[0] != 0x20:
        return 0
    digits = tail[1:4]
    if digits and not (digits.isdigit() and 0x31 <= digits[0] <= 0x35):
        return 0
    if len(tail) == 5 and tail[4] not in (0x20, 0x0D):
        return 0
    end = data.find(_CRLF, 0, 13)
    return 0 if 0 <= end < 12 else 2


def detect(first_bytes: bytes, direction: Direction) -> bool:
    """Strict, by content: a known-method request line or an `HTTP/1.x NNN` status line (or prefix)."""
    data = bytes(first_bytes[:_MAX_START_LINE])
    if direction is Direction.REQUEST:
        return check_request_line(data) == 2
    return check_status_line(data) == 2


# ---------------------------------------------------------------------------------- find_boundary


_REQUEST_VERSION = re.compile(rb" HTTP/1\.")
_STATUS_VERSION = re.compile(rb"HTTP/1\.")
_SHORT = 256  # bytes copied first around a candidate: start lines and request-targets are mostly short


def _start_line(buf: memoryview, pos: int) -> bytes:
    """What the check functions see of the line at `pos`: up to its CRLF, else _MAX_START_LINE bytes."""
    head = bytes(buf[pos : pos + _SHORT])
    return head if _CRLF in head else bytes(buf[pos : pos + _MAX_START_LINE])


def _request_start(buf: memoryview, start: int, at: int) -> int:
    """Offset of the known method before the request-target that ends at `at` (" HTTP/1."), or -1."""
    space = -1
    for back in (_SHORT, _MAX_START_LINE + _MAX_METHOD + 1):  # the space that ends the method
        lo = max(start, at - back)
        found = bytes(buf[lo:at]).rfind(b" ")  # request-targets hold no spaces
        if found >= 0 or lo == start:
            space = lo + found if found >= 0 else -1
            break
    if space <= start:
        return -1
    before = bytes(buf[max(start, space - _MAX_METHOD) : space])  # bodies need not end in CRLF
    for method in _METHODS_LONGEST_FIRST:
        if before.endswith(method):
            return space - len(method)
    return -1


def _last_line(buf: memoryview, start: int) -> int:
    """Offset of the last line's first byte (after the last LF at or past `start`), read from the end."""
    hi, size = len(buf), 4096
    while hi > start:
        lo = max(start, hi - size)
        lf = bytes(buf[lo:hi]).rfind(b"\n")
        if lf >= 0:
            return lo + lf + 1
        hi, size = lo, size * 4
    return start


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    """Offset >= start where a message in `direction` plausibly begins (anywhere: a body can end mid-line).

    Candidates are found in the view itself and only their own lines are copied: the cost is the distance
    to the boundary, not the buffer (the framing loop calls this after every rejected message)."""
    start = max(start, 0)
    n = len(buf)
    if start >= n:
        return None
    request = direction is Direction.REQUEST
    check = check_request_line if request else check_status_line
    if check(_start_line(buf, start)) == 2:
        return start
    if request:
        for match in _REQUEST_VERSION.finditer(buf, start + 1):
            first = _request_start(buf, start, match.start())
            if first >= 0 and check(_start_line(buf, first)) == 2:
                return first
    else:
        for match in _STATUS_VERSION.finditer(buf, start + 1):
            if check(bytes(buf[match.start() : match.start() + 16])) == 2:
                return match.start()
    # A message may be starting on the last, still incomplete line: keep it rather than drop it.
    tail = _last_line(buf, start)
    if tail < n and check(_start_line(buf, tail)) >= 1:
        return tail
    return None


# ------------------------------------------------------------------------------------ parse_frame


def _b3(single: bytes | None, trace_id: bytes | None, span_id: bytes | None) -> bytes | None:
    """A B3 context (the `b3` header, or the X-B3 pair) as traceparent bytes, None when invalid."""
    converted = b3_as_traceparent(*(v.decode("latin-1") if v else "" for v in (single, trace_id, span_id)))
    return converted.encode() if converted else None


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    """Lowercased name -> raw value (unstripped; the last of repeated fields wins)."""
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise _Bad("malformed header line")
        headers[name.lower()] = value
    return headers


def _content_length(value: bytes) -> int:
    value = value.strip(b" \t")
    if b"," in value:  # repeated identical values are allowed (RFC 9110 8.6)
        values = {v.strip() for v in value.split(b",")}
        if len(values) != 1:
            raise _Bad("conflicting content-length")
        value = values.pop()
    if not value.isdigit() or len(value) > 18:
        raise _Bad("bad content-length")
    return int(value)


def _is_chunked(transfer_encoding: bytes) -> bool:
    return transfer_encoding.rpartition(b",")[2].strip().lower() == b"chunked"


def _sensitive(name: bytes) -> bool:
    return name in _SENSITIVE or any(part in name for part in _SENSITIVE_PARTS)


def _line_at(buf: memoryview, head: bytes, pos: int, limit: int) -> bytes | None:
    """The line starting at `pos` without its CRLF; None when it has not fully arrived yet."""
    n = len(buf)
    if pos + limit <= len(head) or len(head) == n:
        end = head.find(_CRLF, pos, pos + limit)
        if end >= 0:
            return head[pos:end]
        if min(len(head), pos + limit) - pos >= limit:
            raise _Bad("line too long")
        return None
    window = bytes(buf[pos : pos + limit])
    end = window.find(_CRLF)
    if end >= 0:
        return window[:end]
    if len(window) >= limit:
        raise _Bad("line too long")
    return None


def _chunk_size(line: bytes) -> int:
    size = line.partition(b";")[0].strip(b" \t")
    if not size or len(size) > 15 or size.lstrip(_HEX):
        raise _Bad("bad chunk size")
    return int(size, 16)


def _trailer_fields(block: bytes) -> tuple[tuple[str, str], ...]:
    fields = _headers(block.split(_CRLF)) if block else {}
    if len(fields) > MAX_HEADERS:
        raise _Bad("too many trailers")
    kept = [(k.decode("latin-1"), _text(v)) for k, v in fields.items() if not _sensitive(k)]
    return tuple(kept[:MAX_TRAILERS])


Trailers = tuple[tuple[str, str], ...]


def _chunked(buf: memoryview, head: bytes, pos: int, body: int) -> tuple[int, int, int, Trailers | None]:
    """Walk a chunked body from the chunk-size line at `pos`: (offset reached, decoded size so far, bytes
    to skip there, trailers). With trailers (not None) the body ended at that offset; else the walk stopped
    at a chunk-size line not whole yet (skip 0) or at chunk data not all here (skip: the rest and CRLF).
    Malformed framing past `pos` stops the walk there too (the chunks before it stand); at `pos` it raises."""
    first = pos
    n = len(buf)
    while True:
        start = pos
        try:
            line = _line_at(buf, head, pos, _MAX_CHUNK_LINE)
            if line is None:
                return pos, body, 0, None
            size = _chunk_size(line)
            pos += len(line) + 2
            if size == 0:
                break
            if pos + size + 2 > n:
                return pos, body + size, size + 2, None
            pos += size
            if buf[pos : pos + 2] != _CRLF:
                raise _Bad("chunk not terminated by CRLF")
        except _Bad:
            if start == first:
                raise
            return start, body, 0, None  # the next call starts at the bad line and reports it
        body += size
        pos += 2
    if pos + 2 > n:
        return start, body, 0, None  # the last chunk's line is parsed again with its trailers
    if buf[pos : pos + 2] == _CRLF:
        return pos + 2, body, 0, ()
    window = bytes(buf[pos : pos + MAX_HEADER_BYTES])
    end = window.find(b"\r\n\r\n")
    if end < 0:
        if len(window) >= MAX_HEADER_BYTES:
            raise _Bad("trailers too large")
        return start, body, 0, None
    return pos + end + 4, body, 0, _trailer_fields(window[:end])


def _goes_on(frame: Request | Response, state: Http1State, request: bool, at: int, end: int) -> ParseResult:
    """The body goes on past the buffer from `at`: pass it rather than wait for it (and buffer it) - all
    of it when its length is known, else (chunked) up to `end`, then chunk by chunk."""
    if not frame.chunked:
        return Skip(frame, at, end - at)
    chunks = Chunks(frame, frame.body_size, end)
    if request:
        state.request_chunks = chunks
    else:
        state.response_chunks = chunks
    return Skip(frame, at, end - at, True)


def _next_chunks(buf: memoryview, state: Http1State, request: bool) -> ParseResult:
    """parse_frame inside a chunked body: the next chunk-size line (its data skipped), or its end."""
    chunks = state.request_chunks if request else state.response_chunks
    assert chunks is not None
    n = len(buf)
    try:
        at, body, skip, trailers = _chunked(buf, bytes(buf[:_FIRST_COPY]), 0, chunks.body)
    except _Bad as bad:
        _end_chunks(state, request)
        return Invalid(str(bad))
    if trailers is not None:
        _end_chunks(state, request)
        done = chunks.frame._replace(body_size=body, wire_size=chunks.wire + at)
        return Parsed(done._replace(trailers=trailers) if trailers else done, at)
    if at == 0 and skip == 0:  # the next chunk-size line is not whole yet
        frame = chunks.frame
        if type(frame) is not Response or not state.response_eof:  # requests: the same as `request`
            return NEED_DATA
        _end_chunks(state, request)  # the connection ended first: what arrived is the body
        return Parsed(frame._replace(body_size=body, wire_size=chunks.wire + n, cut=True), n)
    chunks.body = body
    chunks.wire += at + skip
    return Skip(chunks.frame._replace(body_size=body, wire_size=chunks.wire), at, skip, True)


def cut_frame(frame: Request | Response | Passthrough, seen: int) -> Request | Response | Passthrough:
    """The stream ended `seen` bytes into this message: its body size is what was transferred."""
    if isinstance(frame, Passthrough):
        return frame
    unseen = max(0, frame.wire_size - seen)
    cut = frame._replace(body_size=max(0, frame.body_size - unseen), wire_size=min(seen, frame.wire_size))
    return cut._replace(cut=True) if type(cut) is Response else cut


def _end_chunks(state: Http1State, request: bool) -> None:
    if request:
        state.request_chunks = None
    else:
        state.response_chunks = None


def _text(value: bytes | None) -> str:
    return value.strip(b" \t").decode("utf-8", "replace") if value else ""


def _incomplete(head: bytes, direction: Direction) -> ParseResult:
    """No end of headers yet: wait, unless the bytes so far already cannot be a message."""
    if len(head) >= MAX_HEADER_BYTES:
        return Invalid("headers too large")
    check = check_request_line if direction is Direction.REQUEST else check_status_line
    if check(head) == 0:
        return Invalid("bad start line")
    return NEED_DATA


def _parse_request(
    buf: memoryview, head: bytes, hend: int, lines: list[bytes], state: Http1State
) -> ParseResult:
    line = lines[0]
    sp1 = line.find(b" ")
    sp2 = line.rfind(b" ")
    if sp1 <= 0 or sp2 <= sp1 + 1:
        return Invalid("bad request line")
    method = _METHODS.get(line[:sp1])
    version = _VERSIONS.get(line[sp2 + 1 :])
    if method is None or version is None:
        return Invalid("bad request line")
    raw_target = line[sp1 + 1 : sp2]
    if _all_visible(raw_target):
        target = raw_target.decode("ascii")
    elif raw_target.translate(None, _TARGET):
        return Invalid("bad request target")
    else:  # raw octets >= 0x80 (UTF-8 or not), as servers accept them: the RFC 3986 form, lossless
        target = "".join(chr(b) if b < 0x80 else f"%{b:02X}" for b in raw_target)
    get = _headers(lines[1:]).get
    body_start = hend + 4
    te = get(b"transfer-encoding")
    chunked = False
    trailers: Trailers = ()
    at = 0  # > 0: the body goes on past the buffer from this offset (passed, not awaited)
    if te is not None:
        if not _is_chunked(te):
            return Invalid("request transfer-encoding not chunked")
        end, body, skip, got = _chunked(buf, head, body_start, 0)
        chunked = True
        if got is None:
            at, end = end, end + skip
        else:
            trailers = got
    else:
        cl = get(b"content-length")
        body = _content_length(cl) if cl is not None else 0  # no body: the common request
        end = body_start + body
        if end > len(buf):
            at = body_start
    connection = get(b"connection")
    upgrade = b""
    close = False
    if connection is not None:
        connection = connection.lower()
        close = b"close" in connection
        if b"upgrade" in connection:
            upgrade = get(b"upgrade", b"").strip(b" \t").lower()
    expect = get(b"expect")
    seq = state.next_seq
    state.next_seq = seq + 1
    state.pending.append((seq, method, bool(upgrade) or method == "CONNECT"))
    # _text inlined for the four kept fields: a function call per field is a large share of a small message.
    host = get(b"host")
    agent = get(b"user-agent")
    traceparent = get(b"traceparent")
    if traceparent is None and (get(b"b3") or get(b"x-b3-traceid")) is not None:
        traceparent = _b3(get(b"b3"), get(b"x-b3-traceid"), get(b"x-b3-spanid"))
    content_type = get(b"content-type")
    frame = _new(  # tuple.__new__ with every field: the NamedTuple __new__ wrapper costs as much again
        Request,
        (
            method,
            target,
            version,
            seq,
            host.strip(b" \t").decode("utf-8", "replace") if host else "",
            agent.strip(b" \t").decode("utf-8", "replace") if agent else "",
            traceparent.strip(b" \t").decode("utf-8", "replace") if traceparent else "",
            content_type.strip(b" \t").decode("utf-8", "replace") if content_type else "",
            body,
            end,
            chunked,
            expect is not None and b"100-continue" in expect.lower(),
            upgrade.decode("latin-1"),
            close,
            trailers,
        ),
    )
    if at:
        return _goes_on(frame, state, True, at, end)
    return Parsed(frame, end)


def _parse_response(
    buf: memoryview, head: bytes, hend: int, lines: list[bytes], state: Http1State
) -> ParseResult:
    line = lines[0]
    version = _VERSIONS.get(line[:8])
    code = line[9:12]
    if version is None or line[8:9] != b" " or not code.isdigit() or (len(line) > 12 and line[12] != 0x20):
        return Invalid("bad status line")
    if len(line) > 13 and _control_in_reason(line, 13):
        return Invalid("bad reason phrase")
    status = int(code)
    if status < 100:
        return Invalid("bad status code")
    get = _headers(lines[1:]).get
    pending = state.pending
    seq, method, _ = pending[0] if pending else _NO_PENDING
    body_start = hend + 4
    end = body_start
    body = 0
    chunked = close_delimited = cut = False
    trailers: Trailers = ()
    at = 0  # > 0: the body goes on past the buffer from this offset (passed, not awaited)
    tunnel = status == 101 or (method == "CONNECT" and 200 <= status < 300)
    if not (status < 200 or status == 204 or status == 304 or method == "HEAD" or tunnel):
        te = get(b"transfer-encoding")
        cl = get(b"content-length")
        if te is not None and _is_chunked(te):
            end, body, skip, got = _chunked(buf, head, body_start, 0)
            chunked = True
            if got is not None:
                trailers = got
            elif state.response_eof:  # the connection ended first: cut
                end, body, cut = len(buf), len(buf) - body_start, True
            else:
                at, end = end, end + skip
        elif te is None and cl is not None:
            digits = cl.strip(b" \t")  # one plain number, the common case, without a call
            body = int(digits) if digits.isdigit() and len(digits) <= 18 else _content_length(cl)
            end = body_start + body
            if end > len(buf):
                if not state.response_eof:
                    at = body_start
                else:
                    end, body, cut = len(buf), len(buf) - body_start, True  # the connection ended first
        elif state.response_eof:  # read until the connection closes: it has
            end = len(buf)
            body = end - body_start
            close_delimited = True
        else:
            return NEED_DATA
    if pending and (status >= 200 or status == 101):  # a final response answers the oldest request
        pending.popleft()
    upgrade = ""
    if tunnel:
        upgrade = "connect" if status != 101 else _text(get(b"upgrade")).lower() or "unknown"
        state.request_tunnel = state.response_tunnel = True
    content_type = get(b"content-type")
    connection = get(b"connection")
    frame = _new(  # tuple.__new__ with every field: the NamedTuple __new__ wrapper costs as much again
        Response,
        (
            status,
            line[13:].decode("utf-8", "replace"),
            version,
            seq,
            method,
            content_type.strip(b" \t").decode("utf-8", "replace") if content_type else "",
            body,
            end,
            chunked,
            close_delimited,
            upgrade,
            connection is not None and b"close" in connection.lower(),
            trailers,
            cut,
        ),
    )
    if at:
        return _goes_on(frame, state, False, at, end)
    return Parsed(frame, end)


def parse_frame(buf: memoryview, direction: Direction, state: Http1State) -> ParseResult:
    """One request or response from the head of `buf`; pushes/pops the pending-method FIFO on success."""
    n = len(buf)
    if n == 0:
        return NEED_DATA
    request = direction is _REQUEST
    if state.request_tunnel if request else state.response_tunnel:
        return Parsed(Passthrough(n), n)
    if state.request_chunks if request else state.response_chunks:
        return _next_chunks(buf, state, request)
    try:
        head = bytes(buf) if n <= _FIRST_COPY else bytes(buf[:_FIRST_COPY])  # do not copy pipelined followers
        if request:
            pending = state.pending
            if pending and pending[-1][2] and check_request_line(head) == 0:
                # Non-HTTP bytes after an unanswered Upgrade/CONNECT request: the switch happened.
                state.request_tunnel = True
                return Parsed(Passthrough(n), n)
        hend = head.find(b"\r\n\r\n")
        if hend < 0 and n > _FIRST_COPY:
            head = bytes(buf[:MAX_HEADER_BYTES])
            hend = head.find(b"\r\n\r\n", _FIRST_COPY - 3)
        if hend < 0:
            return _incomplete(head, direction)
        if hend + 4 > MAX_HEADER_BYTES:
            return Invalid("headers too large")
        lines = head[:hend].split(_CRLF)
        if len(lines) > MAX_HEADERS + 1:
            return Invalid("too many headers")
        if request:
            return _parse_request(buf, head, hend, lines, state)
        return _parse_response(buf, head, hend, lines, state)
    except _Bad as bad:
        return Invalid(str(bad))
    except Exception as exc:  # a parser bug must cost one message, never the pipeline
        return Invalid(f"internal error: {type(exc).__name__}")


# --------------------------------------------------------------------------------- state hooks


def on_gap(state: Http1State, direction: Direction) -> None:
    """Lost bytes: which requests the next responses answer is no longer known."""
    state.pending.clear()
    state.interim.clear()
    _end_chunks(state, direction is Direction.REQUEST)


def on_eof(state: Http1State, direction: Direction) -> None:
    """The direction's stream ended (connection closed, all bytes seen): close-delimited bodies end here."""
    if direction is Direction.RESPONSE:
        state.response_eof = True
