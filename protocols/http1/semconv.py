"""HTTP/1.x exchange -> L7Record with OpenTelemetry HTTP semantic-convention attributes."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, L7Record, Role
from protocols.http_semconv import (
    authority,
    low_cardinality_path,
    parse_traceparent,
    redact_query,
    status_error_type,
    url_full,
)

from .types import Exchange

# Methods semconv knows (RFC 9110 + PATCH); others are reported as "_OTHER" with the original kept.
_SEMCONV_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_SERVER_METRIC_KEYS = (
    "http.request.method", "http.response.status_code", "error.type",
    "network.protocol.name", "network.protocol.version", "url.scheme",
)  # fmt: skip
_CLIENT_METRIC_KEYS = (*_SERVER_METRIC_KEYS, "server.address", "server.port")


def split_target(target: str) -> tuple[str, str, str]:
    """(authority host from an absolute-form target or "", path, query) of a request-target."""
    host = ""
    scheme_end = -1 if target[:1] == "/" else target.find("://")  # origin-form, the common case: no scheme
    if scheme_end > 0:
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


# metric_attributes by (server side, error): the keys always present in attrs, in a fixed order.
_METRIC_KEYS = {
    (server, error): tuple(k for k in (_SERVER_METRIC_KEYS if server else _CLIENT_METRIC_KEYS)
                           if error or k != "error.type")
    for server in (True, False)
    for error in (True, False)
}  # fmt: skip


_HOSTS: dict[str, str] = {}  # Host header -> host without port: few distinct values per agent
_HOSTS_CAP = 1024


def _server_host(host: str) -> str:
    got = _HOSTS.get(host)
    if got is None:
        got = host_without_port(host)
        if len(_HOSTS) < _HOSTS_CAP:
            _HOSTS[host] = got
    return got


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    timed_req, timed_resp = x.request, x.response
    req = timed_req.frame
    resp = timed_resp.frame
    server_role = conn.role == Role.SERVER
    local, remote = conn.local, conn.remote
    server, client = (local, remote) if server_role else (remote, local)
    req_method = req.method
    method = req_method if req_method in _SEMCONV_METHODS else "_OTHER"
    status = resp.status
    if req_method == "CONNECT":
        target_host, path, query = host_without_port(req.target), "", ""
        name = "CONNECT"
    else:
        target = req.target
        if target[:1] == "/" and "#" not in target:  # origin-form without a fragment: split_target inlined
            target_host = ""
            path, _, query = target.partition("?")
        else:
            target_host, path, query = split_target(target)
        name = f"{'HTTP' if method == '_OTHER' else method} {low_cardinality_path(path)}" if path else method
    host = req.host
    server_host = (host if ":" not in host else _server_host(host)) if host else target_host
    error_type = None if status < 400 else status_error_type(status, server_role)
    scheme = "https" if conn.tls else "http"
    # One dict literal for the keys every exchange has: much cheaper than a dozen item assignments.
    attrs: dict[str, AttrValue] = {
        "http.request.method": method,
        "url.scheme": scheme,
        "http.response.status_code": status,
        "network.protocol.name": "http",
        "network.protocol.version": req.version,
        "http.request.body.size": req.body_size,
        "http.response.body.size": resp.body_size,
        "server.address": server_host or server.ip,
        "server.port": server.port,
        "client.address": client.ip,
        "client.port": client.port,
    }
    if method == "_OTHER":
        attrs["http.request.method_original"] = req_method
    if path:
        attrs["url.path"] = path
    if query:
        attrs["url.query"] = redact_query(query)
    if not server_role and path:
        attrs["url.full"] = url_full(scheme, host or authority(server.ip, server.port), path, query or None)
    if req.user_agent:
        attrs["user_agent.original"] = req.user_agent
    if resp.upgrade:
        attrs["http.response.header.upgrade"] = resp.upgrade
    if error_type is not None:
        attrs["error.type"] = error_type
    trace_id, parent_span_id = parse_traceparent(req.traceparent) if req.traceparent else ("", "")
    return L7Record(
        "http",
        conn.role,
        name,
        timed_req.start_ns,
        timed_resp.end_ns,
        conn,
        "http.server.request.duration" if server_role else "http.client.request.duration",
        error_type,
        attrs,
        _METRIC_KEYS[server_role, error_type is not None],
        timed_req.truncated or timed_resp.truncated or resp.cut,
        x.degraded,
        "",
        trace_id,
        parent_span_id,
    )
