"""HTTP semantics shared by the HTTP/1.x and HTTP/2 protocols: span-name paths, trace context, redaction."""

from __future__ import annotations

import re
from functools import lru_cache

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
