"""The OpenTelemetry database conventions for SQL servers (MySQL, PostgreSQL): one record builder.

Span name `OPERATION table` (or the operation, or the system), the `db.client.operation.duration`
metric on both sides, and the attributes the conventions give a SQL exchange.
"""

from __future__ import annotations

from protocols.base import AttrValue, ConnInfo, L7Record
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
_OPTIONAL = (
    "db.namespace",
    "db.operation.name",
    "db.collection.name",
    "db.response.status_code",
    "error.type",
)
# metric_attributes by which optional keys are present (one bit each, in _OPTIONAL order): precomputed
# so a record does not filter the key list each time.
_METRIC_KEYS_BY_MASK = tuple(
    tuple(k for k in _METRIC_KEYS if k not in _OPTIONAL or mask & (1 << _OPTIONAL.index(k)))
    for mask in range(32)
)


def sql_record(
    protocol: str,
    system: str,
    conn: ConnInfo,
    start_ns: int,
    end_ns: int,
    namespace: str,
    operation: str,
    table: str,
    query_text: str,
    status_code: str,
    error_type: str | None,
    returned_rows: int,
    truncated: bool,
    degraded: bool,
) -> L7Record:
    """`status_code`: the server's error code ("" when none); `returned_rows`: -1 when unknown."""
    attrs: dict[str, AttrValue] = {"db.system.name": system}
    mask = 0
    if namespace:
        attrs["db.namespace"] = namespace
        mask = 1
    if operation:
        attrs["db.operation.name"] = operation
        mask |= 2
    if table:
        attrs["db.collection.name"] = table
        mask |= 4
    if query_text:
        attrs["db.query.text"] = query_text
    if status_code:
        attrs["db.response.status_code"] = status_code
        mask |= 8
    if error_type:
        attrs["error.type"] = error_type
        mask |= 16
    if returned_rows >= 0:
        attrs["db.response.returned_rows"] = returned_rows
    add_peers(attrs, conn)
    name = f"{operation} {table}" if table else operation or system
    return L7Record(
        protocol, conn.role, name, start_ns, end_ns, conn, METRIC, error_type or None, attrs,
        _METRIC_KEYS_BY_MASK[mask], truncated, degraded,
    )  # fmt: skip
