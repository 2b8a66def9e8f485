"""Kafka through the real framing loop: each deep-parsed API in flexible and non-flexible versions,
encoded by kafka-python's schema-driven codecs (tests/protocols/kafka/wire.py)."""

from __future__ import annotations

import pytest

from protocols.kafka import SPEC
from protocols.kafka.semconv import METRIC, WAIT_METRIC
from tests.protocols.kafka import wire
from tests.support.loop import REQ, RESP, Loop

pytestmark = pytest.mark.unit


def one(req: bytes, resp: bytes | None, loop: Loop | None = None) -> dict[str, object]:
    """The attributes of the one record the exchange makes (plus name, error and metric)."""
    loop = loop or Loop(SPEC)
    before = len(loop.records)
    loop.feed(REQ, req)
    if resp is not None:
        loop.feed(RESP, resp)
    loop.run()
    assert loop.errors == [] and loop.health.total("unmatched_frames") == 0, loop.health.snapshot()
    assert len(loop.records) == before + 1
    r = loop.records[-1]
    assert not r.truncated
    return {
        **r.attributes,
        "_name": r.name,
        "_error": r.error_type,
        "_metric": r.metric,
        "_degraded": r.degraded,
    }


@pytest.mark.parametrize("v", [3, 7, 8, 9, 11, 12])
def test_produce_counts_records_from_batch_headers(v: int) -> None:
    req = wire.produce_request(v, 7, "orders", {2: wire.batch(3) + wire.batch(4, base=3)})
    a = one(req, wire.produce_response(v, 7, "orders", [(2, 0, 1234)]))
    assert a["_name"] == "send orders" and a["_metric"] == METRIC and a["_error"] is None
    assert a["messaging.system"] == "kafka" and a["messaging.operation.type"] == "send"
    assert a["messaging.operation.name"] == "Produce" and a["messaging.destination.name"] == "orders"
    assert a["messaging.destination.partition.id"] == "2" and a["messaging.batch.message_count"] == 7
    assert a["messaging.client.id"] == "app-1" and a["messaging.kafka.offset"] == 1234
    assert not a["_degraded"]


@pytest.mark.parametrize("v", [5, 9, 10])
def test_produce_error_is_named(v: int) -> None:
    req = wire.produce_request(v, 1, "orders", {0: wire.batch(1)})
    a = one(req, wire.produce_response(v, 1, "orders", [(0, 6, -1)]))
    assert a["_error"] == "NOT_LEADER_OR_FOLLOWER" and a["error.type"] == "NOT_LEADER_OR_FOLLOWER"


def test_produce_with_acks_0_is_an_exchange_without_a_response() -> None:
    loop = Loop(SPEC)
    a = one(wire.produce_request(9, 1, "logs", {0: wire.batch(2)}, acks=0), None, loop)
    assert a["messaging.batch.message_count"] == 2 and a["_name"] == "send logs"
    a = one(wire.metadata_request(9, 2, ["logs"]), wire.metadata_response(9, 2, [("logs", 0)]), loop)
    assert a["_name"] == "Metadata"


@pytest.mark.parametrize("v", [4, 7, 11, 12])
def test_fetch_reads_the_batches_and_their_counts(v: int) -> None:
    req = wire.fetch_request(v, 3, "orders", [0])
    resp = wire.fetch_response(v, 3, "orders", [(0, 0, wire.batch(5, base=10) + wire.batch(2, base=15))])
    loop = Loop(SPEC)
    a = one(req, resp, loop)
    assert a["_name"] == "poll orders" and a["messaging.operation.type"] == "receive"
    assert a["messaging.batch.message_count"] == 7 and a["messaging.destination.partition.id"] == "0"
    assert a["_metric"] == METRIC and "l7scope.kafka.fetch.waited" not in a
    assert loop.exchanges[-1].response.frame.batches == [("orders", 0, 10, 5), ("orders", 0, 15, 2)]


def test_an_empty_fetch_that_could_wait_is_a_long_poll_with_its_own_histogram() -> None:
    a = one(
        wire.fetch_request(12, 3, "orders", [0], max_wait=500),
        wire.fetch_response(12, 3, "orders", [(0, 0, None)]),
    )
    assert a["l7scope.kafka.fetch.waited"] is True and a["l7scope.kafka.fetch.max_wait_ms"] == 500
    assert a["_metric"] == WAIT_METRIC and a["messaging.batch.message_count"] == 0


def test_fetch_error_and_a_batch_cut_by_the_size_limit() -> None:
    records = wire.batch(3, base=0) + wire.batch(3, base=3)[:30]  # the broker cut the second batch
    loop = Loop(SPEC)
    a = one(
        wire.fetch_request(11, 1, "t", [0, 1]),
        wire.fetch_response(11, 1, "t", [(0, 0, records), (1, 1, None)]),
        loop,
    )
    assert a["messaging.batch.message_count"] == 3 and a["_error"] == "OFFSET_OUT_OF_RANGE"
    assert "messaging.destination.partition.id" not in a  # two partitions


def test_topic_ids_are_named_from_metadata_on_the_connection() -> None:
    """Fetch v13+ and Produce v13 name topics by id: the Metadata response on the connection names them."""
    loop = Loop(SPEC)
    one(wire.metadata_request(12, 1, ["orders"]), wire.metadata_response(12, 1, [("orders", 0)]), loop)
    a = one(wire.fetch_request(16, 2, "", [0]), wire.fetch_response(16, 2, "", [(0, 0, wire.batch(2))]), loop)
    assert a["_name"] == "poll orders" and a["messaging.batch.message_count"] == 2
    a = one(
        wire.produce_request(13, 3, "", {1: wire.batch(4)}),
        wire.produce_response(13, 3, "", [(1, 0, 9)]),
        loop,
    )
    assert a["_name"] == "send orders" and a["messaging.batch.message_count"] == 4


def test_an_unknown_topic_id_leaves_the_destination_out() -> None:
    a = one(wire.fetch_request(13, 2, "", [0]), wire.fetch_response(13, 2, "", [(0, 0, wire.batch(2))]))
    assert a["_name"] == "Fetch" and "messaging.destination.name" not in a
    assert a["l7scope.kafka.topic_id"] == "01020304-0506-0708-090a-0b0c0d0e0f10"


@pytest.mark.parametrize("v", [0, 1, 8, 9, 12, 13])
def test_metadata(v: int) -> None:
    a = one(wire.metadata_request(v, 5, ["a"]), wire.metadata_response(v, 5, [("a", 3)]))
    assert a["_name"] == "Metadata" and a["messaging.destination.name"] == "a"
    assert a["_error"] == "UNKNOWN_TOPIC_OR_PARTITION" and not a["_degraded"]


@pytest.mark.parametrize("v", [1, 4, 5, 6, 9])
def test_list_offsets(v: int) -> None:
    a = one(wire.list_offsets_request(v, 5, "a", [3]), wire.list_offsets_response(v, 5, "a", [(3, 0)]))
    assert (
        a["_name"] == "ListOffsets" and a["messaging.destination.partition.id"] == "3" and a["_error"] is None
    )


@pytest.mark.parametrize("v", [2, 5, 7, 8, 9])
def test_offset_commit(v: int) -> None:
    req = wire.offset_commit_request(v, 5, "grp", "a", [0])
    a = one(req, wire.offset_commit_response(v, 5, "a", [(0, 27)]))
    assert a["messaging.consumer.group.name"] == "grp" and a["messaging.operation.type"] == "settle"
    assert a["messaging.destination.name"] == "a" and a["_error"] == "REBALANCE_IN_PROGRESS"


@pytest.mark.parametrize("v", [1, 5, 6, 7, 8, 9])
def test_offset_fetch(v: int) -> None:
    req = wire.offset_fetch_request(v, 5, "grp", "a", [0, 1])
    a = one(req, wire.offset_fetch_response(v, 5, "grp", "a", [(0, 0), (1, 0)]))
    assert a["messaging.consumer.group.name"] == "grp" and a["messaging.destination.name"] == "a"
    assert a["_error"] is None and a["_name"] == "OffsetFetch"


@pytest.mark.parametrize("v", [0, 2, 3, 4, 6])
def test_find_coordinator(v: int) -> None:
    a = one(wire.find_coordinator_request(v, 5, "grp"), wire.find_coordinator_response(v, 5, "grp", 15))
    assert a["messaging.consumer.group.name"] == "grp" and a["_error"] == "COORDINATOR_NOT_AVAILABLE"


@pytest.mark.parametrize("api", sorted(wire.GROUP_REQUESTS))
@pytest.mark.parametrize("v", [0, 3, 4])
def test_group_membership(api: str, v: int) -> None:
    a = one(wire.group_request(api, v, 5, "grp"), wire.group_response(api, v, 5, 25))
    assert a["_name"] == api and a["messaging.consumer.group.name"] == "grp"
    assert a["_error"] == "UNKNOWN_MEMBER_ID"


@pytest.mark.parametrize("v", [0, 2, 3, 4])
def test_api_versions_answers_with_header_v0(v: int) -> None:
    a = one(wire.api_versions_request(v, 0), wire.api_versions_response(v, 0, 35))
    assert a["_name"] == "ApiVersions" and a["_error"] == "UNSUPPORTED_VERSION"


@pytest.mark.parametrize("v", [0, 1, 2, 4])
def test_init_producer_id(v: int) -> None:
    a = one(wire.init_producer_id_request(v, 9), wire.init_producer_id_response(v, 9, 53))
    assert a["_name"] == "InitProducerId" and a["_error"] == "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"


def test_an_api_without_a_known_layout_is_named_and_reports_no_error() -> None:
    """DescribeConfigs (32): its response's error codes sit in per-resource entries; none is guessed."""
    body = b"\x00\x00\x00\x00"
    req = (8 + 2 + 5 + len(body)).to_bytes(4, "big") + b"\x00\x20\x00\x01\x00\x00\x00\x09\x00\x05app-1" + body
    resp = (4 + 6).to_bytes(4, "big") + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00\x00\x2a"
    a = one(req, resp)
    assert a["_name"] == "DescribeConfigs" and a["_error"] is None and a["messaging.client.id"] == "app-1"


def test_an_incremental_fetch_names_its_topic_from_the_response() -> None:
    """A fetch session's incremental Fetch may list no topics: the response's topic and partition."""
    loop = Loop(SPEC)
    one(wire.metadata_request(12, 1, ["orders"]), wire.metadata_response(12, 1, [("orders", 0)]), loop)
    from kafka.protocol.consumer.fetch import FetchRequest

    empty = FetchRequest[12](
        replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, session_id=7, topics=[]
    )
    req = wire.request(empty, 2)
    a = one(req, wire.fetch_response(12, 2, "orders", [(3, 0, wire.batch(4))]), loop)
    assert a["_name"] == "poll orders" and a["messaging.destination.partition.id"] == "3"
    assert a["messaging.batch.message_count"] == 4
