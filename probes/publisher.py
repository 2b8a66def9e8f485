"""Publishes batches to the fragments topic, keyed by connection; never blocks the capture drain.

`publish()` only encodes and appends to an in-process queue under a lock. A background thread
connects (retrying while the broker is unreachable, so the agent starts without it), creates the
topic when missing, and hands messages to kafka-python's producer (batched, compressed, acks=all,
idempotent). Memory is bounded by the bytes queued here plus those inside the producer not yet
acknowledged: past the bound (a slow or absent broker) whole batches are dropped and counted, and
publishing resumes by itself as acknowledgements free space.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from l7scope.config import KafkaConfig, kafka_client_settings
from pipeline.health import Health
from probes.codec import encode_batch
from probes.fragment import Batch

log = logging.getLogger("l7scope.publisher")

STAGE = "kafka"


def producer_settings(kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
    """Batched, compressed, acks=all + idempotent; metadata waits bounded (they happen off the drain)."""
    return kafka_client_settings(kafka) | {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if kafka.compression == "none" else kafka.compression,
        "linger_ms": 20,
        "batch_size": 256 << 10,
        "max_request_size": 8 << 20,
        "max_block_ms": 2000,  # only the sender thread waits on metadata, never the capture
        "bootstrap_timeout_ms": 2000,  # one connect attempt; the thread retries on its own schedule
        "reconnect_backoff_max_ms": 2000,  # find a returning broker within ~2 s
        "delivery_timeout_ms": 120_000,  # a batch not acknowledged by then fails and is counted
        "client_id": client_id,
    }


class KafkaPublisher:
    def __init__(
        self,
        kafka: KafkaConfig,
        health: Health,
        retry_s: float = 1.0,
        max_outstanding_bytes: int | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.kafka = kafka
        self.topic = kafka.fragments_topic
        self.health = health
        self.retry_s = retry_s
        self.max_outstanding = max_outstanding_bytes or kafka.max_buffer_mib << 20
        self.producer_overrides = producer_overrides
        self.producer: KafkaProducer | None = None
        self.connected = threading.Event()
        self._pending: deque[tuple[bytes, bytes, int]] = deque()  # key, value, fragments
        self._outstanding = 0
        self.peak_outstanding = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="kafka-publisher", daemon=True)
        self._thread.start()

    # -- the capture side: never waits on the network ------------------------------------------

    def publish(self, batches: list[Batch]) -> None:
        for batch in batches:
            key, value = batch.conn.conn_id.encode(), encode_batch(batch)
            size, n = len(key) + len(value), len(batch.fragments)
            with self._cond:
                full = self._outstanding + size > self.max_outstanding
                if not full:
                    self._outstanding += size
                    self.peak_outstanding = max(self.peak_outstanding, self._outstanding)
                    self._pending.append((key, value, n))
                    self._cond.notify()
            if full:
                self._dropped(n, "buffer bound reached")

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        producer = self._connect()
        while producer is not None:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(0.5)
                if not self._pending:
                    return
                items = list(self._pending)
                self._pending.clear()
            for key, value, n in items:
                self._send(producer, key, value, n)

    def _connect(self) -> KafkaProducer | None:
        """Retry until the broker answers (or we are closed); what arrives meanwhile queues or drops."""
        from pipeline.kafka_source import ensure_topics

        warned = False
        while not self._closing:
            try:
                ensure_topics(self.kafka, self.topic, timeout_s=2.0)
                settings = producer_settings(self.kafka, "l7scope-agent") | self.producer_overrides
                self.producer = KafkaProducer(**settings)
                self.producer.partitions_for(self.topic)  # metadata now, so no send waits for it later
            except Exception as e:  # NoBrokersAvailable, timeouts, auth errors: all mean "not yet"
                if not warned:
                    log.warning("Kafka at %s not reachable (%s): retrying, batches queue up to %d MiB "
                                "then drop (counted)", self.kafka.bootstrap, e, self.max_outstanding >> 20)
                    warned = True
                self.health.count("connect_retries", STAGE)
                with self._cond:
                    self._cond.wait(self.retry_s)
                continue
            log.info("publishing to %s at %s", self.topic, self.kafka.bootstrap)
            self.connected.set()
            return self.producer
        return None

    def _send(self, producer: KafkaProducer, key: bytes, value: bytes, n: int) -> None:
        size = len(key) + len(value)
        try:
            future = producer.send(self.topic, key=key, value=value)
        except KafkaError as e:
            self._release(size)
            self._dropped(n, type(e).__name__)
            return
        self.health.count("published_batches", STAGE)
        future.add_callback(lambda _meta: self._delivered(size))
        future.add_errback(lambda e: (self._release(size), self._dropped(n, type(e).__name__)))

    def _delivered(self, size: int) -> None:
        self._release(size)
        self.health.count("delivered_batches", STAGE)

    def _release(self, n: int) -> None:
        with self._cond:
            self._outstanding -= n

    def _dropped(self, fragments: int, reason: str) -> None:
        self.health.count("dropped_batches", STAGE, reason=reason)
        self.health.count("dropped_fragments", STAGE, fragments, reason=reason)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (within `timeout_s`); whatever cannot be delivered is counted as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        for key, value, n in left:
            self._release(len(key) + len(value))
            self._dropped(n, "closed before sent")
        if self.producer is None:
            return
        try:
            self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as e:
            log.warning("Kafka flush on shutdown failed: %s", e)
        # close() fails what is still unacknowledged, which the errbacks count
        self.producer.close(timeout=max(0.1, deadline - time.monotonic()))
