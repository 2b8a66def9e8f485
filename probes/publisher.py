"""Publishes batches to the fragments topic, keyed by connection; never blocks the capture drain.

Memory is bounded by the bytes handed to the producer and not yet acknowledged: past the bound
(a slow or absent broker) whole batches are dropped and counted, and publishing resumes by itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from l7scope.config import KafkaConfig, kafka_client_settings
from pipeline.health import Health
from probes.codec import encode_batch
from probes.fragment import Batch

log = logging.getLogger("l7scope.publisher")


class KafkaPublisher:
    def __init__(self, kafka: KafkaConfig, health: Health, **producer_overrides: Any) -> None:
        self.topic = kafka.fragments_topic
        self.health = health
        self.max_outstanding = kafka.max_buffer_mib << 20
        self._outstanding = 0
        self._lock = threading.Lock()
        settings: dict[str, Any] = kafka_client_settings(kafka) | {
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if kafka.compression == "none" else kafka.compression,
            "linger_ms": 20,
            "batch_size": 256 << 10,
            "max_request_size": 8 << 20,
            "max_block_ms": 100,  # metadata wait while the broker is away; then the batch is dropped
            "client_id": "l7scope-agent",
        }
        self.producer = KafkaProducer(**(settings | producer_overrides))

    def publish(self, batches: list[Batch]) -> None:
        for batch in batches:
            value = encode_batch(batch)
            size = len(value)
            with self._lock:
                full = self._outstanding + size > self.max_outstanding
                if not full:
                    self._outstanding += size
            if full:
                self._dropped(batch, "buffer bound reached")
                continue
            try:
                future = self.producer.send(self.topic, key=batch.conn.conn_id.encode(), value=value)
            except KafkaError as e:
                self._release(size)
                self._dropped(batch, type(e).__name__)
                continue
            future.add_callback(lambda _meta, n=size: self._release(n))
            future.add_errback(
                lambda e, b=batch, n=size: (self._release(n), self._dropped(b, type(e).__name__))
            )
            self.health.count("published_batches", "kafka")

    def _release(self, n: int) -> None:
        with self._lock:
            self._outstanding -= n

    def _dropped(self, batch: Batch, reason: str) -> None:
        self.health.count("dropped_batches", "kafka", reason=reason)
        self.health.count("dropped_fragments", "kafka", len(batch.fragments), reason=reason)

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as e:
            log.warning("Kafka flush on shutdown failed: %s", e)
        self.producer.close(timeout=timeout_s)
