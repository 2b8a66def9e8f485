"""The one HTTP semantic-conventions builder, for HTTP/1.x and HTTP/2 alike (stable OpenTelemetry HTTP
conventions): attributes, metric attributes, span name and error.type of an exchange; also span-name
paths, trace context and redaction. The protocols only read their wire format and call `http_attributes`."""

from __future__ import annotations

import re
from functools import lru_cache

from protocols.base import AttrValue, ConnInfo, Role

_HEX = "0123456789abcdefABCDEF"
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
REDACTED = "REDACTED"
# Query parameters whose values are credentials (semconv's url.query guidance, plus common API-key names).
_SENSITIVE = re.compile(
    r"(?i)^(?:.*(?:pass(?:word|wd)?|secret|token|api[-_]?key|apikey|auth|session|credential|signature)|"
    r"key|sig|code|x-amz-security-token|awsaccesskeyid)$"
)


def _id_like(segment: str) -> bool:
    """Numbers, UUIDs, long hex and long mixed tokens: values, not names, in a path."""
    if len(segment) < 8:  # the common short segment: only a number can be an id
        return segment.isdigit()
    if segment.isdigit():
        return True
    if not any(c.isdigit() for c in segment):
        return False
    if not segment.strip(_HEX + "-"):
        return True
    return len(segment) >= 16 and any(c.isalpha() for c in segment)


@lru_cache(maxsize=4096)
def low_cardinality_path(path: str) -> str:
    """`/users/123/orders/9f86d081` -> `/users/{id}/orders/{id}`."""
    # A list (not a generator) for join, and the short-segment test of _id_like inlined: paths rarely repeat.
    return "/".join([
        ("{id}" if seg.isdigit() else seg) if len(seg) < 8 else ("{id}" if _id_like(seg) else seg)
        for seg in path.split("/")
    ])  # fmt: skip


_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def parse_traceparent(value: str) -> tuple[str, str]:
    """(trace_id, parent_span_id) of a valid W3C traceparent, else ("", "")."""
    m = _TRACEPARENT_00.fullmatch(value)  # parsers strip values already: strip() only when this fails
    if m is None:
        m = _TRACEPARENT_00.fullmatch(value.strip())
    if m is not None:  # version 00, the one in use: one regex instead of the general checks below
        trace_id, span_id = m.groups()
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return "", ""
        return trace_id, span_id
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


_B3 = re.compile(r"([0-9a-f]{16}|[0-9a-f]{32})-([0-9a-f]{16})(?:-[01d](?:-[0-9a-f]{16})?)?")


def b3_as_traceparent(single: str = "", trace_id: str = "", span_id: str = "") -> str:
    """Zipkin B3 context (the `b3` header, or `X-B3-TraceId` + `X-B3-SpanId`) as a W3C traceparent
    string, "" if none is valid: a header the application propagates wins over inferred parents. A
    64-bit trace id is left-padded with zeros, as OpenTelemetry's B3 propagator does."""
    if single:
        m = _B3.fullmatch(single.strip().lower())
        if m is None:
            return ""
        trace_id, span_id = m.group(1), m.group(2)
    trace_id, span_id = trace_id.strip().lower().rjust(32, "0"), span_id.strip().lower()
    if not (len(trace_id) == 32 and len(span_id) == 16) or (trace_id + span_id).strip("0123456789abcdef"):
        return ""
    return f"00-{trace_id}-{span_id}-01"


def _may_be_sensitive(low: str) -> bool:
    """Whether a lowercased ASCII query holds a part that every key _SENSITIVE matches contains."""
    return (
        "pass" in low or "secret" in low or "token" in low or "key" in low or "auth" in low
        or "session" in low or "credential" in low or "sig" in low or "code" in low
    )  # fmt: skip


def redact_query(query: str) -> str:
    """`url.query` with the values of credential-like parameters replaced by REDACTED (keys kept)."""
    if "=" not in query:
        return query
    if query.isascii() and not _may_be_sensitive(query.lower()):  # non-ASCII keys may case-fold: full check
        return query
    parts = []
    for pair in query.split("&"):
        key, eq, _value = pair.partition("=")
        parts.append(f"{key}={REDACTED}" if eq and _SENSITIVE.match(key) else pair)
    return "&".join(parts)


def url_full(scheme: str, authority: str, path: str, query: str | None) -> str:
    """semconv `url.full` of a client's request (required on client spans); the query as in url.query."""
    return f"{scheme}://{authority}{path}" + (f"?{redact_query(query)}" if query is not None else "")


def authority(ip: str, port: int) -> str:
    """host:port of an endpoint, an IPv6 address in brackets (for url.full when no Host was sent)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def status_error_type(status: int, server: bool) -> str | None:
    """semconv error.type for an HTTP status: 5xx always, 4xx too when the traced side is the client."""
    return str(status) if status >= 500 or (status >= 400 and not server) else None


# Methods semconv knows (RFC 9110 + PATCH); others are reported as "_OTHER" with the original kept.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
# http.server.request.duration: method, scheme (required), status, error.type (when set), protocol name and
# version; server.address/port are opt-in there and left out. http.client.request.duration adds them
# (required); url.scheme is opt-in on the client metric and kept so both sides share one key set.
SERVER_METRIC_KEYS = (
    "http.request.method", "http.response.status_code", "error.type",
    "network.protocol.name", "network.protocol.version", "url.scheme",
)  # fmt: skip
CLIENT_METRIC_KEYS = (*SERVER_METRIC_KEYS, "server.address", "server.port")
# Metric keys by (server side, error): the keys present in attrs when method and status are known.
_METRIC_KEYS = {
    (server, error): tuple(k for k in (SERVER_METRIC_KEYS if server else CLIENT_METRIC_KEYS)
                           if error or k != "error.type")
    for server in (True, False)
    for error in (True, False)
}  # fmt: skip
_DEFAULT_PORT = {"http": 80, "https": 443}


def split_target(target: str) -> tuple[str, str, str]:
    """(authority from an absolute-form target or "", path, query) of a request-target or `:path`."""
    authority = ""
    scheme_end = -1 if target[:1] == "/" else target.find("://")  # origin-form, the common case: no scheme
    if scheme_end > 0:
        rest = target[scheme_end + 3 :]
        slash = rest.find("/")
        authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        authority = authority.rpartition("@")[2]  # never the userinfo
    path, _, query = target.partition("?")
    if "#" in query:
        query = query.partition("#")[0]
    elif "#" in path:
        path = path.partition("#")[0]
    return authority, path, query


def split_authority(authority: str) -> tuple[str, int | None]:
    """(host, port or None) of a Host header, `:authority` or target authority; an IPv6 host unbracketed."""
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):  # IPv6 literal
        host, _, rest = hostport[1:].partition("]")
        digits = rest[1:] if rest[:1] == ":" else ""
    elif hostport.count(":") == 1:
        host, _, digits = hostport.partition(":")
    else:  # a name without a port, or a bare IPv6 address (not valid in Host, kept whole)
        host, digits = hostport, ""
    if digits and len(digits) <= 5 and digits.isascii() and digits.isdigit() and int(digits) <= 65535:
        return host, int(digits)
    return host, None


_AUTHORITIES: dict[str, tuple[str, int | None]] = {}  # few distinct values per agent: split once each
_AUTHORITIES_CAP = 1024


def _split_authority_cached(authority: str) -> tuple[str, int | None]:
    got = _AUTHORITIES.get(authority)
    if got is None:
        got = split_authority(authority)
        if len(_AUTHORITIES) < _AUTHORITIES_CAP:
            _AUTHORITIES[authority] = got
    return got


def server_endpoint(conn: ConnInfo, authority: str, scheme: str) -> tuple[str, int]:
    """semconv server.address/server.port: from the request's authority (the spec's rule on both sides),
    its port or the scheme's default; from the connection's server end when no authority was sent."""
    server = conn.local if conn.role == Role.SERVER else conn.remote
    if authority:
        host, port = _AUTHORITIES.get(authority) or _split_authority_cached(authority)
        if host:
            return host, port if port is not None else _DEFAULT_PORT.get(scheme, server.port)
    return server.ip, server.port


def http_attributes(
    conn: ConnInfo,
    raw_method: str,
    scheme: str,
    authority_: str,
    path: str,
    query: str,
    version: str,
    status: int | None,
    user_agent: str,
    request_body_size: int,
    response_body_size: int,
    stream_error: str | None = None,
) -> tuple[str, dict[str, AttrValue], tuple[str, ...], str | None]:
    """(span name, attributes, metric attribute keys, error.type) of one HTTP exchange, as the HTTP/1.x
    and HTTP/2 parsers read it: raw_method as sent ("" when unknown, e.g. lost to an HPACK desync);
    authority_ from an absolute-form target, else Host / `:authority` ("" when none was sent); path ""
    when none (CONNECT, or unknown); query "" when none; status None when no response status was seen."""
    server_role = conn.role == Role.SERVER
    method = raw_method if raw_method in KNOWN_METHODS or not raw_method else "_OTHER"
    server, client = (conn.local, conn.remote) if server_role else (conn.remote, conn.local)
    # server_endpoint inlined: this runs once per exchange.
    address, port = (
        (_AUTHORITIES.get(authority_) or _split_authority_cached(authority_)) if authority_ else ("", 0)
    )
    if not address:
        address, port = server.ip, server.port
    elif port is None:
        port = _DEFAULT_PORT.get(scheme, server.port)
    # One dict literal for the keys every exchange has: much cheaper than a dozen item assignments.
    attrs: dict[str, AttrValue] = {
        "http.request.method": method,
        "url.scheme": scheme,
        "http.response.status_code": status,  # type: ignore[dict-item]  # removed below when None
        "network.protocol.name": "http",
        "network.protocol.version": version,
        "http.request.body.size": request_body_size,
        "http.response.body.size": response_body_size,
        "server.address": address,
        "server.port": port,
        "client.address": client.ip,
        "client.port": client.port,
    }
    complete = status is not None and method != ""
    if not complete:
        if status is None:
            del attrs["http.response.status_code"]
        if not method:
            del attrs["http.request.method"]
    if method == "_OTHER":
        attrs["http.request.method_original"] = raw_method
    if path:
        attrs["url.path"] = path
    if query:
        attrs["url.query"] = redact_query(query)
    if not server_role and path:
        attrs["url.full"] = url_full(scheme, authority_ or authority(address, port), path, query or None)
    if user_agent:
        attrs["user_agent.original"] = user_agent
    error = stream_error
    if status is not None and status >= 400:
        error = status_error_type(status, server_role) or stream_error
    if error is not None:
        attrs["error.type"] = error
    if not method:
        name = "HTTP"  # semconv's name when the method is unknown
    elif path:
        name = f"{'HTTP' if method == '_OTHER' else method} {low_cardinality_path(path)}"
    else:
        name = "HTTP" if method == "_OTHER" else method
    keys = _METRIC_KEYS[server_role, error is not None]
    if not complete:
        keys = tuple(k for k in keys if k in attrs)
    return name, attrs, keys, error
