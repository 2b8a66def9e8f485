"""Reads fragment batches from Kafka as a member of the pipeline consumer group."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from l7scope.config import KafkaConfig, kafka_client_settings
from pipeline.health import Health
from probes.codec import BadBatch, decode_batch
from probes.fragment import Batch

log = logging.getLogger("l7scope.source")


def ensure_topics(kafka: KafkaConfig, *topics: str) -> None:
    """Create the topics that are missing, with the configured partition count."""
    admin = KafkaAdminClient(**kafka_client_settings(kafka), client_id="l7scope-admin")
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                admin.create_topics([NewTopic(t, kafka.partitions, 1) for t in missing])
    finally:
        admin.close()


class KafkaSource:
    def __init__(
        self,
        kafka: KafkaConfig,
        health: Health,
        group: str | None = None,
        from_beginning: bool = True,
        **consumer_overrides: Any,
    ) -> None:
        self.health = health
        settings: dict[str, Any] = kafka_client_settings(kafka) | {
            "group_id": group or kafka.group,
            "enable_auto_commit": False,  # committed after the records are handed to the exporters
            "auto_offset_reset": "earliest" if from_beginning else "latest",
            "session_timeout_ms": 10000,
            "heartbeat_interval_ms": 1000,
            "max_poll_records": 2000,
            "client_id": "l7scope-pipeline",
        }
        self.consumer = KafkaConsumer(kafka.fragments_topic, **(settings | consumer_overrides))

    def poll(self, timeout_ms: int = 200) -> list[Batch]:
        batches: list[Batch] = []
        for tp, messages in self.consumer.poll(timeout_ms=timeout_ms).items():
            for m in messages:
                try:
                    batches.append(decode_batch(m.value))
                except BadBatch as e:
                    self.health.count("bad_messages", "kafka", reason=str(e).split(":")[0])
                    log.warning("skipped %s partition %d offset %d: %s", tp.topic, tp.partition, m.offset, e)
        return batches

    def commit(self) -> None:
        self.consumer.commit()

    def close(self) -> None:
        self.consumer.close()
