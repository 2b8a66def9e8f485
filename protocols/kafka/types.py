"""Kafka frames (one size-delimited message each), the exchange, the per-connection state and bounds.

Tables from the message schemas of Apache Kafka 4.1 (clients' `common/message/*.json`): every API key by
name, the highest request version each accepts (older brokers' inter-broker APIs keep their last known
maximum), and the first flexible version (compact strings/arrays, unsigned varints, tagged fields), which
also decides the header versions: request header v2 / response header v1 from it on, v1 / v0 before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.base import Timed

# api key -> (name, highest request version accepted, first flexible version; NEVER = not flexible)
NEVER = 1 << 16
APIS: dict[int, tuple[str, int, int]] = {
    0: ("Produce", 13, 9),
    1: ("Fetch", 18, 12),
    2: ("ListOffsets", 10, 6),
    3: ("Metadata", 13, 9),
    4: ("LeaderAndIsr", 7, 4),
    5: ("StopReplica", 4, 2),
    6: ("UpdateMetadata", 8, 6),
    7: ("ControlledShutdown", 3, 3),
    8: ("OffsetCommit", 10, 8),
    9: ("OffsetFetch", 10, 6),
    10: ("FindCoordinator", 6, 3),
    11: ("JoinGroup", 9, 6),
    12: ("Heartbeat", 4, 4),
    13: ("LeaveGroup", 5, 4),
    14: ("SyncGroup", 5, 4),
    15: ("DescribeGroups", 6, 5),
    16: ("ListGroups", 5, 3),
    17: ("SaslHandshake", 1, NEVER),
    18: ("ApiVersions", 4, 3),
    19: ("CreateTopics", 7, 5),
    20: ("DeleteTopics", 6, 4),
    21: ("DeleteRecords", 2, 2),
    22: ("InitProducerId", 6, 2),
    23: ("OffsetForLeaderEpoch", 4, 4),
    24: ("AddPartitionsToTxn", 5, 3),
    25: ("AddOffsetsToTxn", 4, 3),
    26: ("EndTxn", 5, 3),
    27: ("WriteTxnMarkers", 1, 1),
    28: ("TxnOffsetCommit", 5, 3),
    29: ("DescribeAcls", 3, 2),
    30: ("CreateAcls", 3, 2),
    31: ("DeleteAcls", 3, 2),
    32: ("DescribeConfigs", 4, 4),
    33: ("AlterConfigs", 2, 2),
    34: ("AlterReplicaLogDirs", 2, 2),
    35: ("DescribeLogDirs", 4, 2),
    36: ("SaslAuthenticate", 2, 2),
    37: ("CreatePartitions", 3, 2),
    38: ("CreateDelegationToken", 3, 2),
    39: ("RenewDelegationToken", 2, 2),
    40: ("ExpireDelegationToken", 2, 2),
    41: ("DescribeDelegationToken", 3, 2),
    42: ("DeleteGroups", 2, 2),
    43: ("ElectLeaders", 2, 2),
    44: ("IncrementalAlterConfigs", 1, 1),
    45: ("AlterPartitionReassignments", 1, 0),
    46: ("ListPartitionReassignments", 0, 0),
    47: ("OffsetDelete", 0, NEVER),
    48: ("DescribeClientQuotas", 1, 1),
    49: ("AlterClientQuotas", 1, 1),
    50: ("DescribeUserScramCredentials", 0, 0),
    51: ("AlterUserScramCredentials", 0, 0),
    52: ("Vote", 2, 0),
    53: ("BeginQuorumEpoch", 1, 1),
    54: ("EndQuorumEpoch", 1, 1),
    55: ("DescribeQuorum", 2, 0),
    56: ("AlterPartition", 3, 0),
    57: ("UpdateFeatures", 2, 0),
    58: ("Envelope", 0, 0),
    59: ("FetchSnapshot", 1, 0),
    60: ("DescribeCluster", 2, 0),
    61: ("DescribeProducers", 0, 0),
    62: ("BrokerRegistration", 4, 0),
    63: ("BrokerHeartbeat", 1, 0),
    64: ("UnregisterBroker", 0, 0),
    65: ("DescribeTransactions", 0, 0),
    66: ("ListTransactions", 2, 0),
    67: ("AllocateProducerIds", 0, 0),
    68: ("ConsumerGroupHeartbeat", 1, 0),
    69: ("ConsumerGroupDescribe", 1, 0),
    70: ("ControllerRegistration", 0, 0),
    71: ("GetTelemetrySubscriptions", 0, 0),
    72: ("PushTelemetry", 0, 0),
    73: ("AssignReplicasToDirs", 0, 0),
    74: ("ListConfigResources", 1, 0),
    75: ("DescribeTopicPartitions", 0, 0),
    76: ("ShareGroupHeartbeat", 1, 0),
    77: ("ShareGroupDescribe", 1, 0),
    78: ("ShareFetch", 1, 0),
    79: ("ShareAcknowledge", 1, 0),
    80: ("AddRaftVoter", 0, 0),
    81: ("RemoveRaftVoter", 0, 0),
    82: ("UpdateRaftVoter", 0, 0),
    83: ("InitializeShareGroupState", 0, 0),
    84: ("ReadShareGroupState", 0, 0),
    85: ("WriteShareGroupState", 0, 0),
    86: ("DeleteShareGroupState", 0, 0),
    87: ("ReadShareGroupStateSummary", 0, 0),
    88: ("StreamsGroupHeartbeat", 0, 0),
    89: ("StreamsGroupDescribe", 0, 0),
    90: ("DescribeShareGroupOffsets", 0, 0),
    91: ("AlterShareGroupOffsets", 0, 0),
    92: ("DeleteShareGroupOffsets", 0, 0),
}
VERSION_SLACK = 2  # versions above the table's maximum still accepted (a newer client's next version)

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 11, 12, 13, 14
API_VERSIONS, INIT_PRODUCER_ID = 18, 22

ERRORS: dict[int, str] = {
    -1: "UNKNOWN_SERVER_ERROR", 1: "OFFSET_OUT_OF_RANGE", 2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION", 4: "INVALID_FETCH_SIZE", 5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 8: "BROKER_NOT_AVAILABLE",
    9: "REPLICA_NOT_AVAILABLE", 10: "MESSAGE_TOO_LARGE", 11: "STALE_CONTROLLER_EPOCH",
    12: "OFFSET_METADATA_TOO_LARGE", 13: "NETWORK_EXCEPTION", 14: "COORDINATOR_LOAD_IN_PROGRESS",
    15: "COORDINATOR_NOT_AVAILABLE", 16: "NOT_COORDINATOR", 17: "INVALID_TOPIC_EXCEPTION",
    18: "RECORD_LIST_TOO_LARGE", 19: "NOT_ENOUGH_REPLICAS", 20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    21: "INVALID_REQUIRED_ACKS", 22: "ILLEGAL_GENERATION", 23: "INCONSISTENT_GROUP_PROTOCOL",
    24: "INVALID_GROUP_ID", 25: "UNKNOWN_MEMBER_ID", 26: "INVALID_SESSION_TIMEOUT",
    27: "REBALANCE_IN_PROGRESS", 28: "INVALID_COMMIT_OFFSET_SIZE", 29: "TOPIC_AUTHORIZATION_FAILED",
    30: "GROUP_AUTHORIZATION_FAILED", 31: "CLUSTER_AUTHORIZATION_FAILED", 32: "INVALID_TIMESTAMP",
    33: "UNSUPPORTED_SASL_MECHANISM", 34: "ILLEGAL_SASL_STATE", 35: "UNSUPPORTED_VERSION",
    36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 38: "INVALID_REPLICATION_FACTOR",
    39: "INVALID_REPLICA_ASSIGNMENT", 40: "INVALID_CONFIG", 41: "NOT_CONTROLLER", 42: "INVALID_REQUEST",
    43: "UNSUPPORTED_FOR_MESSAGE_FORMAT", 44: "POLICY_VIOLATION", 45: "OUT_OF_ORDER_SEQUENCE_NUMBER",
    46: "DUPLICATE_SEQUENCE_NUMBER", 47: "INVALID_PRODUCER_EPOCH", 48: "INVALID_TXN_STATE",
    49: "INVALID_PRODUCER_ID_MAPPING", 50: "INVALID_TRANSACTION_TIMEOUT", 51: "CONCURRENT_TRANSACTIONS",
    52: "TRANSACTION_COORDINATOR_FENCED", 53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    54: "SECURITY_DISABLED", 55: "OPERATION_NOT_ATTEMPTED", 56: "KAFKA_STORAGE_ERROR",
    57: "LOG_DIR_NOT_FOUND", 58: "SASL_AUTHENTICATION_FAILED", 59: "UNKNOWN_PRODUCER_ID",
    60: "REASSIGNMENT_IN_PROGRESS", 61: "DELEGATION_TOKEN_AUTH_DISABLED", 62: "DELEGATION_TOKEN_NOT_FOUND",
    63: "DELEGATION_TOKEN_OWNER_MISMATCH", 64: "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    65: "DELEGATION_TOKEN_AUTHORIZATION_FAILED", 66: "DELEGATION_TOKEN_EXPIRED",
    67: "INVALID_PRINCIPAL_TYPE", 68: "NON_EMPTY_GROUP", 69: "GROUP_ID_NOT_FOUND",
    70: "FETCH_SESSION_ID_NOT_FOUND", 71: "INVALID_FETCH_SESSION_EPOCH", 72: "LISTENER_NOT_FOUND",
    73: "TOPIC_DELETION_DISABLED", 74: "FENCED_LEADER_EPOCH", 75: "UNKNOWN_LEADER_EPOCH",
    76: "UNSUPPORTED_COMPRESSION_TYPE", 77: "STALE_BROKER_EPOCH", 78: "OFFSET_NOT_AVAILABLE",
    79: "MEMBER_ID_REQUIRED", 80: "PREFERRED_LEADER_NOT_AVAILABLE", 81: "GROUP_MAX_SIZE_REACHED",
    82: "FENCED_INSTANCE_ID", 83: "ELIGIBLE_LEADERS_NOT_AVAILABLE", 84: "ELECTION_NOT_NEEDED",
    85: "NO_REASSIGNMENT_IN_PROGRESS", 86: "GROUP_SUBSCRIBED_TO_TOPIC", 87: "INVALID_RECORD",
    88: "UNSTABLE_OFFSET_COMMIT", 89: "THROTTLING_QUOTA_EXCEEDED", 90: "PRODUCER_FENCED",
    91: "RESOURCE_NOT_FOUND", 92: "DUPLICATE_RESOURCE", 93: "UNACCEPTABLE_CREDENTIAL",
    94: "INCONSISTENT_VOTER_SET", 95: "INVALID_UPDATE_VERSION", 96: "FEATURE_UPDATE_FAILED",
    97: "PRINCIPAL_DESERIALIZATION_FAILURE", 98: "SNAPSHOT_NOT_FOUND", 99: "POSITION_OUT_OF_RANGE",
    100: "UNKNOWN_TOPIC_ID", 101: "DUPLICATE_BROKER_REGISTRATION", 102: "BROKER_ID_NOT_REGISTERED",
    103: "INCONSISTENT_TOPIC_ID", 104: "INCONSISTENT_CLUSTER_ID", 105: "TRANSACTIONAL_ID_NOT_FOUND",
    106: "FETCH_SESSION_TOPIC_ID_ERROR", 107: "INELIGIBLE_REPLICA", 108: "NEW_LEADER_ELECTED",
    109: "OFFSET_MOVED_TO_TIERED_STORAGE", 110: "FENCED_MEMBER_EPOCH", 111: "UNRELEASED_INSTANCE_ID",
    112: "UNSUPPORTED_ASSIGNOR", 113: "STALE_MEMBER_EPOCH", 114: "MISMATCHED_ENDPOINT_TYPE",
    115: "UNSUPPORTED_ENDPOINT_TYPE", 116: "UNKNOWN_CONTROLLER_ID", 117: "UNKNOWN_SUBSCRIPTION_ID",
    118: "TELEMETRY_TOO_LARGE", 119: "INVALID_REGISTRATION", 120: "TRANSACTION_ABORTABLE",
    121: "INVALID_RECORD_STATE", 122: "SHARE_SESSION_NOT_FOUND", 123: "INVALID_SHARE_SESSION_EPOCH",
    124: "FENCED_STATE_EPOCH", 125: "INVALID_VOTER_KEY", 126: "DUPLICATE_VOTER", 127: "VOTER_NOT_FOUND",
    128: "INVALID_REGULAR_EXPRESSION", 129: "REBOOTSTRAP_REQUIRED", 130: "STREAMS_INVALID_TOPOLOGY",
    131: "STREAMS_INVALID_TOPOLOGY_EPOCH", 132: "STREAMS_TOPOLOGY_FENCED",
    133: "SHARE_SESSION_LIMIT_REACHED",
}  # fmt: skip

# Bounds.
MAX_SIZE = 1 << 30  # a size field above this is no Kafka message (brokers refuse far smaller ones)
MAX_REQUEST_DETECT = 1 << 27  # requests are bounded by socket.request.max.bytes (100 MiB by default)
WHOLE_CAP = 1 << 20  # messages up to this size are parsed whole; larger ones from a prefix, rest skipped
PREFIX_CAP = 64 << 10  # the prefix of a larger message parsed before its rest is skipped unbuffered
NAME_CAP = 255  # characters kept of a topic, group or client id
MAX_TOPICS = 64  # distinct topics kept per frame (the count stays exact)
MAX_BATCHES = 256  # (topic, partition, base offset, records) kept per frame
MAX_PENDING = 4096  # correlation ids awaiting their responses, per connection
MAX_TOPIC_IDS = 4096  # topic id -> name entries learnt from Metadata responses, per connection


@dataclass(slots=True)
class Frame:
    """One Kafka message: its header and what was read of its body (bounded)."""

    request: bool
    size: int  # the size field: bytes after it
    api_key: int  # -1: a response whose request was not seen
    api_version: int
    correlation_id: int
    client_id: str = ""
    topics: list[str] = field(default_factory=list)  # distinct, at most MAX_TOPICS
    topic_count: int = 0  # topics in the message (array lengths summed)
    topic_ids: list[str] = field(default_factory=list)  # ids (hex) of topics not named on the connection
    partitions: list[int] = field(default_factory=list)  # partition ids, at most MAX_TOPICS
    partition_count: int = 0
    group: str = ""
    error_code: int = 0  # the first non-zero error code of a response
    records: int = -1  # records in the record batches read; -1: none carried
    # topic ("name|id hex", as far as known), partition, base offset, records (0 in a Produce response)
    batches: list[tuple[str, int, int, int]] = field(default_factory=list)
    acks: int = -1  # Produce: 0 = the broker sends no response
    max_wait_ms: int = -1  # Fetch request
    parsed: bool = False  # the body's layout is known and was read
    partial: bool = False  # the body was read in part (a prefix, a short or malformed field)


@dataclass(slots=True)
class Exchange:
    request: Timed[Frame]
    response: Timed[Frame] | None  # None: Produce with acks=0, answered by nothing


@dataclass(slots=True)
class State:
    """Per-connection state: the requests awaiting responses and the topic names learnt."""

    # correlation id -> (api key, api version) of requests awaiting a response (insertion order)
    pending: dict[int, tuple[int, int]] = field(default_factory=dict)
    topic_ids: dict[bytes, str] = field(default_factory=dict)  # from Metadata v10+ responses
    topic_names: dict[str, str] = field(default_factory=dict)  # the reverse: name -> id (hex)
    unmatched: int = 0  # frames stitch dropped unpaired since take_unmatched


def api_name(key: int) -> str:
    entry = APIS.get(key)
    return entry[0] if entry else f"api_{key}"


def error_name(code: int) -> str:
    return ERRORS.get(code, str(code))
