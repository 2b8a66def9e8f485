"""PostgreSQL exchange -> L7Record with OpenTelemetry database semantic-convention attributes."""

from __future__ import annotations

from protocols.base import ConnInfo, L7Record
from protocols.postgres.types import Exchange
from protocols.sql_semconv import sql_record


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    return sql_record(
        "postgres", "postgresql", conn, x.start_ns, x.end_ns, x.namespace, x.operation, x.table, x.query_text,
        x.sqlstate, x.error_type or None, x.returned_rows, x.truncated, x.degraded,
    )  # fmt: skip
