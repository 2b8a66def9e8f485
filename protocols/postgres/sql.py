"""PostgreSQL SQL text: literal redaction, the operation keyword, an obvious single table.

The same approach as MySQL's (one regex pass, literals become "?", only literal-free text is cached),
for PostgreSQL's lexical rules: "..." is an identifier, '...' doubles its quotes (backslashes are plain
with standard_conforming_strings), E'...' escapes with backslashes, $tag$...$tag$ quotes anything, and
$1 is a parameter placeholder, kept.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKENS = re.compile(
    r"""("[^"]*(?:""[^"]*)*"?)"""  # 1: quoted identifier, kept
    r"""|(/\*[\s\S]*?(?:\*/|\Z)|--[^\n]*)"""  # 2: comment, dropped
    r"""|(?<![\w$])[eE]'[^'\\]*(?:(?:\\[\s\S]|''|\\\Z)[^'\\]*)*(?:'|\Z)"""  # E'...' escape string
    r"""|(?:(?<![\w$])(?:[bBxXnN]|[uU]&))?'[^']*(?:''[^']*)*(?:'|\Z)"""  # standard string
    r"""|(?<![\w$])\$((?:[A-Za-z_][A-Za-z0-9_]*)?)\$[\s\S]*?(?:\$\3\$|\Z)"""  # dollar-quoted string
    r"""|(?<![\w$.])(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w$])""",
)
_SPACES = re.compile(r"\s+")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_IDENT = r"(" + _NAME + r"(?:\s*\.\s*" + _NAME + r"){0,2})"
_TABLE_PATTERNS: dict[str, re.Pattern[str]] = {
    "SELECT": re.compile(r"\bFROM\s+(?:ONLY\s+)?" + _IDENT + r"(?!\s*(?:,|\.|\())", re.I),
    "DELETE": re.compile(r"^\s*DELETE\s+FROM\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "INSERT": re.compile(r"^\s*INSERT\s+INTO\s+" + _IDENT, re.I),
    "UPDATE": re.compile(
        r"^\s*UPDATE\s+(?:ONLY\s+)?" + _IDENT + r"(?:\s*\*)?(?:\s+(?:AS\s+)?\w+)?\s+SET\b", re.I
    ),
    "MERGE": re.compile(r"^\s*MERGE\s+INTO\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "COPY": re.compile(r"^\s*COPY\s+" + _IDENT + r"\s*(?:\([^)]*\)\s*)?(?:FROM|TO)\b", re.I),
    "CREATE": re.compile(
        r"^\s*CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY)\s+|UNLOGGED\s+)?TABLE\s+"
        r"(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT,
        re.I,
    ),
    "DROP": re.compile(
        r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _IDENT + r"\s*(?:;|$|CASCADE|RESTRICT)", re.I
    ),
    "ALTER": re.compile(r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _IDENT, re.I),
    "TRUNCATE": re.compile(
        r"^\s*TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?"
        + _IDENT
        + r"\s*(?:;|$|\*|RESTART|CONTINUE|CASCADE|RESTRICT)",
        re.I,
    ),
    "LOCK": re.compile(r"^\s*LOCK\s+(?:TABLE\s+)?(?:ONLY\s+)?" + _IDENT, re.I),
}
_MULTI_TABLE = re.compile(r"\bJOIN\b|\bFROM\b[\s\S]*\bFROM\b", re.I)


def _sub(m: re.Match[str]) -> str:
    group = m.lastindex  # 1: quoted identifier, 2: comment, 3 or None: a literal
    if group == 1:
        return m.group(1)
    return " " if group == 2 else "?"


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
    parts = re.findall(_NAME, ident)
    return ".".join(p[1:-1].replace('""', '"') if p.startswith('"') else p.lower() for p in parts)


def table(redacted: str, op: str) -> str:
    """The single table an operation obviously targets, or "" (joins, subqueries, lists)."""
    pattern = _TABLE_PATTERNS.get(op)
    if pattern is None:
        return ""
    if op in ("SELECT", "DELETE") and _MULTI_TABLE.search(redacted):
        return ""
    m = pattern.search(redacted)
    return _unquote(m.group(1)) if m else ""


def statements(redacted: str) -> list[str]:
    """The statements of a literal-free text (its ";" can no longer be inside a string)."""
    return [s for s in (part.strip() for part in redacted.split(";")) if s]


@lru_cache(maxsize=2048)
def _describe(out: str) -> tuple[str, str, str, int]:
    """(text, operation, table, statements) of SQL whose literals are already replaced."""
    text = _squeeze(out)
    parts = statements(text)
    if len(parts) <= 1:
        op = operation(text)
        return text, op, table(text, op), len(parts)
    ops = {operation(p) for p in parts}
    op = ops.pop() if len(ops) == 1 else ""
    return text, f"BATCH {op}" if op else "BATCH", "", len(parts)


def analyze(sql: str) -> tuple[str, str, str, int]:
    """(redacted text, operation, table, statement count); only redacted text is cached, so no
    literal outlives a call."""
    return _describe(_TOKENS.sub(_sub, sql))


_SAFE: dict[bytes, tuple[str, str, str, int]] = {}  # raw SQL that holds no literal nor comment -> analysis
_SAFE_CAP = 1024


def analyze_bytes(raw: bytes) -> tuple[str, str, str, int]:
    """analyze() of SQL bytes. Text that redaction leaves as it was (no literal, no comment: typical of
    prepared statements with $n parameters) is cached by its bytes, since they reveal nothing more."""
    hit = _SAFE.get(raw)
    if hit is not None:
        return hit
    sql = raw.decode("utf-8", "replace")
    out = analyze(sql)
    if out[0] == sql and len(_SAFE) < _SAFE_CAP:
        _SAFE[raw] = out
    return out
