"""Redis test helpers: RESP encoders and the real framing loop (tests/support/loop.py) speaking Redis."""

from __future__ import annotations

from typing import Any

from protocols.base import ConnInfo, Endpoint, L7Record, Role
from protocols.redis import SPEC
from protocols.redis.types import Exchange
from tests.support.loop import REQ, RESP, Loop

__all__ = ["REQ", "RESP", "bulk", "cmd", "loop", "records"]
CONN = ConnInfo("t/1", Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.1", 6379), Role.CLIENT)


def bulk(value: bytes | str | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def cmd(*args: bytes | str) -> bytes:
    """A command as clients send it: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def loop(detect: bool = False, auto_run: bool = True, **kwargs: Any) -> Loop:
    """A connection through the real loop, run at every feed (as capture batches arrive)."""
    return Loop(SPEC, detect=detect, auto_run=auto_run, **kwargs)


def records(exchanges: list[Exchange]) -> list[L7Record]:
    return [SPEC.to_record(x, CONN) for x in exchanges]


def ops(lp: Loop) -> list[tuple[str, str, str, str | None]]:
    """(span name, db.query.text, db.namespace, error.type) of every record, in order."""
    return [
        (r.name, str(r.attributes["db.query.text"]), str(r.attributes["db.namespace"]), r.error_type)
        for r in lp.records
    ]
