"""Redis exchange -> L7Record with the OpenTelemetry database semantic conventions (Redis)."""

from __future__ import annotations

from functools import lru_cache

from protocols.base import AttrValue, ConnInfo, L7Record
from protocols.network_semconv import add_peers
from protocols.redis.types import COMMANDS, OTHER, Exchange

METRIC = "db.client.operation.duration"
PLACEHOLDERS = 32  # "?" written per command in db.query.text; more arguments are written " ..."
_METRIC_KEYS = (
    "db.system.name", "db.namespace", "db.operation.name", "server.address", "server.port",
)  # fmt: skip
_METRIC_KEYS_ERROR = (*_METRIC_KEYS, "db.response.status_code", "error.type")


@lru_cache(maxsize=4096)
def describe(command: str, sub: str, args: int) -> tuple[str, str]:
    """(db.operation.name, db.query.text): the command, a known subcommand word, every argument "?".

    Arguments (keys, values, credentials) are never in the text; only the counts are, and the
    inputs here are a known command name, a known subcommand word and an argument count."""
    operation = command if command in COMMANDS else OTHER
    words = [operation]
    if sub:
        words.append(sub)
        args -= 1
    text = " ".join(words) + " ?" * min(args, PLACEHOLDERS)
    if args > PLACEHOLDERS:
        text += " ..."
    return operation, text


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    operation, text = describe(x.command, x.sub, x.args)
    attrs: dict[str, AttrValue] = {
        "db.system.name": "redis",
        "db.namespace": x.namespace,
        "db.operation.name": operation,
        "db.query.text": text,
    }
    error_type = None
    keys: tuple[str, ...] = _METRIC_KEYS
    if x.error:
        error_type = x.error
        attrs["db.response.status_code"] = error_type
        attrs["error.type"] = error_type
        keys = _METRIC_KEYS_ERROR
    add_peers(attrs, conn)
    return L7Record(
        "redis",
        conn.role,
        operation,  # the db span name; the namespace is left out as the Redis conventions say
        x.start_ns,
        x.end_ns,
        conn,
        METRIC,
        error_type,
        attrs,
        keys,
        x.truncated,
        x.degraded,
    )
