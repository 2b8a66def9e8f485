"""PostgreSQL test helpers: exact message builders (protocol 3.0) and the real framing loop."""

from __future__ import annotations

import struct
from typing import Any

from protocols.base import Direction
from protocols.postgres import SPEC
from tests.support.loop import Loop as SharedLoop

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
SECRET = "Pw-s3cret-4711"  # a password: never in a frame, an exchange, a record or the state
LITERAL = "hunter2-literal"  # a SQL literal: never outside the request bytes


class Loop(SharedLoop):
    """The shared real-loop driver on a connection known to speak PostgreSQL, run at every feed."""

    def __init__(self, auto_run: bool = True, **kwargs: Any) -> None:
        super().__init__(SPEC, auto_run=auto_run, **kwargs)


def msg(t: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    return t + struct.pack(">I", 4 + len(body) if length is None else length) + body


def cstr(s: bytes | str) -> bytes:
    return (s.encode() if isinstance(s, str) else s) + b"\x00"


def startup(user: str = "app", database: str = "shop") -> bytes:
    body = struct.pack(">I", 0x00030000) + cstr("user") + cstr(user) + cstr("database") + cstr(database)
    body += cstr("application_name") + cstr("test") + b"\x00"
    return struct.pack(">I", 4 + len(body)) + body


SSL_REQUEST = struct.pack(">II", 8, 80877103)
GSS_REQUEST = struct.pack(">II", 8, 80877104)
CANCEL = struct.pack(">IIII", 16, 80877102, 4242, 0x5EC4E7)


def auth(code: int, extra: bytes = b"") -> bytes:
    return msg(b"R", struct.pack(">I", code) + extra)


AUTH_OK = auth(0)
READY_IDLE = msg(b"Z", b"I")
READY_TX = msg(b"Z", b"T")
READY_FAILED = msg(b"Z", b"E")
LOGIN_TAIL = (
    AUTH_OK
    + msg(b"S", cstr("server_version") + cstr("15.8"))
    + msg(b"K", struct.pack(">II", 4242, 99))
    + READY_IDLE
)


def password(secret: str = SECRET) -> bytes:
    return msg(b"p", cstr(secret))


def md5_login(user: str = "app", database: str = "shop") -> tuple[bytes, bytes, bytes]:
    """(StartupMessage, md5 challenge, PasswordMessage with an md5 hash) then LOGIN_TAIL."""
    return startup(user, database), auth(5, b"salt"), msg(b"p", cstr("md5" + SECRET.encode().hex()[:32]))


def scram_messages() -> list[tuple[Direction, bytes]]:
    """A SCRAM-SHA-256 exchange: the client's messages carry the secret-derived proofs."""
    first = f"n,,n=,r={SECRET}nonce".encode()
    return [
        (REQ, startup()),
        (RESP, auth(10, cstr("SCRAM-SHA-256") + b"\x00")),
        (REQ, msg(b"p", cstr("SCRAM-SHA-256") + struct.pack(">I", len(first)) + first)),
        (RESP, auth(11, f"r={SECRET}nonceSRV,s=c2FsdA==,i=4096".encode())),
        (REQ, msg(b"p", f"c=biws,r={SECRET}nonceSRV,p={SECRET}proof".encode())),
        (RESP, auth(12, f"v={SECRET}sig".encode()) + LOGIN_TAIL),
    ]


def query(sql: str | bytes) -> bytes:
    return msg(b"Q", cstr(sql))


def row_description(*names: str) -> bytes:
    body = struct.pack(">H", len(names))
    for name in names:
        body += cstr(name) + struct.pack(">IHIhih", 0, 0, 25, -1, -1, 0)
    return msg(b"T", body)


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack(">H", len(values))
    for v in values:
        body += struct.pack(">i", -1) if v is None else struct.pack(">I", len(v)) + v
    return msg(b"D", body)


def complete(tag: str) -> bytes:
    return msg(b"C", cstr(tag))


def error(code: str = "42P01", text: str = f'relation "{LITERAL}" does not exist') -> bytes:
    return msg(b"E", cstr("SERROR") + cstr("VERROR") + cstr("C" + code) + cstr("M" + text) + b"\x00")


def notice(text: str = "there is no transaction in progress") -> bytes:
    return msg(b"N", cstr("SWARNING") + cstr("VWARNING") + cstr("C25P01") + cstr("M" + text) + b"\x00")


def notification(channel: str = "jobs", payload: str = "job-1") -> bytes:
    return msg(b"A", struct.pack(">I", 4242) + cstr(channel) + cstr(payload))


def parameter_status(name: str = "TimeZone", value: str = "UTC") -> bytes:
    return msg(b"S", cstr(name) + cstr(value))


def result(names: tuple[str, ...], rows: list[tuple[bytes | None, ...]], tag: str | None = None) -> bytes:
    out = row_description(*names) + b"".join(data_row(*r) for r in rows)
    return out + complete(tag or f"SELECT {len(rows)}")


def parse(sql: str, name: str = "", types: int = 0) -> bytes:
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack(">H", types) + b"\x00\x00\x00\x19" * types)


def bind(portal: str = "", stmt: str = "", *values: bytes) -> bytes:
    body = cstr(portal) + cstr(stmt) + struct.pack(">H", 0) + struct.pack(">H", len(values))
    for v in values:
        body += struct.pack(">I", len(v)) + v
    return msg(b"B", body + struct.pack(">H", 0))


def describe(kind: bytes = b"P", name: str = "") -> bytes:
    return msg(b"D", kind + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack(">I", max_rows))


def close(kind: bytes = b"S", name: str = "") -> bytes:
    return msg(b"C", kind + cstr(name))


SYNC = msg(b"S")
FLUSH = msg(b"H")
TERMINATE = msg(b"X")
PARSE_OK, BIND_OK, CLOSE_OK, NO_DATA, SUSPENDED, EMPTY = (
    msg(t) for t in (b"1", b"2", b"3", b"n", b"s", b"I")
)


def extended(sql: str, *values: bytes, stmt: str = "") -> bytes:
    """One statement the way psycopg sends it: Parse, Bind, Describe portal, Execute."""
    return parse(sql, stmt, len(values)) + bind("", stmt, *values) + describe() + execute()


def extended_answer(names: tuple[str, ...], rows: list[tuple[bytes | None, ...]]) -> bytes:
    return (
        PARSE_OK
        + BIND_OK
        + row_description(*names)
        + b"".join(data_row(*r) for r in rows)
        + complete(f"SELECT {len(rows)}")
    )


def logged_in(loop: Loop, user: str = "app", database: str = "shop") -> None:
    loop.feed(REQ, startup(user, database))
    loop.feed(RESP, auth(3))
    loop.feed(REQ, password())
    loop.feed(RESP, LOGIN_TAIL)
    loop.exchanges.clear()
    loop.records.clear()


def dump(loop: Loop) -> str:
    """Everything the pipeline kept: records, exchanges, state, queued frames."""
    return repr(loop.records) + repr(loop.exchanges) + repr(loop.state) + repr(loop.queues)
