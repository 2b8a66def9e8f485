"""Publishes batches to the fragments topic, keyed by connection; never blocks the capture drain.

The sending (background connect/retry, memory bound, counted drops) is pipeline/bounded_send.py's
KafkaSender, shared with the records and alerts topics; here a batch becomes one keyed message.
"""

from __future__ import annotations

from typing import Any

from l7scope.config import KafkaConfig
from pipeline.bounded_send import KafkaSender
from pipeline.health import Health
from probes.codec import encode_batch
from probes.fragment import Batch


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
            self.send(batch.conn.conn_id.encode(), encode_batch(batch), len(batch.fragments))
