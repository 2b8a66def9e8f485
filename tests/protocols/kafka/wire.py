"""Kafka messages for tests, encoded by kafka-python's schema-driven codecs (an encoder independent of
the parser under test), and record batches by its MemoryRecordsBuilder."""

from __future__ import annotations

from typing import Any

from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse
from kafka.record.memory_records import MemoryRecordsBuilder

TOPIC_ID = bytes(range(1, 17))


def batch(n: int, base: int = 0, value: bytes = b"v" * 20) -> bytes:
    """One RecordBatch v2 of `n` records starting at offset `base`."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 24)
    for k in range(n):
        builder.append(1_700_000_000_000 + k, None, value)
    builder.close()
    data = bytes(builder.buffer())  # a producer's batch starts at 0; the broker's log sets the base
    return base.to_bytes(8, "big") + data[8:]


def request(msg: Any, correlation: int, client_id: str | None = "app-1") -> bytes:
    msg.with_header(correlation_id=correlation, client_id=client_id)
    return bytes(msg.encode(header=True, framed=True))


def response(msg: Any, correlation: int) -> bytes:
    msg.with_header(correlation_id=correlation)
    return bytes(msg.encode(header=True, framed=True))


def _uuid(v: int, topic_id: bytes) -> Any:
    import uuid

    return uuid.UUID(bytes=topic_id)


# -- Produce ---------------------------------------------------------------------------------------------


def produce_request(
    v: int, corr: int, topic: str, parts: dict[int, bytes], acks: int = -1, topic_id: bytes = TOPIC_ID
) -> bytes:
    T = ProduceRequest.TopicProduceData
    P = T.PartitionProduceData
    td = T(partition_data=[P(index=p, records=r) for p, r in parts.items()])
    if v >= 13:
        td.topic_id = _uuid(v, topic_id)
    else:
        td.name = topic
    return request(
        ProduceRequest[v](transactional_id=None, acks=acks, timeout_ms=30000, topic_data=[td]), corr
    )


def produce_response(
    v: int, corr: int, topic: str, parts: list[tuple[int, int, int]], topic_id: bytes = TOPIC_ID
) -> bytes:
    T = ProduceResponse.TopicProduceResponse
    P = T.PartitionProduceResponse
    tr = T(partition_responses=[P(index=p, error_code=e, base_offset=b) for p, e, b in parts])
    if v >= 13:
        tr.topic_id = _uuid(v, topic_id)
    else:
        tr.name = topic
    return response(ProduceResponse[v](responses=[tr], throttle_time_ms=0), corr)


# -- Fetch -----------------------------------------------------------------------------------------------


def fetch_request(
    v: int, corr: int, topic: str, parts: list[int], max_wait: int = 500, topic_id: bytes = TOPIC_ID
) -> bytes:
    T = FetchRequest.FetchTopic
    P = T.FetchPartition
    ft = T(partitions=[P(partition=p, fetch_offset=0, partition_max_bytes=1 << 20) for p in parts])
    if v >= 13:
        ft.topic_id = _uuid(v, topic_id)
    else:
        ft.topic = topic
    msg = FetchRequest[v](replica_id=-1, max_wait_ms=max_wait, min_bytes=1, max_bytes=50 << 20, topics=[ft])
    return request(msg, corr)


def fetch_response(
    v: int, corr: int, topic: str, parts: list[tuple[int, int, bytes | None]], topic_id: bytes = TOPIC_ID
) -> bytes:
    T = FetchResponse.FetchableTopicResponse
    P = T.PartitionData
    tr = T(
        partitions=[P(partition_index=p, error_code=e, high_watermark=100, records=r) for p, e, r in parts]
    )
    if v >= 13:
        tr.topic_id = _uuid(v, topic_id)
    else:
        tr.topic = topic
    return response(FetchResponse[v](throttle_time_ms=0, error_code=0, session_id=0, responses=[tr]), corr)


# -- Metadata, ListOffsets -------------------------------------------------------------------------------


def metadata_request(v: int, corr: int, topics: list[str]) -> bytes:
    T = MetadataRequest.MetadataRequestTopic
    return request(
        MetadataRequest[v](topics=[T(name=t) for t in topics], allow_auto_topic_creation=True), corr
    )


def metadata_response(v: int, corr: int, topics: list[tuple[str, int]], topic_id: bytes = TOPIC_ID) -> bytes:
    B = MetadataResponse.MetadataResponseBroker
    T = MetadataResponse.MetadataResponseTopic
    P = T.MetadataResponsePartition
    ts = [
        T(error_code=e, name=t, topic_id=_uuid(v, topic_id), is_internal=False,
          partitions=[P(error_code=0, partition_index=0, leader_id=1, replica_nodes=[1], isr_nodes=[1])])
        for t, e in topics
    ]  # fmt: skip
    msg = MetadataResponse[v](
        brokers=[B(node_id=1, host="localhost", port=9092)], cluster_id="c", controller_id=1, topics=ts
    )
    return response(msg, corr)


def list_offsets_request(v: int, corr: int, topic: str, parts: list[int]) -> bytes:
    T = ListOffsetsRequest.ListOffsetsTopic
    P = T.ListOffsetsPartition
    msg = ListOffsetsRequest[v](
        replica_id=-1, topics=[T(name=topic, partitions=[P(partition_index=p, timestamp=-1) for p in parts])]
    )
    return request(msg, corr)


def list_offsets_response(v: int, corr: int, topic: str, parts: list[tuple[int, int]]) -> bytes:
    T = ListOffsetsResponse.ListOffsetsTopicResponse
    P = T.ListOffsetsPartitionResponse
    ps = [P(partition_index=p, error_code=e, timestamp=-1, offset=7) for p, e in parts]
    return response(ListOffsetsResponse[v](throttle_time_ms=0, topics=[T(name=topic, partitions=ps)]), corr)


# -- consumer groups -------------------------------------------------------------------------------------


def offset_commit_request(v: int, corr: int, group: str, topic: str, parts: list[int]) -> bytes:
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    P = T.OffsetCommitRequestPartition
    t = T(partitions=[P(partition_index=p, committed_offset=5, committed_metadata="") for p in parts])
    if v >= 10:
        t.topic_id = _uuid(v, TOPIC_ID)
    else:
        t.name = topic
    msg = OffsetCommitRequest[v](group_id=group, generation_id_or_member_epoch=1, member_id="m-1", topics=[t])
    return request(msg, corr)


def offset_commit_response(v: int, corr: int, topic: str, parts: list[tuple[int, int]]) -> bytes:
    T = OffsetCommitResponse.OffsetCommitResponseTopic
    P = T.OffsetCommitResponsePartition
    t = T(partitions=[P(partition_index=p, error_code=e) for p, e in parts])
    if v >= 10:
        t.topic_id = _uuid(v, TOPIC_ID)
    else:
        t.name = topic
    return response(OffsetCommitResponse[v](throttle_time_ms=0, topics=[t]), corr)


def offset_fetch_request(v: int, corr: int, group: str, topic: str, parts: list[int]) -> bytes:
    if v <= 7:
        T = OffsetFetchRequest.OffsetFetchRequestTopic
        msg = OffsetFetchRequest[v](group_id=group, topics=[T(name=topic, partition_indexes=parts)])
    else:
        G = OffsetFetchRequest.OffsetFetchRequestGroup
        GT = G.OffsetFetchRequestTopics
        t = GT(partition_indexes=parts)
        if v >= 10:
            t.topic_id = _uuid(v, TOPIC_ID)
        else:
            t.name = topic
        msg = OffsetFetchRequest[v](groups=[G(group_id=group, member_id=None, member_epoch=-1, topics=[t])])
    return request(msg, corr)


def offset_fetch_response(v: int, corr: int, group: str, topic: str, parts: list[tuple[int, int]]) -> bytes:
    if v <= 7:
        T = OffsetFetchResponse.OffsetFetchResponseTopic
        P = T.OffsetFetchResponsePartition
        ps = [P(partition_index=p, committed_offset=3, metadata="", error_code=e) for p, e in parts]
        msg = OffsetFetchResponse[v](throttle_time_ms=0, topics=[T(name=topic, partitions=ps)], error_code=0)
    else:
        G = OffsetFetchResponse.OffsetFetchResponseGroup
        GT = G.OffsetFetchResponseTopics
        P = GT.OffsetFetchResponsePartitions
        ps = [
            P(partition_index=p, committed_offset=3, committed_leader_epoch=-1, metadata="", error_code=e)
            for p, e in parts
        ]
        t = GT(partitions=ps)
        if v >= 10:
            t.topic_id = _uuid(v, TOPIC_ID)
        else:
            t.name = topic
        msg = OffsetFetchResponse[v](throttle_time_ms=0, groups=[G(group_id=group, topics=[t], error_code=0)])
    return response(msg, corr)


def find_coordinator_request(v: int, corr: int, group: str) -> bytes:
    if v <= 3:
        return request(FindCoordinatorRequest[v](key=group, key_type=0), corr)
    return request(FindCoordinatorRequest[v](key_type=0, coordinator_keys=[group]), corr)


def find_coordinator_response(v: int, corr: int, group: str, error: int) -> bytes:
    if v <= 3:
        msg = FindCoordinatorResponse[v](throttle_time_ms=0, error_code=error, node_id=1, host="h", port=9092)
    else:
        C = FindCoordinatorResponse.Coordinator
        msg = FindCoordinatorResponse[v](
            throttle_time_ms=0, coordinators=[C(key=group, node_id=1, host="h", port=9092, error_code=error)]
        )
    return response(msg, corr)


GROUP_REQUESTS = {
    "JoinGroup": (JoinGroupRequest, JoinGroupResponse),
    "SyncGroup": (SyncGroupRequest, SyncGroupResponse),
    "Heartbeat": (HeartbeatRequest, HeartbeatResponse),
    "LeaveGroup": (LeaveGroupRequest, LeaveGroupResponse),
}


def group_request(api: str, v: int, corr: int, group: str) -> bytes:
    cls = GROUP_REQUESTS[api][0]
    extra: dict[str, Any] = {}
    if api == "JoinGroup":
        extra = {
            "session_timeout_ms": 10000,
            "rebalance_timeout_ms": 10000,
            "member_id": "",
            "protocol_type": "consumer",
            "protocols": [],
        }
    elif api in ("SyncGroup", "Heartbeat"):
        extra = (
            {"generation_id": 1, "member_id": "m-1", "assignments": []}
            if api == "SyncGroup"
            else {"generation_id": 1, "member_id": "m-1"}
        )
    else:
        extra = {"member_id": "m-1", "members": []}
    return request(cls[v](group_id=group, **extra), corr)


def group_response(api: str, v: int, corr: int, error: int) -> bytes:
    cls = GROUP_REQUESTS[api][1]
    extra: dict[str, Any] = {}
    if api == "JoinGroup":
        extra = {
            "generation_id": 1,
            "protocol_name": "range",
            "leader": "m-1",
            "member_id": "m-1",
            "members": [],
        }
    elif api == "SyncGroup":
        extra = {"assignment": b""}
    elif api == "LeaveGroup":
        extra = {"members": []}
    return response(cls[v](throttle_time_ms=0, error_code=error, **extra), corr)


def api_versions_request(v: int, corr: int) -> bytes:
    return request(
        ApiVersionsRequest[v](client_software_name="kafka-python", client_software_version="3"), corr
    )


def api_versions_response(v: int, corr: int, error: int = 0) -> bytes:
    A = ApiVersionsResponse.ApiVersion
    msg = ApiVersionsResponse[v](
        error_code=error, api_keys=[A(api_key=0, min_version=3, max_version=13)], throttle_time_ms=0
    )
    return response(msg, corr)


def init_producer_id_request(v: int, corr: int) -> bytes:
    return request(InitProducerIdRequest[v](transactional_id=None, transaction_timeout_ms=1000), corr)


def init_producer_id_response(v: int, corr: int, error: int = 0) -> bytes:
    return response(
        InitProducerIdResponse[v](throttle_time_ms=0, error_code=error, producer_id=1, producer_epoch=0), corr
    )
