"""SQL text helpers: literal redaction, the operation keyword, an obvious single table."""

from __future__ import annotations

import re
from functools import lru_cache

# One pass, leftmost match wins: identifiers are kept, comments dropped, literals become "?".
# Strings run to the end of the text when unterminated (captured SQL may be cut mid-literal).
_TOKENS = re.compile(
    r"""(`[^`]*(?:``[^`]*)*`?)"""  # 1: quoted identifier, kept
    r"""|(/\*[^*]*(?:\*+[^*/][^*]*)*(?:\*+/|\**\Z)|(?:--(?=\s|\Z)|\#)[^\n]*)"""  # 2: comment, dropped
    r"""|(?:(?<![\w$])[xXbBnN]|_[A-Za-z0-9]+)?'[^'\\]*(?:(?:\\.|''|\\\Z)[^'\\]*)*(?:'|\Z)"""  # string
    r"""|"[^"\\]*(?:(?:\\.|""|\\\Z)[^"\\]*)*(?:"|\Z)"""  # double-quoted string (default sql_mode)
    r"""|(?<![\w$.])(?:0[xX][0-9a-fA-F]+|0[bB][01]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w$])""",
    re.S,
)
_SPACES = re.compile(r"\s+")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
_IDENT = r"((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)"
_TABLE_PATTERNS: dict[str, re.Pattern[str]] = {
    "SELECT": re.compile(r"\bFROM\s+" + _IDENT + r"(?!\s*(?:,|\.|\())", re.I),
    "DELETE": re.compile(r"^\s*DELETE\s+(?:LOW_PRIORITY\s+|QUICK\s+|IGNORE\s+)*FROM\s+" + _IDENT, re.I),
    "INSERT": re.compile(
        r"^\s*INSERT\s+(?:LOW_PRIORITY\s+|DELAYED\s+|HIGH_PRIORITY\s+|IGNORE\s+)*(?:INTO\s+)?" + _IDENT, re.I
    ),
    "REPLACE": re.compile(r"^\s*REPLACE\s+(?:LOW_PRIORITY\s+|DELAYED\s+)*(?:INTO\s+)?" + _IDENT, re.I),
    "UPDATE": re.compile(r"^\s*UPDATE\s+(?:LOW_PRIORITY\s+|IGNORE\s+)*" + _IDENT + r"\s+SET\b", re.I),
    "CREATE": re.compile(r"^\s*CREATE\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT, re.I),
    "DROP": re.compile(
        r"^\s*DROP\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?" + _IDENT + r"\s*(?:;|$)", re.I
    ),
    "ALTER": re.compile(r"^\s*ALTER\s+(?:IGNORE\s+)?TABLE\s+" + _IDENT, re.I),
    "TRUNCATE": re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?" + _IDENT, re.I),
    "DESC": re.compile(r"^\s*DESC\s+" + _IDENT, re.I),
    "DESCRIBE": re.compile(r"^\s*DESCRIBE\s+" + _IDENT, re.I),
}
_MULTI_TABLE = re.compile(r"\bJOIN\b|\bFROM\b[\s\S]*\bFROM\b", re.I)
_USE = re.compile(r"^\s*USE\s+(`(?:[^`]|``)+`|[\w$]+)\s*;?\s*$", re.I)


def _sub(m: re.Match[str]) -> str:
    group = m.lastindex  # 1: quoted identifier, 2: comment, None: a literal (its groups do not capture)
    if group is None:
        return "?"
    return " " if group == 2 else m.group(1)


def redact(sql: str) -> str:
    """The SQL with every string and numeric literal replaced by "?", comments removed."""
    return _squeeze(_TOKENS.sub(_sub, sql))


def _squeeze(out: str) -> str:
    return _SPACES.sub(" ", out).strip()


def operation(sql: str) -> str:
    """The first keyword, upper-cased ("SELECT"), or "" when the text starts with none."""
    m = _FIRST_WORD.match(sql)
    return m.group(1).upper() if m else ""


def _unquote(ident: str) -> str:
    return "".join(ident.split()).replace("`", "")


def table(redacted: str, op: str) -> str:
    """The single table an operation obviously targets, or "" (joins, subqueries, lists)."""
    pattern = _TABLE_PATTERNS.get(op)
    if pattern is None:
        return ""
    if op in ("SELECT", "DELETE") and _MULTI_TABLE.search(redacted):
        return ""
    m = pattern.search(redacted)
    return _unquote(m.group(1)) if m else ""


def use_target(sql: str) -> str:
    """The database of a `USE db` statement, or ""."""
    m = _USE.match(sql)
    return _unquote(m.group(1)) if m else ""


@lru_cache(maxsize=2048)
def _describe(out: str) -> tuple[str, str, str]:
    """(text, operation, table) of SQL whose literals are already replaced (so caching keeps none)."""
    text = _squeeze(out)
    op = operation(text)
    return text, op, table(text, op)


def analyze(sql: str) -> tuple[str, str, str]:
    """(redacted text, operation, table); only redacted text is cached, so no literal outlives a call."""
    return _describe(_TOKENS.sub(_sub, sql))
