"""MySQL exchange -> L7Record with OpenTelemetry database semantic-convention attributes."""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, L7Record
from protocols.mysql.types import Exchange
from protocols.network_semconv import add_peers

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
# metric_attributes by which optional keys are present (bits: namespace, operation, table, error),
# in _METRIC_KEYS order: precomputed so a record does not filter the key list each time.
_OPTIONAL = ("db.namespace", "db.operation.name", "db.collection.name")
_METRIC_KEYS_BY_MASK = tuple(
    tuple(
        k
        for k in _METRIC_KEYS
        if not (
            (k in _OPTIONAL and not mask & (1 << _OPTIONAL.index(k)))
            or (k in ("db.response.status_code", "error.type") and not mask & 8)
        )
    )
    for mask in range(16)
)


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    operation, table, text = x.operation, x.table, x.query_text
    attrs: dict[str, AttrValue] = {"db.system.name": "mysql"}
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
    error_type = None
    if x.error_code:
        error_type = str(x.error_code)
        attrs["db.response.status_code"] = error_type
        attrs["error.type"] = error_type
        mask |= 8
    if x.returned_rows >= 0:
        attrs["db.response.returned_rows"] = x.returned_rows
    add_peers(attrs, conn)
    name = f"{operation} {table}" if table else operation or "mysql"
    return L7Record(
        "mysql",
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
