"""Publishes batches to the fragments topic, keyed by connection; never blocks the capture drain.

The sending (background connect/retry, memory bound, counted drops) is probes/kafka_io.py's
KafkaSender, shared with the records and alerts topics; here a batch becomes one keyed message.

The key (`fragments_key`) is the node and the connection's two endpoints in a fixed order, so both
ends of a connection traced on one node (curl -> nginx on one host) land on one partition and meet in
one pipeline replica, which counts an exchange traced from both ends once (pipeline/topology.py).
"""

from __future__ import annotations

from typing import Any

from l7scope.config import KafkaConfig
from probes.codec import encode_batch
from probes.fragment import Batch
from probes.health import Health
from probes.kafka_io import KafkaSender
from protocols.base import ConnInfo, Endpoint

_UNSPECIFIED = ("", "0.0.0.0", "::")


def _known(end: Endpoint) -> bool:
    return end.port != 0 and end.ip not in _UNSPECIFIED


def fragments_key(conn: ConnInfo) -> bytes:
    """`node|lower endpoint|higher endpoint`: the same for both ends of a connection on one node.

    The endpoints are written as the service map joins ends (`str(Endpoint)`, IPv4-mapped IPv6 as
    IPv4), ordered as text, so the client's (local, remote) and the server's (remote, local) give one
    key. A connection whose endpoints were not both read (port 0, unspecified address: e.g. a socket
    first used after it was unhashed) is keyed by its `conn_id` instead; it cannot be joined anyway.
    Every batch of a connection carries the `ConnInfo` capture made at its first sighting (endpoints
    read once, when the kernel bound the connection to its process), so one connection has one key
    for its whole life: its bytes are never split across partitions.
    """
    if not (_known(conn.local) and _known(conn.remote)):
        return conn.conn_id.encode()
    low, high = sorted((str(conn.local), str(conn.remote)))
    return f"{conn.node}|{low}|{high}".encode()


class KafkaPublisher(KafkaSender):
    def __init__(
        self,
        kafka: KafkaConfig,
        health: Health,
        retry_s: float = 1.0,
        max_outstanding_bytes: int | None = None,
        **producer_overrides: Any,
    ) -> None:
        super().__init__(
            kafka, kafka.fragments_topic, health, unit="batches", items="fragments",
            client_id="l7scope-agent", retry_s=retry_s, max_outstanding_bytes=max_outstanding_bytes,
            **producer_overrides,
        )  # fmt: skip

    def publish(self, batches: list[Batch]) -> None:
        for batch in batches:
            self.send(fragments_key(batch.conn), encode_batch(batch), len(batch.fragments))
