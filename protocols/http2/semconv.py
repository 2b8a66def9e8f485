"""HTTP/2 and gRPC exchanges as L7Records: the only place that knows the attribute names."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, L7Record, Role
from protocols.http2.types import H2Exchange, Headers, error_code_name
from protocols.http_semconv import (
    authority,
    low_cardinality_path,
    parse_traceparent,
    redact_query,
    status_error_type,
    url_full,
)
from protocols.network_semconv import add_peers

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
_HTTP_METRIC_KEYS = (
    "http.request.method", "http.response.status_code", "network.protocol.version", "url.scheme",
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
    trace_id, parent = parse_traceparent(req.get("traceparent") or "")
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
    add_peers(attrs, conn)
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
    attrs: dict[str, AttrValue] = {"network.protocol.name": "http", "network.protocol.version": "2"}
    method = req.get(":method")
    target = req.get(":path")
    path = query = None
    if method:
        attrs["http.request.method"] = method
    if target is not None:
        path, sep, rest = target.partition("?")
        attrs["url.path"] = path
        if sep:
            query = rest
            attrs["url.query"] = redact_query(query)
    scheme = req.get(":scheme")
    if scheme:
        attrs["url.scheme"] = scheme
    agent = req.get("user-agent")
    if agent:
        attrs["user_agent.original"] = agent
    attrs["http.request.body.size"] = x.request_body_size
    attrs["http.response.body.size"] = x.response_body_size
    client = conn.role == Role.CLIENT
    error: str | None = None
    status = _small_int(resp.get(":status"))
    if status is not None:
        attrs["http.response.status_code"] = status
        error = status_error_type(status, server=not client)
    if error is None:
        error = _stream_error(x)  # reset or refused before (or while) the response completed
    name = "HTTP"  # semconv's name when the method is unknown
    if method:
        name = f"{method} {low_cardinality_path(path)}" if path else method
    add_peers(attrs, conn)
    if client and path is not None:
        host = req.get(":authority") or authority(conn.remote.ip, conn.remote.port)
        attrs["url.full"] = url_full(scheme or "http", host, path, query)
    keys = _HTTP_METRIC_KEYS + (("server.address", "server.port") if client else ())
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
        metric_attributes=tuple(k for k in keys if k in attrs),
        truncated=x.truncated,
        degraded=x.degraded,
        trace_id=trace_id,
        parent_span_id=parent,
    )
