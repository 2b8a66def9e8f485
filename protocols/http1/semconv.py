"""HTTP/1.x exchange -> L7Record with OpenTelemetry HTTP semantic-convention attributes."""

from __future__ import annotations

from functools import lru_cache

from protocols.base import AttrValue, ConnInfo, L7Record, Role

from .types import Exchange

# Methods semconv knows (RFC 9110 + PATCH); others are reported as "_OTHER" with the original kept.
_SEMCONV_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_HEX = "0123456789abcdefABCDEF"
_SERVER_METRIC_KEYS = (
    "http.request.method", "http.response.status_code", "error.type",
    "network.protocol.name", "network.protocol.version", "url.scheme",
)  # fmt: skip
_CLIENT_METRIC_KEYS = (*_SERVER_METRIC_KEYS, "server.address", "server.port")


def _id_like(segment: str) -> bool:
    """Numbers, UUIDs, long hex and long mixed tokens: values, not names, in a path."""
    if segment.isdigit():
        return True
    if len(segment) < 8 or not any(c.isdigit() for c in segment):
        return False
    if not segment.strip(_HEX + "-"):
        return True
    return len(segment) >= 16 and any(c.isalpha() for c in segment)


@lru_cache(maxsize=4096)
def low_cardinality_path(path: str) -> str:
    """`/users/123/orders/9f86d081` -> `/users/{id}/orders/{id}`."""
    return "/".join("{id}" if _id_like(segment) else segment for segment in path.split("/"))


def split_target(target: str) -> tuple[str, str, str]:
    """(authority host from an absolute-form target or "", path, query) of a request-target."""
    host = ""
    scheme_end = target.find("://")
    if scheme_end > 0 and not target.startswith("/"):
        rest = target[scheme_end + 3 :]
        slash = rest.find("/")
        authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        host = authority.rpartition("@")[2]
    path, _, query = target.partition("?")
    if "#" in query:
        query = query.partition("#")[0]
    elif "#" in path:
        path = path.partition("#")[0]
    return host, path, query


def host_without_port(host: str) -> str:
    if host.startswith("["):  # IPv6 literal
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def parse_traceparent(value: str) -> tuple[str, str]:
    """(trace_id, parent_span_id) of a valid W3C traceparent, else ("", "")."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return "", ""
    version, trace_id, span_id, flags = parts[0], parts[1], parts[2], parts[3]
    if version == "00" and len(parts) != 4:
        return "", ""
    if len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2:
        return "", ""
    hexdigits = "0123456789abcdef"
    if (trace_id + span_id + flags + version).strip(hexdigits):
        return "", ""
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return "", ""
    return trace_id, span_id


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    req = x.request.frame
    resp = x.response.frame
    server_role = conn.role == Role.SERVER
    method = req.method if req.method in _SEMCONV_METHODS else "_OTHER"
    status = resp.status
    attrs: dict[str, AttrValue] = {"http.request.method": method}
    if method == "_OTHER":
        attrs["http.request.method_original"] = req.method
    if req.method == "CONNECT":
        target_host, path, query = host_without_port(req.target), "", ""
        name = "CONNECT"
    else:
        target_host, path, query = split_target(req.target)
        name = f"{'HTTP' if method == '_OTHER' else method} {low_cardinality_path(path)}" if path else method
    if path:
        attrs["url.path"] = path
    if query:
        attrs["url.query"] = query
    attrs["url.scheme"] = "http"
    attrs["http.response.status_code"] = status
    attrs["network.protocol.name"] = "http"
    attrs["network.protocol.version"] = req.version
    if req.user_agent:
        attrs["user_agent.original"] = req.user_agent
    attrs["http.request.body.size"] = req.body_size
    attrs["http.response.body.size"] = resp.body_size
    if resp.upgrade:
        attrs["http.response.header.upgrade"] = resp.upgrade
    server_host = host_without_port(req.host) if req.host else target_host
    attrs["server.address"] = server_host or conn.server.ip
    attrs["server.port"] = conn.server.port
    attrs["client.address"] = conn.client.ip
    attrs["client.port"] = conn.client.port
    error_type = str(status) if status >= 500 or (status >= 400 and not server_role) else None
    if error_type is not None:
        attrs["error.type"] = error_type
    keys = _SERVER_METRIC_KEYS if server_role else _CLIENT_METRIC_KEYS
    trace_id, parent_span_id = parse_traceparent(req.traceparent) if req.traceparent else ("", "")
    return L7Record(
        protocol="http",
        role=conn.role,
        name=name,
        start_ns=x.request.start_ns,
        end_ns=x.response.end_ns,
        conn=conn,
        metric="http.server.request.duration" if server_role else "http.client.request.duration",
        error_type=error_type,
        attributes=attrs,
        metric_attributes=tuple(k for k in keys if k in attrs),
        truncated=x.truncated,
        degraded=x.degraded,
        trace_id=trace_id,
        parent_span_id=parent_span_id,
    )
