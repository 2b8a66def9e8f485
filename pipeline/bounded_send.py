"""Bounded, counted Kafka sends that never block the caller: one mechanism for every topic we write.

`send()` only appends to an in-process queue under a lock. A background thread connects (retrying
while the broker is unreachable, so a process starts without it), creates the topic when missing,
and hands messages to kafka-python's producer (batched, compressed, acks=all, idempotent). Memory is
bounded by the bytes queued here plus those inside the producer not yet acknowledged: past the bound
(a slow or absent broker) messages are dropped and counted, and sending resumes by itself as
acknowledgements free space.

Counters (label = `stage`): published_<unit>, delivered_<unit>, dropped_<unit> (with a reason),
dropped_<items> (the items a dropped message carried, e.g. fragments), connect_retries.
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

log = logging.getLogger("l7scope.kafka")


def producer_settings(kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
    """Batched, compressed, acks=all + idempotent; metadata waits bounded (they happen off the caller)."""
    return kafka_client_settings(kafka) | {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if kafka.compression == "none" else kafka.compression,
        "linger_ms": 20,
        "batch_size": 256 << 10,
        "max_request_size": 8 << 20,
        "max_block_ms": 2000,  # only the sender thread waits on metadata, never the caller
        "bootstrap_timeout_ms": 2000,  # one connect attempt; the thread retries on its own schedule
        "reconnect_backoff_max_ms": 2000,  # find a returning broker within ~2 s
        "delivery_timeout_ms": 120_000,  # a message not acknowledged by then fails and is counted
        "client_id": client_id,
    }


class KafkaSender:
    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        health: Health,
        *,
        unit: str,  # what one message is, for the counters: "batches", "records", "alerts"
        items: str = "",  # what a message carries, counted when dropped: "fragments"
        client_id: str = "l7scope",
        stage: str = "kafka",
        retry_s: float = 1.0,
        max_outstanding_bytes: int | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.kafka, self.topic, self.health = kafka, topic, health
        self.unit, self.items, self.client_id, self.stage = unit, items, client_id, stage
        self.retry_s = retry_s
        self.max_outstanding = max_outstanding_bytes or kafka.max_buffer_mib << 20
        self.producer_overrides = producer_overrides
        self.producer: KafkaProducer | None = None
        self.connected = threading.Event()
        self.peak_outstanding = 0
        self._pending: deque[tuple[bytes, bytes, int]] = deque()  # key, value, items
        self._in_hand = 0  # taken from the queue by the thread, not yet given to the producer
        self._outstanding = 0
        self._cond = threading.Condition()
        self._closing = False
        self._close_by = float("inf")  # close() still connects and sends until then
        self._thread = threading.Thread(target=self._run, name=f"kafka-{topic}", daemon=True)
        self._thread.start()

    # -- the caller's side: never waits on the network ---------------------------------------------

    def send(self, key: bytes, value: bytes, items: int = 1) -> bool:
        """Queue one message, or drop it (counted) when the memory bound is reached."""
        size = len(key) + len(value)
        with self._cond:
            full = self._outstanding + size > self.max_outstanding
            if not full:
                self._outstanding += size
                self.peak_outstanding = max(self.peak_outstanding, self._outstanding)
                self._pending.append((key, value, items))
                self._cond.notify_all()
        if full:
            self._dropped(items, "buffer bound reached")
        return not full

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything sent so far was handed over and acknowledged (or failed, counted)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._pending or self._in_hand) and time.monotonic() < deadline:
                self._cond.wait(0.05)
        if self.producer is not None:
            self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))

    # -- the sender thread -------------------------------------------------------------------------

    def _run(self) -> None:
        producer = self._connect()
        while producer is not None:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(0.5)
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._in_hand = len(batch)
            for key, value, items in batch:
                self._send(producer, key, value, items)
            with self._cond:
                self._in_hand = 0
                self._cond.notify_all()

    def _connect(self) -> KafkaProducer | None:
        """Retry until the broker answers (or we are closed); what arrives meanwhile queues or drops."""
        from pipeline.kafka_source import ensure_topics

        warned = False
        while time.monotonic() < self._close_by:
            producer = None
            try:
                ensure_topics(self.kafka, self.topic, timeout_s=2.0)
                producer = KafkaProducer(
                    **(producer_settings(self.kafka, self.client_id) | self.producer_overrides)
                )
                producer.partitions_for(self.topic)  # metadata now, so no send waits for it later
            except Exception as e:  # NoBrokersAvailable, timeouts, auth errors: all mean "not yet"
                if producer is not None:
                    producer.close(timeout=0)
                if not warned:
                    bound = self.max_outstanding >> 20
                    log.warning(
                        "Kafka at %s not reachable for %s (%s): retrying; messages queue up to %d MiB, "
                        "then drop (counted)", self.kafka.bootstrap, self.topic, e, bound,
                    )  # fmt: skip
                    warned = True
                self.health.count("connect_retries", self.stage)
                with self._cond:
                    self._cond.wait(self.retry_s)
                continue
            log.info("publishing to %s at %s", self.topic, self.kafka.bootstrap)
            self.producer = producer
            self.connected.set()
            return producer
        return None

    def _send(self, producer: KafkaProducer, key: bytes, value: bytes, items: int) -> None:
        size = len(key) + len(value)
        try:
            future = producer.send(self.topic, key=key, value=value)
        except KafkaError as e:
            self._failed(size, items, e)
            return
        self.health.count(f"published_{self.unit}", self.stage)
        future.add_callback(lambda _meta: self._delivered(size))
        future.add_errback(lambda e: self._failed(size, items, e))

    def _failed(self, size: int, items: int, error: BaseException) -> None:
        self._release(size)
        self._dropped(items, type(error).__name__)

    def _delivered(self, size: int) -> None:
        self._release(size)
        self.health.count(f"delivered_{self.unit}", self.stage)

    def _release(self, n: int) -> None:
        with self._cond:
            self._outstanding -= n

    def _dropped(self, items: int, reason: str) -> None:
        self.health.count(f"dropped_{self.unit}", self.stage, reason=reason)
        if self.items:
            self.health.count(f"dropped_{self.items}", self.stage, items, reason=reason)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (within `timeout_s`); whatever cannot be delivered is counted as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._close_by = deadline - min(2.0, timeout_s / 4)  # leave time to flush what was sent
            self._cond.notify_all()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        for key, value, items in left:
            self._release(len(key) + len(value))
            self._dropped(items, "closed before sent")
        if self.producer is None:
            return
        try:
            self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as e:
            log.warning("Kafka flush of %s on shutdown failed: %s", self.topic, e)
        # close() fails what is still unacknowledged, which the errbacks count
        self.producer.close(timeout=max(0.1, deadline - time.monotonic()))
