"""RESP framing (RESP2 and RESP3): one frame per command or reply, bodies over SKIP_MIN never buffered.

A message is scanned element by element with an explicit stack of open aggregates, so a reply of any
size or count costs bounded memory: a long bulk string is passed with `Skip`, a long aggregate is
released in pieces (`Skip(size=parsed, skip=0, more=True)`) and resumed from `State.partial`.

Detection is by content only. Commands: an array of bulk strings whose first element is a known
command. Inline commands (plain text lines, as telnet sends them) are accepted by `parse_frame` on a
connection already known to speak Redis; at detection only when the line's first word is a known
command shared with no other common text protocol (HTTP, SMTP, POP3, IMAP, FTP, memcached), see
INLINE_DETECT. Replies: every reply in view must parse, and the first must be complete.
"""

from __future__ import annotations

import re

from protocols.base import NEED_DATA, Direction, Invalid, Parsed, ParseResult, Skip
from protocols.redis.types import (
    ARRAY,
    ATTRIBUTE,
    BLOB_ERROR,
    BOOLEAN,
    BULK,
    COMMANDS,
    CONTAINERS,
    DOUBLE,
    ERROR,
    INTEGER,
    K_COMMAND,
    K_EMPTY,
    LINE_MAX,
    MAP,
    MAX_BULK,
    MAX_COUNT,
    MAX_DEPTH,
    NAME_MAX,
    NULL,
    NUMBERED,
    OTHER,
    PUSH_WORDS,
    REPLY_MODES,
    SIMPLE,
    SKIP_MIN,
    STATUS_WORDS,
    STREAM_MIN,
    SUBCOMMANDS,
    VERBATIM,
    WORD_MAX,
    Frame,
    Partial,
    State,
)

WINDOW = 2048  # bytes copied from the stream for a first parse attempt (grown x8 when a message is longer)
_BULKS = frozenset((BULK, VERBATIM, BLOB_ERROR))
_AGGREGATES = frozenset((ARRAY, MAP, ord("~"), ord(">"), ATTRIBUTE))
_PAIRS = frozenset((MAP, ATTRIBUTE))
_TYPES = frozenset(b"+-:$*_%~,(#=!>|")
_DOUBLE = re.compile(rb"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?inf|nan")
_BAD_LINE = re.compile(rb"[\x00\r\n]")
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_WORD = re.compile(rb"[A-Za-z][A-Za-z0-9_.|-]{0,63}")
_ERROR_PREFIX = re.compile(rb"[A-Z][A-Z0-9_-]{1,31}(?= |\Z)")
_RETRY = object()  # the copied window ended inside a message: copy more of the stream, parse again
_new = tuple.__new__  # builds Frame NamedTuples without their Python-level __new__

# Inline commands accepted at detection: known Redis commands that are not also a command of HTTP,
# SMTP (HELO, QUIT, ...), POP3 (USER, PASS, STAT, LIST, ...), FTP (TYPE, ...) or memcached (get, set,
# delete, incr, append, touch, ...), which all send text lines a word first.
_INLINE_DETECT = (
    "PING INFO HELLO SELECT DBSIZE KEYS EXISTS HGET HSET HGETALL HMSET LPUSH RPUSH LRANGE LPOP RPOP LLEN "
    "SADD SMEMBERS SREM ZADD ZRANGE ZSCORE EXPIRE PEXPIRE TTL PTTL FLUSHALL FLUSHDB CLIENT CONFIG MONITOR "
    "SUBSCRIBE PSUBSCRIBE PUBLISH MULTI EXEC SETEX SETNX MGET MSET INCRBY SCAN SLOWLOG"
)
INLINE_DETECT = frozenset(_INLINE_DETECT.split())
# Candidates: a command array's header after a CRLF (or first), or a line starting with a word.
_REQUEST_CANDIDATE = re.compile(
    rb"(?:^|(?<=\r\n))\*[1-9][0-9]{0,9}\r\n\$[1-9][0-9]?\r\n|(?:^|(?<=\n))([A-Za-z][A-Za-z_-]{1,31})[ \r\n]"
)
# A reply's first line, whole, after a line end or after zeros (bytes the capture did not copy): the
# regex rejects nearly every false candidate before any copy or scan.
_REPLY_LINE = (
    rb"(?:[+-][^\r\n\x00]{0,1024}|:[-+]?[0-9]{1,20}|[$*%~>|=!](?:-1|[0-9]{1,13})|_|#[tf]"
    rb"|,[^\r\n\x00]{1,64}|\([-+]?[0-9]{1,1024})\r\n"
)
_REPLY_CANDIDATE = re.compile(rb"(?:^|(?<=\n)|(?<=\x00))(?=" + _REPLY_LINE + rb")")
_BULK_BEFORE = re.compile(rb"(?:\A|\n)\$?[0-9]+\r\n\Z")  # a bulk header (or its tail) ends the line before
_SCAN_LIMIT = 1 << 16  # candidates examined per find_boundary call
_PROBE = 1024  # bytes looked at to validate a boundary candidate


def _count(s: bytes) -> int:
    """A non-negative decimal count, or -1 for "-1" (null), or -2 when it is not a count."""
    if s.isdigit() and len(s) <= 13:
        return int(s)
    return -1 if s == b"-1" else -2


def _integer(s: bytes) -> bool:
    body = s[1:] if s[:1] in (b"-", b"+") else s
    return body.isdigit()


def _upper(b: bytes) -> str:
    return b.decode("latin-1").upper()


def _command_name(b: bytes) -> str:
    """A known command's name, upper-cased; OTHER for anything else (which might be anything)."""
    name = _upper(b) if len(b) <= NAME_MAX else OTHER
    return name if name in COMMANDS else OTHER


def _status_word(s: bytes) -> str:
    """A status reply the stitcher acts on ("OK", "QUEUED", ...), else "": no other text is kept."""
    word = s.decode("latin-1") if len(s) <= WORD_MAX else ""
    return word if word in STATUS_WORDS else ""


def _first_word(s: bytes) -> str:
    """The first element of an aggregate when it names a pub/sub or push message kind, else ""."""
    word = s.decode("latin-1").lower() if len(s) <= WORD_MAX else ""
    return word if word in PUSH_WORDS else ""


def _reply_mode(b: bytes) -> int:
    """CLIENT REPLY's mode: REPLY_ON, REPLY_OFF, REPLY_SKIP, or -1."""
    return REPLY_MODES.get(_upper(b) if len(b) <= 4 else "", -1)


def _command_number(b: bytes) -> int:
    return int(b) if b.isdigit() and len(b) <= 9 else -1


def _subcommand(command: str, word: bytes) -> str:
    """A container's subcommand word when it is a known one, else "?" (it might be anything)."""
    sub = _upper(word) if len(word) <= NAME_MAX else ""
    return sub if f"{command}|{sub}" in SUBCOMMANDS else "?"


def _error_prefix(text: bytes) -> str:
    m = _ERROR_PREFIX.match(text[: WORD_MAX + 1])
    return m.group(0).decode("ascii") if m else "ERR"


def parse_frame(buf: memoryview, direction: Direction, state: State) -> ParseResult:
    request = direction is Direction.REQUEST
    slot = 0 if request else 1
    part = state.partial[slot]
    n = len(buf)
    if n == 0:
        return NEED_DATA
    if part is None:
        if request:
            if buf[0] != ARRAY:
                return _inline(buf)
            fast = _fast_command(bytes(buf[:WINDOW]))
        else:
            fast = _fast_reply(bytes(buf[:WINDOW]))
        if fast is not None:
            return fast
    window = WINDOW
    while True:
        if window >= n:
            result = _scan(bytes(buf), True, request, part, state, slot)
        else:
            result = _scan(bytes(buf[:window]), False, request, part, state, slot)
        if result is not _RETRY:
            return result  # type: ignore[return-value]
        window *= 8


def _fast_command(data: bytes) -> Parsed[Frame] | None:
    """The common command: a short array of short bulk strings, all in view. None: let _scan decide."""
    e = data.find(b"\r\n", 1, 6)
    if e < 0:
        return None
    s = data[1:e]
    if not s.isdigit():
        return None
    count = int(s)
    if not 0 < count <= 64:
        return None
    pos = e + 2
    name, sub, number = "", "", -1
    for i in range(count):
        e = data.find(b"\r\n", pos + 1, pos + 8)
        s = data[pos + 1 : e]
        if e < 0 or data[pos] != BULK or not s.isdigit():
            return None
        body = e + 2
        end = body + int(s)
        if data[end : end + 2] != b"\r\n":
            return None
        if i < 3:
            if i == 0:
                name = _command_name(data[body:end])
            elif i == 2:
                if sub == "REPLY":
                    number = _reply_mode(data[body:end])
            elif name in CONTAINERS:
                sub = _subcommand(name, data[body:end])
            elif name in NUMBERED:
                number = _command_number(data[body:end])
        pos = end + 2
    return Parsed(_new(Frame, (K_COMMAND, name, sub, count - 1, number)), pos)


def _fast_reply(data: bytes) -> Parsed[Frame] | None:
    """The common replies: a status, an error, an integer, a short bulk string. None: let _scan decide."""
    t = data[0]
    if t == BULK:
        e = data.find(b"\r\n", 1, 8)
        s = data[1:e]
        if e < 0 or not s.isdigit():
            return None
        length = int(s)
        end = e + 2 + length
        if data[end : end + 2] != b"\r\n":
            return None
        return Parsed(_new(Frame, (BULK, "", "", length, -1)), end + 2)
    if t in (SIMPLE, ERROR, INTEGER):
        e = data.find(b"\r\n", 1, 128)
        s = data[1:e]
        if e < 0 or _BAD_LINE.search(s):
            return None
        if t == INTEGER:
            if not _integer(s) or len(s) > 20:
                return None
            return Parsed(_new(Frame, (t, "", "", 0, int(s))), e + 2)
        name = _error_prefix(s) if t == ERROR else _status_word(s)
        return Parsed(_new(Frame, (t, name, "", 0, -1)), e + 2)
    return None


def _bad(state: State, slot: int, reason: str) -> Invalid:
    """Reject a message: after a rejected reply, the pairing of the next exchange is in doubt."""
    state.partial[slot] = None
    if slot:
        state.desynced = True
    return Invalid(reason)


def _scan(
    data: bytes, complete: bool, request: bool, part: Partial | None, state: State, slot: int
) -> ParseResult | object:
    """Parse one message from `data` (or the rest of `part`'s); `complete`: data is all of the stream."""
    n = len(data)
    if part is None:
        rem: list[int] = []
        attr: list[bool] = []
        kind, name, sub, count, number, idx = -1, "", "", 0, -1, 0
    else:
        rem, attr = list(part.rem), list(part.attr)
        kind, name, sub, count = part.kind, part.name, part.sub, part.count
        number, idx = part.number, part.idx
    pos = 0
    while True:
        if pos >= n:  # out of data at an element boundary: the state above describes `pos` exactly
            if pos >= STREAM_MIN or (part is not None and pos > 0):
                state.partial[slot] = Partial(rem, attr, kind, name, sub, count, number, idx)
                return Skip(_frame(request, kind, name, sub, count, number), pos, 0, True)
            return NEED_DATA if complete else _RETRY
        t = data[pos]
        depth = len(rem)
        done_attr = False
        if t in _BULKS:
            if request and (depth != 1 or t != BULK):
                return _bad(state, slot, "bad command element")
            e = data.find(b"\r\n", pos + 1, pos + 24)
            if e < 0:
                if n - pos < 24:
                    n = pos  # out of data at this element's start: handled at the top of the loop
                    continue
                return _bad(state, slot, "bad length")
            length = _count(data[pos + 1 : e])
            if length < -1 or length > MAX_BULK or (length == -1 and t != BULK):
                return _bad(state, slot, "bad length")
            if depth == 0:
                kind, count = t, length
            body = e + 2
            if length > SKIP_MIN:  # passed unbuffered: nothing of it is needed
                if depth == 0 and t == BLOB_ERROR:
                    name = _error_prefix(data[body : body + WORD_MAX + 1])
                elif request and idx == 0:
                    name = ""  # a name this long is no command
                if depth == 1:
                    idx += 1
                finished = _complete(rem, attr, False)
                frame = _frame(request, kind, name, sub, count, number)
                if finished is None:
                    state.partial[slot] = None
                    return Skip(frame, body, length + 2, False)
                if finished and not rem:  # a top-level attribute ended: the reply itself follows
                    idx, name, number = 0, "", -1
                state.partial[slot] = Partial(rem, attr, kind, name, sub, count, number, idx)
                return Skip(frame, body, length + 2, True)
            if length >= 0:
                end = body + length + 2
                if end > n:
                    n = pos
                    continue
                if data[end - 2] != 13 or data[end - 1] != 10:
                    return _bad(state, slot, "bad bulk terminator")
                if depth == 1 and idx < 3:
                    if request:
                        value = data[body : end - 2]
                        if idx == 0:
                            name = _command_name(value)
                        elif idx == 2:
                            if sub == "REPLY":
                                number = _reply_mode(value)
                        elif name in CONTAINERS:
                            sub = _subcommand(name, value)
                        elif name in NUMBERED:
                            number = _command_number(value)
                    elif idx == 0 and length <= WORD_MAX:
                        name = _first_word(data[body : end - 2])
                elif depth == 0 and t == BLOB_ERROR:
                    name = _error_prefix(data[body : end - 2])
                pos = end
            else:
                pos = body
        elif t in _AGGREGATES:
            if request and (depth != 0 or t != ARRAY):
                return _bad(state, slot, "bad command element")
            e = data.find(b"\r\n", pos + 1, pos + 24)
            if e < 0:
                if n - pos < 24:
                    n = pos
                    continue
                return _bad(state, slot, "bad count")
            c = _count(data[pos + 1 : e])
            if c < -1 or (c == -1 and t != ARRAY):
                return _bad(state, slot, "bad count")
            if c > MAX_COUNT:
                return _bad(state, slot, "aggregate too long")
            if depth >= MAX_DEPTH:
                return _bad(state, slot, "nesting too deep")
            pos = e + 2
            if depth == 0 and t != ATTRIBUTE:
                kind, count = t, c
            if request:
                if c <= 0:
                    state.partial[slot] = None
                    return Parsed(Frame(K_EMPTY), pos)
                count = c - 1
            if c > 0:
                rem.append(c * 2 if t in _PAIRS else c)
                attr.append(t == ATTRIBUTE)
                continue
            done_attr = t == ATTRIBUTE  # an empty aggregate (or a null array) is a whole value
        elif t in _TYPES:  # the line types: + - : , ( # _
            if request:
                return _bad(state, slot, "bad command element")
            e = data.find(b"\r\n", pos + 1, pos + 1 + LINE_MAX)
            if e < 0:
                if n - pos - 1 < LINE_MAX:
                    n = pos
                    continue
                return _bad(state, slot, "line too long")
            s = data[pos + 1 : e]
            if t == INTEGER:
                if not _integer(s):
                    return _bad(state, slot, "bad integer")
                if depth < 2 and len(s) <= 20:
                    number = int(s)
            elif t in (SIMPLE, ERROR):
                if _BAD_LINE.search(s):
                    return _bad(state, slot, "bad simple string")
                if depth == 0:
                    name = _error_prefix(s) if t == ERROR else _status_word(s)
                elif depth == 1 and idx == 0 and t == SIMPLE:
                    name = _first_word(s)
            elif t == NULL:
                if s:
                    return _bad(state, slot, "bad null")
            elif t == BOOLEAN:
                if s != b"t" and s != b"f":
                    return _bad(state, slot, "bad boolean")
            elif t == DOUBLE:
                if not _DOUBLE.fullmatch(s):
                    return _bad(state, slot, "bad double")
            elif not _integer(s):  # BIG_NUMBER
                return _bad(state, slot, "bad big number")
            if depth == 0:
                kind = t
            pos = e + 2
        else:
            return _bad(state, slot, "unknown type")
        # A whole value ended at `pos`: close the aggregates it completes.
        if depth == 1 and not done_attr:
            idx += 1
        finished = _complete(rem, attr, done_attr)
        if finished is None:
            state.partial[slot] = None
            return Parsed(_frame(request, kind, name, sub, count, number), pos)
        if finished and not rem:  # a top-level attribute ended: the reply itself follows
            idx, name, number = 0, "", -1


def _complete(rem: list[int], attr: list[bool], done_attr: bool) -> bool | None:
    """Count one finished value in its aggregates: None when the whole message ended, else whether an
    attribute ended (it prefixes the next value and is not one of its aggregate's elements)."""
    while rem:
        if done_attr:
            return True
        rem[-1] -= 1
        if rem[-1]:
            return False
        rem.pop()
        done_attr = attr.pop()
    return True if done_attr else None


def _frame(request: bool, kind: int, name: str, sub: str, count: int, number: int) -> Frame:
    if request:
        return Frame(K_COMMAND, name, sub, count, number)
    return Frame(kind, name, "", count, number)


def _inline(buf: memoryview) -> ParseResult:
    """An inline command: one line, arguments separated by spaces (redis-server's own inline form)."""
    data = bytes(buf[:1024])  # most lines are short: a pipeline of them must not copy 64 KiB each
    e = data.find(b"\n")
    if e < 0 and len(buf) > len(data):
        data = bytes(buf[: LINE_MAX + 2])
        e = data.find(b"\n")
    if e < 0:
        if _CONTROL.search(data):
            return Invalid("bad inline command")
        return NEED_DATA if len(data) <= LINE_MAX else Invalid("line too long")
    line = data[:e]
    if line.endswith(b"\r"):
        line = line[:-1]
    words = line.split()
    if not words:
        return Parsed(Frame(K_EMPTY), e + 1)
    if _CONTROL.search(line) or not _WORD.fullmatch(words[0]):
        return Invalid("bad inline command")
    name = _command_name(words[0])
    sub, number = "", -1
    if len(words) > 1:
        if name in CONTAINERS:
            sub = _subcommand(name, words[1])
            if sub == "REPLY" and len(words) > 2:
                number = _reply_mode(words[2])
        elif name in NUMBERED:
            number = _command_number(words[1])
    return Parsed(Frame(K_COMMAND, name, sub, len(words) - 1, number), e + 1)


# -- detection and resync ---------------------------------------------------------------------------


def _known(name: str) -> bool:
    return name in COMMANDS


def _first_command(b: bytes) -> str | None:
    """The name of the command array at the start of b, when all of its header is in view."""
    e = b.find(b"\r\n", 1, 13)
    if e < 0 or not b[1:e].isdigit() or b[e + 2 : e + 3] != b"$":
        return None
    f = b.find(b"\r\n", e + 3, e + 8)
    if f < 0 or not b[e + 3 : f].isdigit():
        return None
    length = int(b[e + 3 : f])
    if length > NAME_MAX or b[f + 2 + length : f + 4 + length] != b"\r\n":
        return None
    return _upper(b[f + 2 : f + 2 + length])


def _plausible_inline(b: bytes, known: frozenset[str] = INLINE_DETECT) -> bool:
    """A whole command line (CRLF-ended) whose first word is one of `known` (detection: INLINE_DETECT;
    resync on a connection known to speak Redis: any command)."""
    e = b.find(b"\r\n", 0, 1024)
    if e <= 0:
        return False
    line = b[:e]
    if _CONTROL.search(line) or b" HTTP/" in line or not line.isascii():
        return False
    word = line.split(b" ", 1)[0]
    return _upper(word) in known and _WORD.fullmatch(word) is not None


def _messages_valid(b: bytes, request: bool, limit: int = 8, strict: bool = True) -> int:
    """How many complete messages start b (up to `limit`); with `strict`, -1 when one of them is
    invalid, else the count of those before it. Messages released in pieces (a long bulk string or
    aggregate) count as complete."""
    state = State()
    slot = 0 if request else 1
    pos, seen = 0, 0
    while pos < len(b) and seen < limit:
        view = b[pos:]
        result = None if request and view[0] != ARRAY else _scan(view, True, request, None, state, slot)
        if isinstance(result, Parsed) and request and not _known(result.frame.name):
            result = None  # K_EMPTY's name is "": no command either
        if result is None or isinstance(result, Invalid):
            return -1 if strict else seen
        if isinstance(result, Skip):
            return seen + 1
        if not isinstance(result, Parsed):
            return seen
        seen += 1
        pos += result.size
    return seen


def _plausible_first_reply(b: bytes) -> bool:
    t = b[0]
    if t == SIMPLE:
        e = b.find(b"\r\n", 1, 258)
        text = b[1:e]
        if e <= 1 or not text.isascii() or text.startswith((b"OK ", b" ")):
            return False
        return text.decode("ascii").isprintable()
    if t == ERROR:
        return _ERROR_PREFIX.match(b, 1) is not None
    return t in _TYPES


def detect(head: bytes, direction: Direction) -> bool:
    b = bytes(head[:4096])
    if not b:
        return False
    if direction is Direction.REQUEST:
        if b[0] != ARRAY:
            return _plausible_inline(b)
        name = _first_command(b)  # a complete, known first command; a later one may be a module's
        return name is not None and _known(name) and _messages_valid(b, True, 1) >= 0
    if not _plausible_first_reply(b):
        return False
    n = _messages_valid(b, False)
    return n >= 1 or (n == 0 and len(b) >= 1024)


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    """Offset of the next plausible message start: a known command, or a run of valid replies."""
    request = direction is Direction.REQUEST
    pattern = _REQUEST_CANDIDATE if request else _REPLY_CANDIDATE
    for k, m in enumerate(pattern.finditer(buf, max(start, 0))):
        if k >= _SCAN_LIMIT:
            return None
        i = m.start()
        if request:
            word = m.group(1)
            if word is None:
                head = bytes(buf[i : i + _PROBE])
                name = _first_command(head)
                if name is not None and _known(name) and _messages_valid(head, True, 1) >= 0:
                    return i
            elif (
                _upper(word) in COMMANDS
                and not _BULK_BEFORE.search(bytes(buf[max(i - 24, 0) : i]))
                and _plausible_inline(bytes(buf[i : i + _PROBE]), COMMANDS)
            ):
                return i  # a line of a known command, not the body of a bulk string (detect() stays strict)
            continue
        head = bytes(buf[i : i + _PROBE])
        if _plausible_first_reply(head):
            n = _messages_valid(head, False, 4, strict=False)  # junk after a reply is not its fault
            if n >= 2 or (n == 1 and _reply_fills(head)):
                return i
    return None


def _reply_fills(head: bytes) -> bool:
    """A single complete reply in view that is a bulk string or aggregate (strong enough alone), or
    one that ends exactly where the bytes in view end (nothing after it contradicts it)."""
    if head[0] in _BULKS or head[0] in _AGGREGATES:
        return True
    result = _scan(head, True, False, None, State(), 1)
    return isinstance(result, Parsed) and result.size == len(head)
