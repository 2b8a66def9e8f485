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


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    operation, table, text = x.operation, x.table, x.query_text
    attrs: dict[str, AttrValue] = {"db.system.name": "mysql"}
    if x.namespace:
        attrs["db.namespace"] = x.namespace
    if operation:
        attrs["db.operation.name"] = operation
    if table:
        attrs["db.collection.name"] = table
    if text:
        attrs["db.query.text"] = text
    error_type = None
    if x.error_code:
        error_type = str(x.error_code)
        attrs["db.response.status_code"] = error_type
        attrs["error.type"] = error_type
    if x.returned_rows >= 0:
        attrs["db.response.returned_rows"] = x.returned_rows
    add_peers(attrs, conn)
    name = f"{operation} {table}" if table else operation or "mysql"
    return L7Record(
        protocol="mysql",
        role=conn.role,
        name=name,
        start_ns=x.start_ns,
        end_ns=x.end_ns,
        conn=conn,
        metric=METRIC,
        error_type=error_type,
        attributes=attrs,
        metric_attributes=tuple(k for k in _METRIC_KEYS if k in attrs),
        truncated=x.truncated,
        degraded=x.degraded,
    )
