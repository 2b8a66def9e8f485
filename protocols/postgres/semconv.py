"""PostgreSQL exchange -> L7Record with OpenTelemetry database semantic-convention attributes."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, L7Record
from protocols.network_semconv import add_peers
from protocols.postgres.types import Exchange

SYSTEM = "postgresql"
METRIC = "db.client.operation.duration"
_METRIC_KEYS = (
    "db.system.name",
    "db.namespace",
    "db.operation.name",
    "db.collection.name",
    "db.response.status_code",
    "error.type",
    "server.address",
    "server.port",
)
_OPTIONAL = (
    "db.namespace",
    "db.operation.name",
    "db.collection.name",
    "db.response.status_code",
    "error.type",
)
# metric_attributes by which optional keys are present (one bit each, in _OPTIONAL order).
_METRIC_KEYS_BY_MASK = tuple(
    tuple(k for k in _METRIC_KEYS if k not in _OPTIONAL or mask & (1 << _OPTIONAL.index(k)))
    for mask in range(32)
)


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    operation, table, text = x.operation, x.table, x.query_text
    attrs: dict[str, AttrValue] = {"db.system.name": SYSTEM}
    mask = 0
    if x.namespace:
        attrs["db.namespace"] = x.namespace
        mask = 1
    if operation:
        attrs["db.operation.name"] = operation
        mask |= 2
    if table:
        attrs["db.collection.name"] = table
        mask |= 4
    if text:
        attrs["db.query.text"] = text
    error_type = x.error_type or None
    if x.sqlstate:
        attrs["db.response.status_code"] = x.sqlstate
        mask |= 8
    if error_type:
        attrs["error.type"] = error_type
        mask |= 16
    if x.returned_rows >= 0:
        attrs["db.response.returned_rows"] = x.returned_rows
    add_peers(attrs, conn)
    name = f"{operation} {table}" if table else operation or SYSTEM
    return L7Record(
        "postgres",
        conn.role,
        name,
        x.start_ns,
        x.end_ns,
        conn,
        METRIC,
        error_type,
        attrs,
        _METRIC_KEYS_BY_MASK[mask],
        x.truncated,
        x.degraded,
    )
