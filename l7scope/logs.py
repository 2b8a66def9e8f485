"""Logging set-up: JSON lines for machines (stderr not a terminal), short human lines for people.

`-v` turns on debug for l7scope's own loggers only. Third-party libraries stay at WARNING whatever
the verbosity: at debug, hpack logs every HTTP/2 header it decodes (authorization, x-api-key, of
every traced connection) and kafka-python its whole configuration (sasl_plain_password). Every line
is also passed through `l7scope.redact.redact` (URL credentials, passwords, tokens) as a second guard.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

from l7scope.redact import redact

# Attributes every LogRecord has; anything else came from `extra=` and is emitted as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339, UTC), level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then masks every secret shape l7scope.redact knows in the whole line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


_HANDLER_NAME = "l7scope"
# Libraries that log secrets at debug (decoded headers, client configuration) or are chatty at INFO
# (kafka-python: every connection attempt; their failures surface through l7scope's own lines).
QUIET_LIBRARIES = ("kafka", "hpack", "h2", "grpc", "urllib3")
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    verbose: bool = False, stream: IO[str] | None = None, json_lines: bool | None = None
) -> None:
    """Configure the root logger once, from main; `json_lines` defaults to "stream is not a TTY"."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    handler = logging.StreamHandler(stream)
    inner = JsonFormatter() if json_lines else logging.Formatter(HUMAN_FORMAT, "%H:%M:%S")
    handler.setFormatter(RedactingFormatter(inner))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:  # ours only: keep pytest's
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # third-party libraries: warnings and errors only
    logging.getLogger("l7scope").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LIBRARIES:  # even if something lowers the root logger's level
        logging.getLogger(name).setLevel(logging.WARNING)
