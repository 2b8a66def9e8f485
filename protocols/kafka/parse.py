"""Kafka framing: int32 size, then a request header (v1/v2) or a response header (v0/v1), then the body.

Requests say what they are (api key, version); responses only carry the correlation id, so a request's
(api key, version) is remembered in the state until its response is parsed. Bodies of the APIs in
`_REQUEST_BODY`/`_RESPONSE_BODY` are read for topics, partitions, group, errors and record batch headers
(never record values); others are known by name only. A message up to WHOLE_CAP is parsed whole; a larger
one from its first PREFIX_CAP bytes, the rest skipped unbuffered (`Skip`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from protocols.base import NEED_DATA, Direction, Invalid, Parsed, ParseResult, Skip
from protocols.kafka.types import (
    API_VERSIONS,
    APIS,
    FETCH,
    FIND_COORDINATOR,
    HEARTBEAT,
    INIT_PRODUCER_ID,
    JOIN_GROUP,
    LEAVE_GROUP,
    LIST_OFFSETS,
    MAX_BATCHES,
    MAX_PENDING,
    MAX_REQUEST_DETECT,
    MAX_SIZE,
    MAX_TOPIC_IDS,
    MAX_TOPICS,
    METADATA,
    NAME_CAP,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    PREFIX_CAP,
    PRODUCE,
    SYNC_GROUP,
    VERSION_SLACK,
    WHOLE_CAP,
    Frame,
    State,
)

UNRESOLVED = "\x00"  # starts a topic id (hex) no Metadata response on the connection named

_HEAD = struct.Struct(">ihhih")  # size, api key, api version, correlation id, client id length
_I8, _I16, _I32, _I64 = (struct.Struct(f">{c}").unpack_from for c in "bhiq")
_BATCH_HEAD = struct.Struct(">qi").unpack_from  # base offset, batch length
_MIN_REQUEST = 10  # api key, version, correlation id, client id length
_CONTROL_BATCH = 0x20  # RecordBatch attributes: a transaction marker, no user records

# A request start: size < 2^27 and >= 10, api key <= 92, version <= 20, correlation id >= 0, client id
# 1 to 255 bytes long. One regex step per candidate; _plausible_request checks the rest.
_REQUEST_START = re.compile(
    rb"(?=(?!\x00\x00\x00[\x00-\x09])[\x00-\x07][\s\S]{3}\x00[\x00-\x5c]\x00[\x00-\x14][\x00-\x7f][\s\S]{3}"
    rb"\x00[\x01-\xff])"
)
# A response start: size in [4, 2^30), correlation id >= 0.
_RESPONSE_START = re.compile(rb"(?=(?!\x00\x00\x00[\x00-\x03])[\x00-\x3f][\s\S]{3}[\x00-\x7f])")
_NEXT_CORRELATION = 1 << 20  # the next response's correlation id, when in view, is at most this far off


class _Short(Exception):
    """The message's bytes in view ended (a prefix, or a message cut short)."""


class _Bad(Exception):
    """A field's value is impossible here: the layout is not what the version says."""


class _Reader:
    """A cursor over one message's body: `end` bytes are in view, `limit` is where the message ends."""

    __slots__ = ("b", "end", "flex", "i", "last_id", "limit")

    def __init__(self, b: memoryview, i: int, end: int, limit: int, flex: bool) -> None:
        self.b, self.i, self.end, self.limit, self.flex = b, i, end, limit, flex
        self.last_id = ""  # the id (hex) of the topic last read by id

    def _take(self, n: int) -> int:
        i = self.i
        if i + n > self.end:
            raise _Short if i + n <= self.limit else _Bad
        self.i = i + n
        return i

    def i8(self) -> int:
        return int(_I8(self.b, self._take(1))[0])

    def i16(self) -> int:
        return int(_I16(self.b, self._take(2))[0])

    def i32(self) -> int:
        return int(_I32(self.b, self._take(4))[0])

    def i64(self) -> int:
        return int(_I64(self.b, self._take(8))[0])

    def skip(self, n: int) -> None:
        self._take(n)

    def uvarint(self) -> int:
        i = self.i
        if i < self.end:
            c = self.b[i]
            if c < 0x80:  # one byte: nearly every length and tag count
                self.i = i + 1
                return c
        return self._uvarint()

    def _uvarint(self) -> int:
        value = shift = 0
        b, end = self.b, self.end
        while True:
            i = self.i
            if i >= end:
                raise _Short if i < self.limit else _Bad
            c = b[i]
            self.i = i + 1
            value |= (c & 0x7F) << shift
            if c < 0x80:
                return value
            shift += 7
            if shift > 28:
                raise _Bad

    def length(self) -> int:
        """A string's, bytes' or array's length (-1: null), checked against the bytes left."""
        n = self.uvarint() - 1 if self.flex else self.i32()
        if n < -1 or n > self.limit - self.i:
            raise _Bad
        return n

    def count(self) -> int:
        """An array's element count (null: 0); every element takes at least one byte."""
        return max(self.length(), 0)

    def string(self) -> str:
        n = self.uvarint() - 1 if self.flex else self.i16()
        if n <= 0:
            if n < -1:
                raise _Bad
            return ""
        i = self._take(n)
        return bytes(self.b[i : i + min(n, NAME_CAP * 4)]).decode("utf-8", "replace")[:NAME_CAP]

    def skip_string(self) -> None:
        n = self.uvarint() - 1 if self.flex else self.i16()
        if n < -1:
            raise _Bad
        if n > 0:
            self._take(n)

    def tags(self) -> None:
        if self.flex:
            i = self.i
            if i < self.end and self.b[i] == 0:  # no tagged fields: the usual case
                self.i = i + 1
                return
            for _ in range(self.uvarint()):
                self.uvarint()
                self._take(self.uvarint())

    def topic(self, by_id: bool, state: State) -> str:
        """A topic name, or a topic id resolved through the names Metadata responses gave ("" unknown)."""
        if not by_id:
            self.last_id = ""
            return self.string()
        i = self._take(16)
        topic_id = bytes(self.b[i : i + 16])
        self.last_id = topic_id.hex()
        return state.topic_ids.get(topic_id) or UNRESOLVED + self.last_id


def _add_topic(f: Frame, name: str) -> None:
    f.topic_count += 1
    if name.startswith(UNRESOLVED):
        if name not in f.topic_ids and len(f.topic_ids) < MAX_TOPICS:
            f.topic_ids.append(name[1:])
    elif name and name not in f.topics and len(f.topics) < MAX_TOPICS:
        f.topics.append(name)


def _add_partition(f: Frame, partition: int) -> None:
    f.partition_count += 1
    if len(f.partitions) < MAX_TOPICS:
        f.partitions.append(partition)


def _batch_topic(r: _Reader, state: State, topic: str) -> str:
    """A batch's topic for the pipeline's links: its name and its id ("name|id"), as far as known, so a
    writer naming the topic one way and a reader the other still meet."""
    if topic.startswith(UNRESOLVED):
        return topic[1:]
    topic_id = r.last_id or state.topic_names.get(topic, "")
    return f"{topic}|{topic_id}" if topic_id else topic


def _error(f: Frame, code: int) -> None:
    if code and not f.error_code:
        f.error_code = code


def _records(r: _Reader, f: Frame, topic: str, partition: int, state: State) -> None:
    """A records field: the batches' base offsets and record counts from their headers, values unread."""
    n = r.length()
    if f.records < 0:
        f.records = 0
    if n <= 0:
        return
    b, p, stop = r.b, r.i, r.i + n
    while p + 17 <= stop:  # base offset, length, partition leader epoch, magic
        if p + 17 > r.end:
            raise _Short
        base, blen = _BATCH_HEAD(b, p)
        nxt = p + 12 + blen
        if blen < 14 or nxt > stop:  # a Fetch may end in a batch cut by its size limit: not counted
            break
        if b[p + 16] == 2:  # RecordBatch v2: attributes at 21, records count at 57
            if blen < 49:
                raise _Bad
            if p + 61 > r.end:
                raise _Short
            count = 0 if _I16(b, p + 21)[0] & _CONTROL_BATCH else int(_I32(b, p + 57)[0])
        else:  # a legacy message (magic 0/1): one message, possibly a compressed wrapper
            count = 1
        if count > 0:
            f.records += count
            if len(f.batches) < MAX_BATCHES:
                f.batches.append((_batch_topic(r, state, topic), partition, int(base), count))
        p = nxt
    r.skip(n)


# -- request bodies ------------------------------------------------------------------------------------


def _produce_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    r.skip_string()  # transactional id (v3+; older versions are gone from brokers since 4.0)
    f.acks = r.i16()
    r.skip(4)
    for _ in range(r.count()):
        topic = r.topic(v >= 13, state)
        _add_topic(f, topic)
        for _ in range(r.count()):
            partition = r.i32()
            _add_partition(f, partition)
            _records(r, f, topic, partition, state)
            r.tags()
        r.tags()


def _fetch_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v <= 14:
        r.skip(4)  # replica id
    f.max_wait_ms = r.i32()
    r.skip(4 + (4 if v >= 3 else 0) + (1 if v >= 4 else 0) + (8 if v >= 7 else 0))
    per_partition = 4 + 8 + (4 if v >= 9 else 0) + (4 if v >= 12 else 0) + (8 if v >= 5 else 0) + 4
    for _ in range(r.count()):
        _add_topic(f, r.topic(v >= 13, state))
        for _ in range(r.count()):
            _add_partition(f, r.i32())
            r.skip(per_partition - 4)
            r.tags()
        r.tags()


def _list_offsets_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    r.skip(4 + (1 if v >= 2 else 0))
    per_partition = (4 if v >= 4 else 0) + 8 + (4 if v == 0 else 0)
    for _ in range(r.count()):
        _add_topic(f, r.string())
        for _ in range(r.count()):
            _add_partition(f, r.i32())
            r.skip(per_partition)
            r.tags()
        r.tags()


def _metadata_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    for _ in range(r.count()):
        if v >= 10:
            r.skip(16)
        _add_topic(f, r.string())
        r.tags()


def _offset_commit_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    f.group = r.string()
    if v >= 1:
        r.skip(4)
        r.skip_string()
    if v >= 7:
        r.skip_string()
    if 2 <= v <= 4:
        r.skip(8)
    per_partition = 8 + (4 if v >= 6 else 0) + (8 if v == 1 else 0)
    for _ in range(r.count()):
        _add_topic(f, r.topic(v >= 10, state))
        for _ in range(r.count()):
            _add_partition(f, r.i32())
            r.skip(per_partition)
            r.skip_string()
            r.tags()
        r.tags()


def _offset_fetch_topics(r: _Reader, f: Frame, by_id: bool, state: State) -> None:
    for _ in range(r.count()):
        _add_topic(f, r.topic(by_id, state))
        for _ in range(r.count()):
            _add_partition(f, r.i32())
        r.tags()


def _offset_fetch_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v <= 7:
        f.group = r.string()
        _offset_fetch_topics(r, f, False, state)
        return
    for _ in range(r.count()):
        group = r.string()
        f.group = f.group or group
        if v >= 9:
            r.skip_string()
            r.skip(4)
        _offset_fetch_topics(r, f, v >= 10, state)
        r.tags()


def _find_coordinator_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v <= 3:
        key = r.string()
        if v == 0 or r.i8() == 0:  # key type 0: a consumer group
            f.group = key
        return
    if r.i8() == 0:
        for _ in range(r.count()):
            key = r.string()
            f.group = f.group or key


def _group_request(r: _Reader, v: int, f: Frame, state: State) -> None:
    f.group = r.string()


def _nothing(r: _Reader, v: int, f: Frame, state: State) -> None:
    """A body whose fields are not reported (ApiVersions, InitProducerId)."""


# -- response bodies -----------------------------------------------------------------------------------


def _produce_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    for _ in range(r.count()):
        topic = r.topic(v >= 13, state)
        _add_topic(f, topic)
        for _ in range(r.count()):
            partition = r.i32()
            _add_partition(f, partition)
            _error(f, r.i16())
            base = r.i64()
            if len(f.batches) < MAX_BATCHES:
                f.batches.append((_batch_topic(r, state, topic), partition, base, 0))
            r.skip((8 if v >= 2 else 0) + (8 if v >= 5 else 0))
            if v >= 8:
                for _ in range(r.count()):
                    r.skip(4)
                    r.skip_string()
                    r.tags()
                r.skip_string()
            r.tags()
        r.tags()


def _fetch_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v >= 1:
        r.skip(4)
    if v >= 7:
        _error(f, r.i16())
        r.skip(4)
    after_error = 8 + (8 if v >= 4 else 0) + (8 if v >= 5 else 0)
    f.records = 0
    for _ in range(r.count()):
        topic = r.topic(v >= 13, state)
        _add_topic(f, topic)
        for _ in range(r.count()):
            partition = r.i32()
            _add_partition(f, partition)
            _error(f, r.i16())
            r.skip(after_error)
            if v >= 4:
                for _ in range(r.count()):
                    r.skip(16)
                    r.tags()
            if v >= 11:
                r.skip(4)
            _records(r, f, topic, partition, state)
            r.tags()
        r.tags()


def _list_offsets_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v >= 2:
        r.skip(4)
    for _ in range(r.count()):
        _add_topic(f, r.string())
        for _ in range(r.count()):
            _add_partition(f, r.i32())
            _error(f, r.i16())
            if v == 0:
                r.skip(8 * r.count())
            else:
                r.skip(16 + (4 if v >= 4 else 0))
            r.tags()
        r.tags()


def _metadata_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v >= 3:
        r.skip(4)
    for _ in range(r.count()):  # brokers
        r.skip(4)
        r.skip_string()
        r.skip(4)
        if v >= 1:
            r.skip_string()
        r.tags()
    if v >= 2:
        r.skip_string()
    if v >= 1:
        r.skip(4)
    for _ in range(r.count()):
        _error(f, r.i16())
        name = r.string()
        if v >= 10:
            i = r.i
            r.skip(16)
            if name:
                if len(state.topic_ids) >= MAX_TOPIC_IDS:
                    state.topic_ids.clear()
                if len(state.topic_names) >= MAX_TOPIC_IDS:
                    state.topic_names.clear()
                state.topic_ids[bytes(r.b[i : i + 16])] = name
                state.topic_names[name] = bytes(r.b[i : i + 16]).hex()
        _add_topic(f, name)
        if v >= 1:
            r.skip(1)
        for _ in range(r.count()):
            _error(f, r.i16())
            r.skip(8 + (4 if v >= 7 else 0))
            for _ in range(3 if v >= 5 else 2):  # replicas, isr, offline replicas
                r.skip(4 * r.count())
            r.tags()
        if v >= 8:
            r.skip(4)
        r.tags()
    if 8 <= v <= 10:
        r.skip(4)
    if v >= 13:
        _error(f, r.i16())


def _offset_commit_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v >= 3:
        r.skip(4)
    for _ in range(r.count()):
        _add_topic(f, r.topic(v >= 10, state))
        for _ in range(r.count()):
            _add_partition(f, r.i32())
            _error(f, r.i16())
            r.tags()
        r.tags()


def _offset_fetch_response_topics(r: _Reader, v: int, f: Frame, by_id: bool, state: State) -> None:
    for _ in range(r.count()):
        _add_topic(f, r.topic(by_id, state))
        for _ in range(r.count()):
            _add_partition(f, r.i32())
            r.skip(8 + (4 if v >= 5 else 0))
            r.skip_string()
            _error(f, r.i16())
            r.tags()
        r.tags()


def _offset_fetch_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v >= 3:
        r.skip(4)
    if v <= 7:
        _offset_fetch_response_topics(r, v, f, False, state)
        if v >= 2:
            _error(f, r.i16())
        return
    for _ in range(r.count()):
        group = r.string()
        f.group = f.group or group
        _offset_fetch_response_topics(r, v, f, v >= 10, state)
        _error(f, r.i16())
        r.tags()


def _find_coordinator_response(r: _Reader, v: int, f: Frame, state: State) -> None:
    if v >= 1:
        r.skip(4)
    if v <= 3:
        _error(f, r.i16())
        return
    for _ in range(r.count()):
        group = r.string()
        f.group = f.group or group
        r.skip(4)
        r.skip_string()
        r.skip(4)
        _error(f, r.i16())
        r.skip_string()
        r.tags()


def _throttle_then_error(since: int) -> Callable[[_Reader, int, Frame, State], None]:
    """Bodies that start with throttle_time_ms (from version `since`) and then the error code."""

    def body(r: _Reader, v: int, f: Frame, state: State) -> None:
        if v >= since:
            r.skip(4)
        _error(f, r.i16())

    return body


Body = Callable[[_Reader, int, Frame, State], None]
_REQUEST_BODY: dict[int, Body] = {
    PRODUCE: _produce_request,
    FETCH: _fetch_request,
    LIST_OFFSETS: _list_offsets_request,
    METADATA: _metadata_request,
    OFFSET_COMMIT: _offset_commit_request,
    OFFSET_FETCH: _offset_fetch_request,
    FIND_COORDINATOR: _find_coordinator_request,
    JOIN_GROUP: _group_request,
    HEARTBEAT: _group_request,
    LEAVE_GROUP: _group_request,
    SYNC_GROUP: _group_request,
    API_VERSIONS: _nothing,
    INIT_PRODUCER_ID: _nothing,
}
_RESPONSE_BODY: dict[int, Body] = {
    PRODUCE: _produce_response,
    FETCH: _fetch_response,
    LIST_OFFSETS: _list_offsets_response,
    METADATA: _metadata_response,
    OFFSET_COMMIT: _offset_commit_response,
    OFFSET_FETCH: _offset_fetch_response,
    FIND_COORDINATOR: _find_coordinator_response,
    JOIN_GROUP: _throttle_then_error(2),
    HEARTBEAT: _throttle_then_error(1),
    LEAVE_GROUP: _throttle_then_error(1),
    SYNC_GROUP: _throttle_then_error(1),
    API_VERSIONS: _throttle_then_error(1 << 16),  # the error code comes first in every version
    INIT_PRODUCER_ID: _throttle_then_error(0),
}


def flexible(api_key: int, api_version: int) -> bool:
    entry = APIS.get(api_key)
    return entry is not None and api_version >= entry[2]


def _body(r: _Reader, body: Body | None, v: int, f: Frame, state: State) -> bool:
    """Read a body into `f`; False when a field was impossible (the layout is not what was expected)."""
    try:
        r.tags()  # the header's tagged fields (request header v2, response header v1)
        if body is not None:
            body(r, v, f, state)
            f.parsed = True
    except _Short:
        f.partial = f.parsed = body is not None
    except _Bad:
        f.partial = True
        return False
    return True


# -- framing -------------------------------------------------------------------------------------------


def _header_ok(b: memoryview | bytes, p: int, strict: bool) -> bool:
    """Bytes at `p` (14 in view) start a request header; `strict`: detection's checks on top."""
    size, key, version, correlation, client_len = _HEAD.unpack_from(b, p)
    entry = APIS.get(key)
    if entry is None or not 0 <= version <= entry[1] + VERSION_SLACK:
        return False
    if size < _MIN_REQUEST + max(client_len, 0) or size > MAX_SIZE or client_len < -1:
        return False
    if not strict:
        return True
    if size > MAX_REQUEST_DETECT or correlation < 0 or client_len <= 0:  # clients name themselves
        return False
    name = bytes(b[p + 14 : p + 14 + max(client_len, 0)])
    return all(0x20 <= c < 0x7F for c in name)


def _plausible_request(b: memoryview | bytes, p: int) -> bool:
    """A request header at `p`; when the whole message is in view its body must read as its version
    says, and a next message in view must start with a request header too."""
    n = len(b)
    if p + 14 > n or not _header_ok(b, p, True):
        return False
    size, key, version, _, client_len = _HEAD.unpack_from(b, p)
    end = p + 4 + size
    if end <= n:
        mv = memoryview(b)[p:end]
        f = Frame(True, size, key, version, 0)
        body = _REQUEST_BODY.get(key)
        r = _Reader(mv, 14 + max(client_len, 0), len(mv), len(mv), flexible(key, version))
        if not _body(r, body, version, f, State()) or f.partial:
            return False
        if end + 14 <= n and not _header_ok(b, end, True):
            return False
    return True


def detect(head: bytes, direction: Direction) -> bool:
    """A request header (known api key, a version it has, a non-empty printable client id) whose body,
    when in view, reads as its version says. Responses alone carry nothing to recognise them by."""
    return direction is Direction.REQUEST and _plausible_request(head, 0)


def find_boundary(buf: memoryview, direction: Direction, start: int) -> int | None:
    if direction is Direction.REQUEST:
        for m in _REQUEST_START.finditer(buf, start):
            if _plausible_request(buf, m.start()):
                return m.start()
        return None
    n = len(buf)
    for m in _RESPONSE_START.finditer(buf, start):
        p = m.start()
        if p + 8 > n:
            return None
        size, correlation = struct.unpack_from(">ii", buf, p)
        if size > MAX_SIZE:
            continue
        nxt = p + 4 + size
        if nxt == n:  # ends exactly where the bytes in view end (the end of a read)
            return p
        if nxt + 8 <= n:  # the next response in view: it must follow on, with a nearby correlation id
            size2, correlation2 = struct.unpack_from(">ii", buf, nxt)
            # Not always a later one: the Java client numbers a connection's ApiVersions after the
            # request it was opened for (ApiVersions 8, then JoinGroup 7).
            if 4 <= size2 <= MAX_SIZE and 0 < abs(correlation2 - correlation) <= _NEXT_CORRELATION:
                return p
    return None


def parse_frame(buf: memoryview, direction: Direction, state: State) -> ParseResult:
    n = len(buf)
    if n < 4:
        return NEED_DATA
    size = int(_I32(buf, 0)[0])
    if direction is Direction.REQUEST:
        return _request(buf, n, size, state)
    return _response(buf, n, size, state)


def _request(buf: memoryview, n: int, size: int, state: State) -> ParseResult:
    if size < _MIN_REQUEST or size > MAX_SIZE:
        return Invalid("bad message size")
    if n < 14:
        return NEED_DATA
    if not _header_ok(buf, 0, False):
        return Invalid("bad request header")
    _, key, version, correlation, client_len = _HEAD.unpack_from(buf, 0)
    total = 4 + size
    if n < (total if total <= WHOLE_CAP else PREFIX_CAP):
        return NEED_DATA
    end = min(n, total)
    client = max(client_len, 0)
    f = Frame(True, size, key, version, correlation)
    if client:
        f.client_id = bytes(buf[14 : 14 + min(client, NAME_CAP)]).decode("utf-8", "replace")
    _body(
        _Reader(buf, 14 + client, end, total, flexible(key, version)),
        _REQUEST_BODY.get(key),
        version,
        f,
        state,
    )
    if f.acks != 0 or key != PRODUCE:  # acks=0: the broker answers nothing
        pending = state.pending
        if len(pending) >= MAX_PENDING:
            del pending[next(iter(pending))]
        pending[correlation] = (key, version)
    if total <= WHOLE_CAP:
        return Parsed(f, total)
    f.partial = True
    return Skip(f, PREFIX_CAP, total - PREFIX_CAP)


def _response(buf: memoryview, n: int, size: int, state: State) -> ParseResult:
    if size < 4 or size > MAX_SIZE:
        return Invalid("bad message size")
    if n < 8:
        return NEED_DATA
    correlation = int(_I32(buf, 4)[0])
    request = state.pending.get(correlation)
    total = 4 + size
    if n < (total if total <= WHOLE_CAP else PREFIX_CAP):
        return NEED_DATA
    if request is None:
        f = Frame(False, size, -1, -1, correlation)
    else:
        del state.pending[correlation]
        key, version = request
        f = Frame(False, size, key, version, correlation)
        flex = key != API_VERSIONS and flexible(key, version)  # ApiVersions answers with header v0
        _body(_Reader(buf, 8, min(n, total), total, flex), _RESPONSE_BODY.get(key), version, f, state)
    if total <= WHOLE_CAP:
        return Parsed(f, total)
    f.partial = True
    return Skip(f, PREFIX_CAP, total - PREFIX_CAP)
