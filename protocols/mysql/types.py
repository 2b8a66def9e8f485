"""MySQL frames (one wire packet each), the exchange, and the per-connection state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Command bytes (first payload byte of a seq-0 packet on the REQUEST side).
COM_SLEEP = 0x00
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_CREATE_DB = 0x05
COM_DROP_DB = 0x06
COM_REFRESH = 0x07
COM_SHUTDOWN = 0x08
COM_STATISTICS = 0x09
COM_PROCESS_INFO = 0x0A
COM_PROCESS_KILL = 0x0C
COM_DEBUG = 0x0D
COM_PING = 0x0E
COM_CHANGE_USER = 0x11
COM_BINLOG_DUMP = 0x12
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F

COMMAND_NAMES: dict[int, str] = {
    COM_QUIT: "QUIT",
    COM_INIT_DB: "INIT_DB",
    COM_QUERY: "QUERY",
    COM_FIELD_LIST: "FIELD_LIST",
    COM_CREATE_DB: "CREATE_DB",
    COM_DROP_DB: "DROP_DB",
    COM_REFRESH: "REFRESH",
    COM_SHUTDOWN: "SHUTDOWN",
    COM_STATISTICS: "STATISTICS",
    COM_PROCESS_INFO: "PROCESS_INFO",
    COM_PROCESS_KILL: "PROCESS_KILL",
    COM_DEBUG: "DEBUG",
    COM_PING: "PING",
    COM_CHANGE_USER: "CHANGE_USER",
    COM_BINLOG_DUMP: "BINLOG_DUMP",
    COM_STMT_PREPARE: "STMT_PREPARE",
    COM_STMT_EXECUTE: "STMT_EXECUTE",
    COM_STMT_SEND_LONG_DATA: "STMT_SEND_LONG_DATA",
    COM_STMT_CLOSE: "STMT_CLOSE",
    COM_STMT_RESET: "STMT_RESET",
    COM_SET_OPTION: "SET_OPTION",
    COM_STMT_FETCH: "STMT_FETCH",
    COM_RESET_CONNECTION: "RESET_CONNECTION",
}

# Commands the server never answers.
NO_RESPONSE = frozenset({COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA})

# Capability flags used here.
CLIENT_CONNECT_WITH_DB = 0x00000008
CLIENT_COMPRESS = 0x00000020
CLIENT_PROTOCOL_41 = 0x00000200
CLIENT_SSL = 0x00000800
CLIENT_SECURE_CONNECTION = 0x00008000
CLIENT_PLUGIN_AUTH_LENENC = 0x00200000
CLIENT_DEPRECATE_EOF = 0x01000000
CLIENT_QUERY_ATTRIBUTES = 0x08000000

# Server status flags.
SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_STATUS_CURSOR_EXISTS = 0x0040

MAX_PAYLOAD = 0xFFFFFF  # a payload of exactly this length continues in the next packet

# Frame kinds, decided in parse_frame from direction, sequence id and first byte only.
K_COMMAND = 0  # REQUEST, seq 0: a command packet
K_HANDSHAKE_RESPONSE = 1  # REQUEST, seq 1 at connection start: login
K_SSL_REQUEST = 2  # REQUEST, seq 1, 32 bytes with CLIENT_SSL: TLS follows
K_PACKET = 3  # anything else (auth data, responses, rows, column definitions)
K_CONTINUATION = 4  # the rest of a payload longer than 16 MiB
K_GREETING = 5  # RESPONSE, seq 0, protocol version 10
K_COMPRESSED = 6  # a compressed-protocol packet; `first`/`data` describe its first inner packet


class Packet(NamedTuple):
    """One MySQL packet, reduced to what the state machine needs (bounded `data`).

    A NamedTuple: immutable like a frozen dataclass, but several times cheaper to build (one per packet).
    """

    kind: int
    seq: int  # sequence id (the compressed sequence id for K_COMPRESSED)
    length: int  # payload length on the wire
    first: int  # first payload byte, -1 for an empty payload
    data: bytes = b""  # a bounded prefix of the payload (SQL, ERR/OK fields, ...), never auth data
    user: str = ""  # K_HANDSHAKE_RESPONSE only
    database: str = ""  # K_HANDSHAKE_RESPONSE only
    caps: int = 0  # K_HANDSHAKE_RESPONSE / K_GREETING capability flags
    inner_seq: int = -1  # K_COMPRESSED: sequence id of the first inner packet, -1 when unknown


@dataclass(slots=True)
class Exchange:
    """A command and the response that ended it (or a login)."""

    command: int  # command byte, or -1 for a login
    start_ns: int
    end_ns: int
    position: int = 0  # byte position of the request's first byte (of the response for a refusal)
    query_text: str = ""  # SQL with literals replaced by "?" (the raw text is never kept)
    operation: str = ""
    table: str = ""
    namespace: str = ""
    user: str = ""
    server_version: str = ""
    statement_id: int = -1
    error_code: int = 0  # 0 = no error
    error_message: str = ""
    returned_rows: int = -1  # -1 = not a result set / unknown
    columns: int = -1
    affected_rows: int = -1
    compressed: bool = False
    truncated: bool = False
    degraded: bool = False


STMT_CAP = 1024  # prepared statements remembered per connection


@dataclass(slots=True)
class Stmt:
    query_text: str
    operation: str
    table: str


@dataclass(slots=True)
class State:
    """Per-connection state: login facts, the prepared-statement map, framing flags."""

    server_version: str = ""
    user: str = ""
    database: str = ""
    client_caps: int = 0
    handshake_seen: bool = False
    tls: bool = False  # SSLRequest seen: the rest of the socket stream is TLS records
    compress_pending: bool = False  # CLIENT_COMPRESS negotiated, login not finished yet
    req_compressed: bool = False
    resp_compressed: bool = False
    req_continues: bool = False  # last REQUEST packet had a 16 MiB payload
    resp_continues: bool = False
    desynced: bool = False  # a gap happened: the next exchange is degraded
    stmts: dict[int, Stmt] = field(default_factory=dict)
    progress: Progress | None = None


# Response phases of the stitcher's state machine.
P_FIRST = 0  # the first packet of a response (or of the next result set)
P_COLDEFS = 1  # column definitions of a result set
P_AFTER_DEFS = 2  # an EOF (classic protocol) or the first row / the end
P_ROWS = 3  # rows until EOF / OK(0xFE) / ERR
P_PREP_PARAMS = 4  # COM_STMT_PREPARE_OK: parameter definitions
P_PREP_PARAMS_EOF = 5
P_PREP_COLS = 6
P_PREP_COLS_EOF = 7
P_AUTH = 8  # login / COM_CHANGE_USER: auth switch packets until OK / ERR
P_DONE = 9
P_INFILE = 10  # LOAD DATA LOCAL: the client sends the file; then one OK / ERR


@dataclass(slots=True)
class Progress:
    """The response being consumed for the request at the head of the queue (survives rounds)."""

    position: int  # byte position of that request frame: identifies it
    phase: int
    expect_seq: int
    end_ns: int = 0
    left: int = 0  # definitions still expected in the current section
    columns: int = -1
    rows: int = -1
    affected: int = -1
    error_code: int = 0
    error_message: str = ""
    stmt_id: int = -1
    params: int = 0
    truncated: bool = False
    degraded: bool = False
    frames: int = 0
