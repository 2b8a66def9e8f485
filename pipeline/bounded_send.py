"""Bounded, counted Kafka sends: memory is capped by bytes handed to the producer and not yet acked.

Past the bound (a slow or absent broker) a message is dropped and counted instead of blocking the
caller; sending resumes by itself as acknowledgements free space. Shared by the records and alerts
sinks (and the shape `probes/publisher.py` uses).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError

OnDrop = Callable[[str], None]  # called with a short reason, once per dropped message


class BoundedSender:
    def __init__(self, producer: Any, max_outstanding_bytes: int) -> None:
        self.producer = producer
        self.max_outstanding = max_outstanding_bytes
        self._outstanding = 0
        self._lock = threading.Lock()

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding

    def send(self, topic: str, key: bytes, value: bytes, on_drop: OnDrop) -> bool:
        """Hand one message to the producer, or drop it (counted through `on_drop`); never blocks long."""
        size = len(value) + len(key)
        with self._lock:
            full = self._outstanding + size > self.max_outstanding
            if not full:
                self._outstanding += size
        if full:
            on_drop("buffer bound reached")
            return False
        try:
            future = self.producer.send(topic, key=key, value=value)
        except KafkaError as e:
            self._release(size)
            on_drop(type(e).__name__)
            return False
        future.add_callback(lambda _meta: self._release(size))
        future.add_errback(lambda e: (self._release(size), on_drop(type(e).__name__)))
        return True

    def _release(self, n: int) -> None:
        with self._lock:
            self._outstanding -= n
