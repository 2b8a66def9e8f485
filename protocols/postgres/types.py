"""PostgreSQL frames (one protocol message each, DataRow runs folded), the exchange, the state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Message type bytes. The same letter means different messages in the two directions.
Q, P, B, E, D, S, H, C, X = (ord(c) for c in "QPBEDSHCX")  # Query .. Terminate (frontend)
F, COPY_DATA, COPY_DONE, COPY_FAIL, PASSWORD = ord("F"), ord("d"), ord("c"), ord("f"), ord("p")
AUTH, KEY_DATA, READY, ROW_DESC, DATA_ROW = (ord(c) for c in "RKZTD")
ERROR, NOTICE, NOTIFY, PARAM_STATUS, COMPLETE = ord("E"), ord("N"), ord("A"), ord("S"), ord("C")
PARSE_OK, BIND_OK, CLOSE_OK, NO_DATA, SUSPENDED = (ord(c) for c in "123ns")
PARAM_DESC, EMPTY, COPY_IN, COPY_OUT, COPY_BOTH = (ord(c) for c in "tIGHW")
FUNC_RESULT, NEGOTIATE = ord("V"), ord("v")

# Messages without a type byte (the first message of a connection) and pseudo-frames.
T_STARTUP = -1  # StartupMessage (protocol 3.0)
T_SSL = -2  # SSLRequest
T_GSS = -3  # GSSENCRequest
T_CANCEL = -4  # CancelRequest (on a connection of its own)
T_SSL_REPLY = -5  # the server's one-byte answer to SSLRequest/GSSENCRequest: data = b"N", b"S" or b"G"
T_OPAQUE = -6  # a TLS record after an accepted SSLRequest (the plaintext comes through the TLS probes)

FRONTEND = frozenset(b"QPBEDSHCXdcfFp")
BACKEND = frozenset(b"RKSZTDCENA123nstIGHWdcVv")
# Length fields that are fixed for a message type (a strong check on bytes of unknown origin).
FIXED_REQUEST = {S: 4, H: 4, X: 4, COPY_DONE: 4}
FIXED_RESPONSE = {
    PARSE_OK: 4, BIND_OK: 4, CLOSE_OK: 4, NO_DATA: 4, SUSPENDED: 4, EMPTY: 4, COPY_DONE: 4, READY: 5,
    KEY_DATA: 12,
}  # fmt: skip
# Backend messages that may arrive at any time and answer no request.
ASYNC = frozenset({NOTICE, NOTIFY, PARAM_STATUS})

PROTOCOL_3 = 0x00030000
SSL_CODE = 80877103
GSS_CODE = 80877104
CANCEL_CODE = 80877102

MAX_LEN = (1 << 30) - 1  # PostgreSQL refuses longer messages (PQ_LARGE_MESSAGE_LIMIT)
MAX_STARTUP = 10000  # the server's own limit on a startup packet
SQL_CAP = 4096  # SQL bytes kept per Query/Parse
NAME_CAP = 256  # statement/portal/user/database name bytes
TAG_CAP = 64  # CommandComplete tag bytes
ERR_CAP = 512  # ErrorResponse bytes looked at for the SQLSTATE (the message text is never kept)
SKIP_OVER = 64 << 10  # a body longer than this is passed unbuffered (Skip) once its kept head is in
ROW_FOLD = 4096  # consecutive complete DataRows folded into one frame at most
STMT_CAP = 1024  # prepared statements and portals remembered per connection
LOGIN_FRAME_CAP = 64  # backend messages tolerated in a login before it is given up as degraded


class Msg(NamedTuple):
    """One message (or a run of `rows` DataRows), reduced to what the stitcher needs.

    `data` is a bounded extract, never a password, SASL message, key or parameter value: the SQL of a
    Query/Parse, names of Bind/Describe/Close/Execute, a CommandComplete tag, an error's SQLSTATE,
    the ReadyForQuery status, the authentication code, the startup user and database.
    """

    type: int
    length: int  # the length field (type byte excluded); for a fold, of the first row
    data: bytes = b""
    rows: int = 1


@dataclass(slots=True)
class Exchange:
    """A query, an Execute of a prepared statement, a login or a cancel request, with its outcome."""

    kind: str  # "query", "execute", "parse", "bind", "describe", "function", "login", "cancel"
    start_ns: int
    end_ns: int
    position: int = 0  # byte position of the request message that names the exchange
    query_text: str = ""  # SQL with literals replaced by "?" (the raw text is never kept)
    operation: str = ""
    table: str = ""
    namespace: str = ""
    user: str = ""
    sqlstate: str = ""  # "" = no error
    error_type: str = ""  # SQLSTATE, or "pipeline_aborted" for an Execute the server skipped
    returned_rows: int = -1
    suspended: bool = False  # Execute with a row limit stopped early (PortalSuspended)
    truncated: bool = False
    degraded: bool = False


@dataclass(slots=True)
class Stmt:
    query_text: str
    operation: str
    table: str


@dataclass(slots=True)
class Progress:
    """The answer being consumed for the request at the head of the queue (survives stitch rounds)."""

    position: int
    frames: int = 0
    rows: int = -1
    sqlstate: str = ""
    end_ns: int = 0
    copy_in: bool = False
    suspended: bool = False
    truncated: bool = False
    degraded: bool = False


@dataclass(slots=True)
class State:
    """Per-connection state: login facts, statements and portals, the extended-query batch."""

    user: str = ""
    database: str = ""
    ssl_pending: bool = False  # SSLRequest/GSSENCRequest sent: the next response byte is its answer
    tls: bool = False  # SSLRequest accepted: TLS records may pass (plaintext comes through TLS probes)
    gss: bool = False  # GSSENCRequest accepted: the rest of the connection is GSSAPI-encrypted
    stmts: dict[bytes, Stmt] = field(default_factory=dict)
    portals: dict[bytes, Stmt | None] = field(default_factory=dict)
    aborted: bool = False  # an error in an extended-query batch: the server skips to Sync
    abort_end_ns: int = 0
    pending_error: Exchange | None = None  # a failed Parse/Bind/Describe: reported with its Execute
    skipped: dict[bytes, Stmt | None] = field(default_factory=dict)  # statements/portals the server skipped
    batch_start_ns: int = -1  # first Parse/Bind/Describe of the Execute being assembled
    batch_truncated: bool = False
    desynced: bool = False  # bytes were lost: the next exchange is degraded
    ended: bool = False  # the server's side of the connection closed: no more answers will come
    unmatched: int = 0  # frames dropped unpaired since take_unmatched
    progress: Progress | None = None
