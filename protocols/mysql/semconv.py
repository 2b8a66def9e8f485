"""MySQL exchange -> L7Record with OpenTelemetry database semantic-convention attributes."""

from __future__ import annotations

from protocols.base import ConnInfo, L7Record
from protocols.mysql.types import Exchange
from protocols.sql_semconv import sql_record


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    code = str(x.error_code) if x.error_code else ""  # the error code is both status and error type
    return sql_record(
        "mysql", "mysql", conn, x.start_ns, x.end_ns, x.namespace, x.operation, x.table, x.query_text,
        code, code or None, x.returned_rows, x.truncated, x.degraded,
    )  # fmt: skip
