"""Records -> the `l7scope.records` topic: one protobuf `L7Record` per exchange, keyed by service.

The key is the record's service.name (`protocols.base.service_name`, the name its spans, metrics and
map node carry), so one service's records stay on one partition, in order. The
schema is proto/records.proto (documented in docs/records.md); `decode_record` is the reverse.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf.message import DecodeError

from l7scope.config import KafkaConfig
from pipeline.attr_value import typed
from pipeline.exporter import Exporter
from probes.codec import decode_conn, encode_conn, encode_role
from probes.health import Health
from probes.kafka_io import KafkaSender
from proto import records_pb2 as pb
from protocols.base import AttrValue, L7Record, Role, service_name

SCHEMA_VERSION = 1


class BadRecord(ValueError):
    """Bytes on the records topic that are not an L7Record this version understands."""


def service_of(record: L7Record) -> str:
    """The message key: the record's service.name, as its spans, metrics and map node carry it."""
    return service_name(record.conn)


def encode_record(r: L7Record) -> bytes:
    msg = pb.L7Record(
        schema_version=SCHEMA_VERSION,
        record_id=r.record_id,
        protocol=r.protocol,
        role=encode_role(r.role),
        name=r.name,
        start_ns=max(0, r.start_ns),
        end_ns=max(0, r.end_ns),
        connection=encode_conn(r.conn),
        metric=r.metric,
        error_type=r.error_type or "",
        truncated=r.truncated,
        degraded=r.degraded,
        trace_id=r.trace_id,
        parent_span_id=r.parent_span_id,
        service=service_of(r),
    )
    attributes = msg.attributes
    for key, value in r.attributes.items():
        kind, typed_value = typed(value)  # the one attribute-value encoder, as OTLP's AnyValue
        setattr(attributes[key], kind, typed_value)
    return msg.SerializeToString()


def decode_record(value: bytes) -> L7Record:
    msg = pb.L7Record()
    try:
        msg.ParseFromString(value)
    except DecodeError as e:
        raise BadRecord(f"not an L7Record: {e}") from None
    if msg.schema_version != SCHEMA_VERSION:
        raise BadRecord(f"schema_version {msg.schema_version}, expected {SCHEMA_VERSION}")
    conn = decode_conn(msg.connection)
    if msg.service and msg.service != service_name(conn):  # the producer's name stands
        conn = dataclasses.replace(conn, service=msg.service)
    attributes: dict[str, AttrValue] = {}
    for key, v in msg.attributes.items():
        kind = v.WhichOneof("value")
        attributes[key] = getattr(v, kind) if kind else ""
    return L7Record(
        protocol=msg.protocol,
        role=Role(msg.role) if msg.role in (0, 1, 2) else Role.UNKNOWN,
        name=msg.name,
        start_ns=msg.start_ns,
        end_ns=msg.end_ns,
        conn=conn,
        metric=msg.metric,
        error_type=msg.error_type or None,
        attributes=attributes,
        truncated=msg.truncated,
        degraded=msg.degraded,
        record_id=msg.record_id,
        trace_id=msg.trace_id,
        parent_span_id=msg.parent_span_id,
    )


class RecordsSink(Exporter):
    """Exporter: every record to `kafka.records_topic`; bounded memory, counted drops."""

    def __init__(self, kafka: KafkaConfig, health: Health, **producer_overrides: Any) -> None:
        self.sender = KafkaSender(
            kafka,
            kafka.records_topic,
            health,
            unit="records",
            client_id="l7scope-records",
            **producer_overrides,
        )

    def export(self, records: list[L7Record]) -> None:
        for r in records:
            self.sender.send(service_of(r).encode(), encode_record(r))

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every record handed over so far is acknowledged (before offsets are committed)."""
        self.sender.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self.sender.close(timeout_s)
