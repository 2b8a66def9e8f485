"""The test broker itself: it starts, serves produce/consume, survives a pause and a restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from tests.support.kafka_broker import (
    Broker,
    consumer_settings,
    create_topic,
    ensure_jars,
    kafka_reachable,
    server_properties,
)


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        for v in values:
            producer.send(topic, v, partition=partition)
        producer.flush(timeout=20)
    finally:
        producer.close(timeout=5)


def _consume_all(bootstrap: str, topic: str, expected: int, group: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        consumer_timeout_ms=3000, **consumer_settings(),
    )  # fmt: skip
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(msg.value for msg in consumer)
    finally:
        consumer.close()
    return got


def test_server_properties_listen_on_loopback_only(tmp_path) -> None:
    props = server_properties(1, 19092, 19093, tmp_path)
    lines = dict(line.split("=", 1) for line in props.splitlines())
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert lines["process.roles"] == "broker,controller"
    assert lines["offsets.topic.replication.factor"] == "1"
    assert lines["log.dirs"] == str(tmp_path)


def test_ensure_jars_is_cached(kafka_broker: Broker) -> None:
    t0 = time.monotonic()
    libs = ensure_jars()
    assert time.monotonic() - t0 < 1.0  # the marker short-circuits Maven
    assert libs == kafka_broker.libs
    names = {p.name for p in libs.glob("*.jar")}
    assert any(n.startswith("kafka_2.13-4.") for n in names)
    assert any(n.startswith("log4j-slf4j") for n in names)


def test_topic_with_partitions_and_round_trip(kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(partitions=3)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(described[0]["partitions"]) == 3
    values = [f"m{i}".encode() for i in range(20)]
    _produce(kafka_bootstrap, topic, values)
    assert sorted(_consume_all(kafka_bootstrap, topic, len(values), "g-roundtrip")) == sorted(values)


def test_pause_makes_broker_unreachable_until_resumed(kafka_broker: Broker) -> None:
    kafka_broker.pause()
    try:
        assert not kafka_reachable(kafka_broker.bootstrap, timeout_s=2.0)
    finally:
        kafka_broker.resume()
    kafka_broker.wait_ready(30)
    assert kafka_reachable(kafka_broker.bootstrap)


@pytest.mark.timeout(120)
def test_restart_keeps_topics_and_messages(kafka_broker: Broker) -> None:
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker.bootstrap, topic, 2)
    _produce(kafka_broker.bootstrap, topic, [b"a", b"b", b"c"], partition=1)
    old_pid = kafka_broker.pid
    kafka_broker.restart()
    assert kafka_broker.pid != old_pid
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, consumer_timeout_ms=5000)
    try:
        tp = TopicPartition(topic, 1)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = [m.value for m in consumer]
    finally:
        consumer.close()
    assert got == [b"a", b"b", b"c"]
