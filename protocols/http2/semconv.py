"""HTTP/2 and gRPC exchanges as L7Records: gRPC's rpc.* attributes here, plain HTTP/2 through the shared
HTTP semantic-conventions builder (protocols/http_semconv.py)."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, L7Record, Role
from protocols.http2.types import H2Exchange, Headers, error_code_name
from protocols.http_semconv import (
    b3_as_traceparent,
    http_attributes,
    parse_traceparent,
    server_endpoint,
    split_target,
)

GRPC_STATUS = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip

# Message framing attributes: semconv has no stable keys for per-call counts/sizes yet.
REQ_MSG_COUNT = "rpc.request.message.count"
RESP_MSG_COUNT = "rpc.response.message.count"
REQ_MSG_SIZE = "rpc.request.message.size"
RESP_MSG_SIZE = "rpc.response.message.size"

_GRPC_METRIC_KEYS = (
    "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code", "server.address", "server.port",
)  # fmt: skip


def _first(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        if name not in out:
            out[name] = value
    return out


def is_grpc(x: H2Exchange, req: dict[str, str], resp: dict[str, str]) -> bool:
    ctype = req.get("content-type") or resp.get("content-type") or ""
    if ctype:
        return ctype.startswith("application/grpc")
    return "grpc-status" in resp or any(n == "grpc-status" for n, _ in x.trailers)


def _small_int(raw: str | None) -> int | None:
    if raw is None or not 0 < len(raw) <= 9 or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


_TIMEOUT_UNIT_NS = {
    "H": 3_600_000_000_000,
    "M": 60_000_000_000,
    "S": 1_000_000_000,
    "m": 1_000_000,
    "u": 1_000,
    "n": 1,
}
_CANCEL = 0x8
# The gRPC conventions: a server's span is an error only for these codes (UNKNOWN, DEADLINE_EXCEEDED,
# UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); NOT_FOUND and the like are the caller's problem.
SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})
_DEADLINE_EXCEEDED = 4


def grpc_timeout_ns(raw: str | None) -> int | None:
    """The `grpc-timeout` request header (1-8 digits and a unit, gRPC over HTTP/2 spec) in ns."""
    if not raw or not 2 <= len(raw) <= 9:
        return None
    unit = _TIMEOUT_UNIT_NS.get(raw[-1])
    digits = raw[:-1]
    if unit is None or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits) * unit


def _deadline_passed(x: H2Exchange, req: dict[str, str]) -> bool:
    """A stream cancelled once its deadline was up: the client's own DEADLINE_EXCEEDED, not a cancel."""
    timeout = grpc_timeout_ns(req.get("grpc-timeout")) if x.rst_code == _CANCEL else None
    return timeout is not None and x.end_ns - x.start_ns >= timeout


def _stream_error(x: H2Exchange) -> str | None:
    if x.refused:
        return error_code_name(x.rst_code) if x.rst_code else "REFUSED_STREAM"
    if x.rst_code is not None:
        return error_code_name(x.rst_code)
    return None


def to_record(x: H2Exchange, conn: ConnInfo) -> L7Record:
    req = _first(x.request_headers)
    resp = _first(x.response_headers)
    traceparent = req.get("traceparent") or b3_as_traceparent(
        req.get("b3", ""), req.get("x-b3-traceid", ""), req.get("x-b3-spanid", "")
    )
    trace_id, parent = parse_traceparent(traceparent)
    if is_grpc(x, req, resp):
        return _grpc(x, conn, req, resp, trace_id, parent)
    return _http(x, conn, req, resp, trace_id, parent)


def _grpc(
    x: H2Exchange, conn: ConnInfo, req: dict[str, str], resp: dict[str, str], trace_id: str, parent: str
) -> L7Record:
    attrs: dict[str, AttrValue] = {"rpc.system": "grpc", "network.protocol.version": "2"}
    name = "grpc"
    path = req.get(":path")
    if path and path.startswith("/") and path.count("/") == 2:
        service, method = path[1:].split("/")
        if service:
            attrs["rpc.service"] = service
        if method:
            attrs["rpc.method"] = method
        name = path[1:]
    trailers = _first(x.trailers)
    raw_status = trailers.get("grpc-status", resp.get("grpc-status"))  # trailers-only: in the headers
    status = _small_int(raw_status)
    if status is None and _deadline_passed(x, req):
        status = _DEADLINE_EXCEEDED  # no status crosses the wire; both ends report this one
    error: str | None = None
    if status is not None:
        attrs["rpc.grpc.status_code"] = status
        if status and (conn.role != Role.SERVER or status in SERVER_ERRORS):
            error = GRPC_STATUS[status] if status < len(GRPC_STATUS) else str(status)
    else:
        error = _stream_error(x)
        http_status = resp.get(":status")
        if error is None and http_status is not None and http_status != "200":
            error = http_status  # no gRPC status at all: the HTTP status says what failed
    degraded = x.degraded
    for key, count in ((REQ_MSG_COUNT, x.request_msgs), (RESP_MSG_COUNT, x.response_msgs)):
        if count is None:
            degraded = True  # message framing was lost: counts unknown, not guessed
        else:
            attrs[key] = count
    if x.request_msgs is not None:
        attrs[REQ_MSG_SIZE] = x.request_msg_bytes
    if x.response_msgs is not None:
        attrs[RESP_MSG_SIZE] = x.response_msg_bytes
    # server.address/port by the HTTP rule (the `:authority` the call was made to), client.* from the socket.
    attrs["server.address"], attrs["server.port"] = server_endpoint(
        conn, req.get(":authority") or "", req.get(":scheme") or ("https" if conn.tls else "http")
    )
    peer = conn.remote if conn.role == Role.SERVER else conn.local
    attrs["client.address"], attrs["client.port"] = peer.ip, peer.port
    client = conn.role == Role.CLIENT
    return L7Record(
        protocol="grpc",
        role=conn.role,
        name=name,
        start_ns=x.start_ns,
        end_ns=x.end_ns,
        conn=conn,
        metric="rpc.client.call.duration" if client else "rpc.server.call.duration",
        error_type=error,
        attributes=attrs,
        metric_attributes=tuple(k for k in _GRPC_METRIC_KEYS if k in attrs),
        truncated=x.truncated,
        degraded=degraded,
        trace_id=trace_id,
        parent_span_id=parent,
    )


def _http(
    x: H2Exchange, conn: ConnInfo, req: dict[str, str], resp: dict[str, str], trace_id: str, parent: str
) -> L7Record:
    authority, path, query = split_target(req.get(":path") or "")
    # A stream reset or refused before (or while) the response completed: the error when no status says one.
    name, attrs, metric_keys, error = http_attributes(
        conn, req.get(":method") or "", req.get(":scheme") or ("https" if conn.tls else "http"),
        req.get(":authority") or req.get("host") or authority, path, query, "2",
        _small_int(resp.get(":status")), req.get("user-agent") or "",
        x.request_body_size, x.response_body_size, _stream_error(x),
    )  # fmt: skip
    client = conn.role == Role.CLIENT
    return L7Record(
        protocol="http",
        role=conn.role,
        name=name,
        start_ns=x.start_ns,
        end_ns=x.end_ns,
        conn=conn,
        metric="http.client.request.duration" if client else "http.server.request.duration",
        error_type=error,
        attributes=attrs,
        metric_attributes=metric_keys,
        truncated=x.truncated,
        degraded=x.degraded,
        trace_id=trace_id,
        parent_span_id=parent,
    )
