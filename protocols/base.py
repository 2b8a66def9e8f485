"""The protocol contract: sans-IO parsers and stitchers, after Pixie's ParseFrame/StitchFrames.

A protocol never does I/O, never reads a clock and never raises on bad bytes. The generic framing loop
in `pipeline/framing.py` owns the buffers and the timestamps; a protocol only says what the bytes are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Generic, TypeVar

F = TypeVar("F")  # a frame: one request or one response message (or one HTTP/2 frame)
S = TypeVar("S")  # per-connection protocol state (HPACK tables, prepared statements, ...)
X = TypeVar("X")  # an exchange: a request matched with its response

AttrValue = str | int | float | bool


class Direction(Enum):
    """Which way a frame travels, relative to the connection's client and server."""

    REQUEST = "request"  # client -> server
    RESPONSE = "response"  # server -> client


class Role(IntEnum):
    """The traced process's side of the connection (values mirror bpf/include/events.h)."""

    UNKNOWN = 0
    CLIENT = 1
    SERVER = 2


@dataclass(frozen=True, slots=True)
class NeedData:
    """More bytes are needed before a frame can be parsed."""


NEED_DATA = NeedData()


@dataclass(slots=True)  # one per frame or exchange: a frozen dataclass costs ~3x to build
class Parsed(Generic[F]):
    frame: F
    size: int  # bytes of the buffer the frame used, > 0


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str  # one short phrase, counted in the parse-error metric


@dataclass(slots=True)
class Skip(Generic[F]):
    """A message whose body need not be read: `size` bytes of the buffer were parsed (headers, a chunk-size
    line), then the framing loop discards `skip` more bytes unseen, whether or not they have arrived yet,
    so a body is never buffered. `frame` is the message as known so far. Without `more` it is complete
    once those bytes are passed; with `more` parse_frame is called again after them, and its next result
    (Parsed or another Skip) continues the same message, as with chunk after chunk of a chunked body.
    If the stream is cut first, the loop records `frame` as truncated. size + skip must be > 0."""

    frame: F
    size: int
    skip: int
    more: bool = False


ParseResult = Parsed[F] | NeedData | Invalid | Skip[F]


@dataclass(slots=True)  # one per frame or exchange: a frozen dataclass costs ~3x to build
class Timed(Generic[F]):
    """A frame stamped by the framing loop with capture times of its first and last bytes."""

    frame: F
    start_ns: int
    end_ns: int
    position: int = 0  # byte position of the frame's first byte in its direction
    truncated: bool = False  # some of its bytes were not captured (filled, not seen)


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What is known about one traced connection, from the traced process's point of view."""

    conn_id: str  # node/pid/fd/generation: unique per connection
    local: Endpoint
    remote: Endpoint
    role: Role
    role_inferred: bool = False
    pid: int = 0
    process: str = ""
    node: str = ""
    container_id: str = ""
    executable: str = ""  # path of the process's program
    service: str = ""  # as the capture named it (mapping, pod label): read it through service_name()
    k8s_pod: str = ""
    k8s_namespace: str = ""
    k8s_container: str = ""
    tls: bool = False  # plaintext seen through the TLS library (uprobes): encrypted on the wire

    @property
    def client(self) -> Endpoint:
        return self.remote if self.role == Role.SERVER else self.local

    @property
    def server(self) -> Endpoint:
        return self.local if self.role == Role.SERVER else self.remote


UNKNOWN_SERVICE = "unknown_service"  # OpenTelemetry's service.name when nothing names the service


def service_name(conn: ConnInfo) -> str:
    """The one `service.name` of a traced end, for every output (docs/attributes.md, "service.name").

    First the name the capture resolved (`capture.services` mapping, then the pod's
    `app.kubernetes.io/name`/`app` label), then the Kubernetes container name, then the process
    name, then OpenTelemetry's fallback `unknown_service:<process.executable.name>`.
    """
    if conn.service:
        return conn.service
    if conn.k8s_container:
        return conn.k8s_container
    if conn.process:
        return conn.process
    executable = conn.executable.rpartition("/")[2]
    return f"{UNKNOWN_SERVICE}:{executable}" if executable else UNKNOWN_SERVICE


@dataclass(slots=True)  # one per frame or exchange: a frozen dataclass costs ~3x to build
class L7Record:
    """One exchange, as every exporter sees it: nothing downstream branches on the protocol."""

    protocol: str  # "http", "grpc", "mysql"
    role: Role  # SERVER -> span kind SERVER; CLIENT -> CLIENT
    name: str  # low-cardinality span name, e.g. "GET /users", "demo.Greeter/SayHello"
    start_ns: int
    end_ns: int
    conn: ConnInfo
    metric: str  # the duration histogram it feeds, e.g. "http.server.request.duration"
    error_type: str | None = None  # semconv error.type; None when the exchange succeeded
    attributes: dict[str, AttrValue] = field(default_factory=dict)  # semconv keys only
    metric_attributes: tuple[str, ...] = ()  # which attribute keys are low-cardinality metric labels
    truncated: bool = False
    degraded: bool = False  # parsed without full state (e.g. HPACK desync): some fields unknown
    record_id: str = ""  # conn_id + stream position: identical across re-processing
    trace_id: str = ""  # from a propagated traceparent (or set by pipeline/call_chains.py), hex
    parent_span_id: str = ""
    # Messages this exchange wrote to / read from a log, as protocol-scoped keys (e.g. a Kafka record
    # batch: "kafka/<topic>/<partition>/<base offset>"): the pipeline links a reader to its writer.
    produced: tuple[str, ...] = ()
    consumed: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) hex of the spans that wrote what it read
    span_id: str = ""  # hex; set by pipeline/call_chains.py (else derived from record_id at export)

    @property
    def error(self) -> bool:
        return self.error_type is not None

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class ProtocolSpec(Generic[F, S, X]):
    """Everything the pipeline knows about a protocol. `protocols/registry.py` lists them."""

    name: str
    # Does this buffer start with a message of this protocol travelling in `direction`? By content.
    detect: Callable[[bytes, Direction], bool]
    new_state: Callable[[], S]
    parse_frame: Callable[[memoryview, Direction, S], ParseResult]
    # Offset >= start of the next plausible frame start in the buffer, or None: resync after gaps.
    find_boundary: Callable[[memoryview, Direction, int], int | None]
    # Pops matched frames from the two deques, returns exchanges; unmatched frames stay queued.
    stitch: Callable[[deque[Timed[F]], deque[Timed[F]], S], list[X]]
    to_record: Callable[[X, ConnInfo], L7Record]
    # Called when a gap (lost bytes) interrupts `direction`: drop state that can no longer be trusted.
    on_gap: Callable[[S, Direction], None] = lambda state, direction: None
    # Responses come in request order (HTTP/1.1, MySQL), so after lost response bytes only the newest
    # request can still be answered; multiplexed protocols (HTTP/2) match by their own ids instead.
    ordered: bool = True
    # A number unique within the connection that re-processing reproduces: the first request byte's
    # position (Timed.position) or a stream id. Record ids are built from it.
    exchange_position: Callable[[X], int] | None = None
    # The connection ended with `direction` complete: messages delimited by the close may finish now.
    on_eof: Callable[[S, Direction], None] = lambda state, direction: None
    # The stream ended `seen` bytes into a message whose body was being skipped (see Skip): the frame as
    # far as it went (e.g. the body size actually transferred). The record is marked truncated anyway.
    cut_frame: Callable[[F, int], F] = lambda frame, seen: frame
    # Frames `stitch` dropped unpaired since the last call (their answer or question was lost): counted
    # as unmatched_frames, so no frame leaves the queues uncounted.
    take_unmatched: Callable[[S], int] = lambda state: 0
