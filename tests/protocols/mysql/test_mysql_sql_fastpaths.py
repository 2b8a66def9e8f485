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
