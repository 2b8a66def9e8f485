"""The cached, shortcut SQL redaction gives exactly what the plain two-pass definition gives."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mysql.sql import _SPACES, _TOKENS, analyze, operation, redact, table

PIECES = st.sampled_from(
    ["SELECT", " ", "  ", "\t", "\n", "\u00a0", "`a``b`", "`t`", "'x'", "'it''s'", "'\\'", '"q"', "0x1F",
     "12", "3.5e-2", ".5", "/* c */", "/*", "-- x\n", "#c", "FROM", "items", "WHERE", "id", "=", ",", "(",
     ")", "b'01'", "N'x'", "_utf8'y'", "JOIN", "$v", "é", "USE db", ";"]
)  # fmt: skip


def plain_sub(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return m.group(1)
    if m.group(2) is not None:
        return " "
    return "?"


def plain_analyze(sql: str) -> tuple[str, str, str]:
    text = _SPACES.sub(" ", _TOKENS.sub(plain_sub, sql)).strip()
    op = operation(text)
    return text, op, table(text, op)


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES | st.text(max_size=4), max_size=14))
def test_analyze_matches_plain_definition(pieces: list[str]) -> None:
    sql = "".join(pieces)
    assert analyze(sql) == plain_analyze(sql)
    assert redact(sql) == plain_analyze(sql)[0]


def test_packets_built_by_tuple_new_have_every_field() -> None:
    """parse_frame builds Packet positionally with tuple.__new__: a new field must be added there too."""
    from protocols.base import Direction, Parsed
    from protocols.mysql import SPEC

    state = SPEC.new_state()
    query = b"\x03SELECT 1"
    cmd = SPEC.parse_frame(memoryview(bytes([len(query), 0, 0, 0]) + query), Direction.REQUEST, state)
    ok_packet = b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
    ok = SPEC.parse_frame(memoryview(ok_packet), Direction.RESPONSE, state)
    assert isinstance(cmd, Parsed) and isinstance(ok, Parsed)
    for packet in (cmd.frame, ok.frame):
        assert len(packet) == len(type(packet)._fields)
    assert (cmd.frame.first, cmd.frame.data, ok.frame.first, ok.frame.inner_seq) == (3, query, 0, -1)
