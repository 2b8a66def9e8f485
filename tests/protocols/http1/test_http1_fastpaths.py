"""The shortcuts taken for speed give exactly what the plain definitions give, on any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.http_semconv import _SENSITIVE, REDACTED, _id_like, low_cardinality_path, redact_query

LONG_S_PASSWORD = "pa\u017f\u017fword"  # long s: case-folds to "password"
KEYS = st.sampled_from(
    ["limit", "q", "page", "password", "PassWd", "api_key", "apikey", "X-Amz-Security-Token", "sig", "code",
     "key", "mykey", "Session", "auth", "oauth_token", LONG_S_PASSWORD, "\u212aey", "k\u0131y", "name"]
)  # fmt: skip
VALUES = st.text(alphabet=st.characters(blacklist_characters="&"), max_size=8)


def plain_redact(query: str) -> str:
    """redact_query without its ASCII pre-filter."""
    if "=" not in query:
        return query
    pairs = [pair.partition("=") for pair in query.split("&")]
    return "&".join(f"{k}={REDACTED}" if eq and _SENSITIVE.match(k) else k + eq + v for k, eq, v in pairs)


def plain_path(path: str) -> str:
    return "/".join("{id}" if _id_like(segment) else segment for segment in path.split("/"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(KEYS | st.text(max_size=6), st.sampled_from(["=", ""]), VALUES), max_size=5))
def test_redact_query_prefilter_changes_nothing(pairs: list[tuple[str, str, str]]) -> None:
    query = "&".join(k + eq + v for k, eq, v in pairs)
    assert redact_query(query) == plain_redact(query)


def test_redact_query_still_redacts() -> None:
    assert redact_query("limit=10&api_key=s3cr3t") == "limit=10&api_key=REDACTED"
    assert redact_query(f"{LONG_S_PASSWORD}=x") == f"{LONG_S_PASSWORD}=REDACTED"  # non-ASCII: the full check


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet="0123456789abcdefXYZ-_²٣é", max_size=20), max_size=6))
def test_low_cardinality_path_unchanged(segments: list[str]) -> None:
    path = "/".join(segments)
    assert low_cardinality_path.__wrapped__(path) == plain_path(path)


def test_frames_built_by_tuple_new_have_every_field() -> None:
    """parse/stitch build NamedTuples positionally with tuple.__new__: a new field must be added there too."""
    from collections import deque

    from protocols.base import Direction, Parsed, Timed
    from protocols.http1 import SPEC

    state = SPEC.new_state()
    req = SPEC.parse_frame(memoryview(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), Direction.REQUEST, state)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    resp = SPEC.parse_frame(memoryview(answer), Direction.RESPONSE, state)
    assert isinstance(req, Parsed) and isinstance(resp, Parsed)
    [x] = SPEC.stitch(deque([Timed(req.frame, 1, 2)]), deque([Timed(resp.frame, 3, 4)]), state)
    for value in (req.frame, resp.frame, x):
        assert len(value) == len(type(value)._fields)
    assert (req.frame.method, req.frame.host, resp.frame.status, x.degraded) == ("GET", "h", 200, False)
