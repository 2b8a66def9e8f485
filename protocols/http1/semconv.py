"""HTTP/1.x exchange -> L7Record: the request read into the shared HTTP semantic-conventions builder."""

from __future__ import annotations

from protocols.base import ConnInfo, L7Record, Role
from protocols.http_semconv import http_attributes, parse_traceparent, split_target

from .types import Exchange

__all__ = ["split_target", "to_record"]


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    timed_req, timed_resp = x.request, x.response
    req = timed_req.frame
    resp = timed_resp.frame
    method = req.method
    target = req.target
    if method == "CONNECT":  # authority-form target: the tunnel's far end
        authority, path, query = req.host or target, "", ""
    elif target[:1] == "/" and "#" not in target:  # origin-form without a fragment: split_target inlined
        authority = req.host
        path, _, query = target.partition("?")
    else:
        # The spec: an absolute-form target's authority wins over the Host header.
        authority, path, query = split_target(target)
        authority = authority or req.host
    name, attrs, metric_keys, error_type = http_attributes(
        conn, method, "https" if conn.tls else "http", authority, path, query, req.version, resp.status,
        req.user_agent, req.body_size, resp.body_size,
    )  # fmt: skip
    if resp.upgrade:
        attrs["http.response.header.upgrade"] = resp.upgrade
    trace_id, parent_span_id = parse_traceparent(req.traceparent) if req.traceparent else ("", "")
    server_role = conn.role == Role.SERVER
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
        metric_keys,
        timed_req.truncated or timed_resp.truncated or resp.cut,
        x.degraded,
        "",
        trace_id,
        parent_span_id,
    )
