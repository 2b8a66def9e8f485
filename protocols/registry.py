"""The protocols the pipeline tries, in detection order. Adding a protocol is one folder and one line."""

from __future__ import annotations

from typing import Any

from protocols import http1, http2, kafka, mysql, postgres, redis
from protocols.base import ProtocolSpec

PROTOCOLS: tuple[ProtocolSpec[Any, Any, Any], ...] = (
    http1.SPEC,
    http2.SPEC,
    mysql.SPEC,
    postgres.SPEC,
    redis.SPEC,
    kafka.SPEC,
)
