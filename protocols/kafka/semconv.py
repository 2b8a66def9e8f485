"""Kafka exchange -> L7Record with OpenTelemetry messaging semantic-convention attributes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from protocols.base import AttrValue, ConnInfo, L7Record
from protocols.kafka.types import FETCH, OFFSET_COMMIT, PRODUCE, Exchange, api_name, error_name
from protocols.network_semconv import add_peers

METRIC = "messaging.client.operation.duration"
# A Fetch that returned no records after the broker could wait (max_wait_ms > 0): its duration is the
# long poll, not the broker's slowness, so it feeds its own histogram.
WAIT_METRIC = "l7scope.kafka.fetch.wait.duration"
WAITED = "l7scope.kafka.fetch.waited"
MAX_WAIT = "l7scope.kafka.fetch.max_wait_ms"
TOPIC_ID = "l7scope.kafka.topic_id"
_OPERATION_TYPE = {PRODUCE: "send", FETCH: "receive", OFFSET_COMMIT: "settle"}
_SPAN_VERB = {PRODUCE: "send", FETCH: "poll"}
_METRIC_KEYS = (
    "messaging.system",
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.destination.name",
    "messaging.consumer.group.name",
    "error.type",
    "server.address",
    "server.port",
)


def _keys(batches: Iterable[tuple[str, int, int]]) -> tuple[str, ...]:
    """One key per batch per way its topic is known (name, id): `kafka/<topic>/<partition>/<base>`."""
    return tuple(f"kafka/{t}/{p}/{base}" for topics, p, base in batches for t in topics.split("|"))


def to_record(x: Exchange, conn: ConnInfo) -> L7Record:
    req = x.request.frame
    resp = x.response.frame if x.response is not None else None
    key = req.api_key
    operation = api_name(key)
    attrs: dict[str, AttrValue] = {"messaging.system": "kafka", "messaging.operation.name": operation}
    op_type = _OPERATION_TYPE.get(key)
    if op_type:
        attrs["messaging.operation.type"] = op_type
    # Topics and partitions: the request names them; an incremental Fetch (a fetch session) may name none,
    # and then its response does.
    named = resp if resp is not None and req.topic_count == 0 else req
    topic = named.topics[0] if named.topic_count == 1 and len(named.topics) == 1 else ""
    if topic:
        attrs["messaging.destination.name"] = topic
    elif named.topic_count == 1 and len(named.topic_ids) == 1:  # named by id, and the name was not seen
        attrs[TOPIC_ID] = str(uuid.UUID(named.topic_ids[0]))
    if named.partition_count == 1:
        attrs["messaging.destination.partition.id"] = str(named.partitions[0])
    group = req.group or (resp.group if resp is not None else "")
    if group:
        attrs["messaging.consumer.group.name"] = group
    if req.client_id:
        attrs["messaging.client.id"] = req.client_id
    # Batches the capture did not copy (a broker sends Fetch data with sendfile: sizes only) read as
    # zeros: a count from a truncated message would be a guess, so there is none.
    if key == PRODUCE:
        records = -1 if x.request.truncated else req.records
    elif key == FETCH and x.response is not None and resp is not None:
        records = -1 if x.response.truncated else resp.records
    else:
        records = -1
    if records >= 0:
        attrs["messaging.batch.message_count"] = records
    if key == PRODUCE and resp is not None and len(resp.batches) == 1 and not resp.error_code:
        attrs["messaging.kafka.offset"] = resp.batches[0][2]
    error_type = error_name(resp.error_code) if resp is not None and resp.error_code else None
    if error_type:
        attrs["error.type"] = error_type
    metric = METRIC
    if key == FETCH and req.max_wait_ms >= 0:
        attrs[MAX_WAIT] = req.max_wait_ms
        if req.max_wait_ms > 0 and records == 0 and error_type is None:
            attrs[WAITED] = True
            metric = WAIT_METRIC
    add_peers(attrs, conn)
    verb = _SPAN_VERB.get(key)
    name = f"{verb} {topic}" if verb and topic else operation
    end_ns = x.response.end_ns if x.response is not None else x.request.end_ns
    truncated = x.request.truncated or (x.response is not None and x.response.truncated)
    degraded = req.partial or (resp is not None and (resp.partial or resp.api_key < 0))
    # Record batches written and read, for the pipeline's producer -> consumer links (pipeline/links.py).
    produced: tuple[str, ...] = ()
    consumed: tuple[str, ...] = ()
    if key == PRODUCE and resp is not None:
        produced = _keys((t, p, base) for t, p, base, _ in resp.batches if base >= 0)
    elif key == FETCH and records > 0 and resp is not None:
        consumed = _keys((t, p, base) for t, p, base, _ in resp.batches)
    return L7Record(
        "kafka",
        conn.role,
        name,
        x.request.start_ns,
        end_ns,
        conn,
        metric,
        error_type,
        attrs,
        tuple(k for k in _METRIC_KEYS if k in attrs),
        truncated,
        degraded,
        produced=produced,
        consumed=consumed,
    )
