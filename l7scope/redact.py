"""Secret values out of text that may reach a log or a terminal: URL credentials, passwords, tokens.

`redact` is applied to every log line l7scope writes (l7scope.logs) and to every one-line error
(l7scope.cli): defence in depth behind not logging secrets in the first place. It recognizes
the shapes secrets take in logs: `scheme://user:password@host`, `key=value`, `key: value`,
`'key': 'value'` (a Python dict or JSON object), `('key', 'value')` (a decoded HTTP/2 header)
for keys that name a secret (password, token, secret, api key, authorization, cookie).
"""

from __future__ import annotations

import re

MASK = "***"

# Keys whose values are secrets: sasl_plain_password, ssl_password, client_secret, x-api-key,
# api_key, x-auth-token, authorization, proxy-authorization, cookie, set-cookie, ...
_SECRET_WORDS = r"passw(?:or)?d|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|authorization|cookie"
_KEY = rf"[\w.-]*(?:{_SECRET_WORDS})[\w.-]*"
_SECRET_KEY = re.compile(rf"^{_KEY}$", re.IGNORECASE)

_USERINFO = re.compile(
    r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@'\"\\]*)(?::[^/\s@'\"\\]*)?@", re.IGNORECASE
)

_QUOTED = r"""b?(?P<q>\\?['"])(?:(?!(?P=q)).)*(?P=q)"""  # up to the same quote (maybe JSON-escaped)
_BARE = r"""(?:(?:bearer|basic|digest|token|negotiate)\s+)?[^\s'",;{}()\\&]+"""  # an auth scheme, a token

# key, then `=` / `:` (the key may be quoted, the quotes JSON-escaped) and a quoted or bare value;
# or `', '` between the two quoted items of a header tuple.
_PAIR = re.compile(
    rf"""(?P<key>\b{_KEY})
         (?: (?P<sep>(?:\\?['"])?\s*[:=]\s*) (?P<value>{_QUOTED}|{_BARE})
           | (?P<tsep>\\?['"],\s*) (?P<tvalue>{_QUOTED.replace("P<q>", "P<tq>").replace("P=q", "P=tq")})
         )""",
    re.IGNORECASE | re.VERBOSE,
)


def is_secret_key(name: str) -> bool:
    """True for a configuration key or header whose value must never be shown."""
    return bool(_SECRET_KEY.match(name.rpartition(".")[2]))


def redact_url(url: str) -> str:
    """`http://user:pw@host:4318/v1` -> `http://user:***@host:4318/v1`; a bare token as the user
    (`https://TOKEN@host`) is masked whole. URLs without credentials are returned unchanged."""
    return _USERINFO.sub(_mask_userinfo, url)


def _mask_userinfo(m: re.Match[str]) -> str:
    has_password = m.group(0)[len(m["scheme"]) + len(m["user"]) :].startswith(":")
    user = f"{m['user']}:{MASK}" if has_password else MASK
    return f"{m['scheme']}{user}@"


def _mask_value(m: re.Match[str]) -> str:
    tuple_form = m["sep"] is None
    sep, value, quote = (m["tsep"], m["tvalue"], m["tq"]) if tuple_form else (m["sep"], m["value"], m["q"])
    if quote:
        masked = f"{'b' if value.startswith('b') else ''}{quote}{MASK}{quote}"
    else:
        scheme = re.match(r"(?:bearer|basic|digest|token|negotiate)\s+", value, re.I)
        masked = (scheme.group(0) if scheme else "") + MASK
    return f"{m['key']}{sep}{masked}"


def redact(text: str) -> str:
    """Every secret shape this module knows, masked; other text unchanged."""
    if not text:
        return text
    return _PAIR.sub(_mask_value, redact_url(text))
