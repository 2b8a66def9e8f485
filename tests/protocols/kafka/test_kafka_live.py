"""Real Kafka traffic, live: a 4.1 broker, kafka-python and the Java client, captured by `l7scope run`
(real eBPF) tracing only the broker's port, so both ends of each connection are traced and l7scope's
own export traffic is not involved. Every Produce and Fetch appears once per traced side, with its
topic and partition, and the record counts read from batch headers add up to what was sent."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.kafka_broker import JAVA, Broker, consumer_settings, create_topic
from tests.test_end_to_end import base_env, l7scope

pytestmark = pytest.mark.kernel
JAVA_PRODUCER = Path(__file__).resolve().parent / "JavaProducer.java"


@contextmanager
def recording(tmp_path: Path, port: int) -> Iterator[Callable[[Callable[[list[dict]], bool]], list[dict]]]:
    """`l7scope run --export jsonl` tracing `port`; yields `records(done)`: the Kafka records so far,
    once `done(records)` holds (or after 60 s), and a second later (duplicates would have arrived)."""
    out = tmp_path / "records.jsonl"
    env = base_env(L7SCOPE_CAPTURE_ONLY_PORTS=str(port))

    def read() -> list[dict]:
        lines = out.read_text().splitlines() if out.exists() else []
        return [r for r in map(json.loads, lines) if r["protocol"] == "kafka"]

    with l7scope("run", "--no-table", "--export", f"jsonl:{out}", env=env):

        def records(done: Callable[[list[dict]], bool]) -> list[dict]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not done(read()):
                time.sleep(0.5)
            time.sleep(1.5)
            if out.exists():
                (Path("/tmp") / f"kafka-live-{out.parent.name}.jsonl").write_text(out.read_text())
            return read()

        yield records


def of(records: list[dict], role: str, operation: str, topic: str) -> list[dict]:
    return [
        r
        for r in records
        if r["role"] == role
        and r["attributes"]["messaging.operation.name"] == operation
        and r["attributes"].get("messaging.destination.name") == topic
    ]


def produced(records: list[dict], role: str, topic: str) -> int:
    return sum(r["attributes"]["messaging.batch.message_count"] for r in of(records, role, "Produce", topic))


def java_produced(records: list[dict], role: str) -> int:
    return sum(
        r["attributes"].get("messaging.batch.message_count", 0)
        for r in records
        if r["role"] == role and r["attributes"].get("messaging.client.id") == "java-perf"
    )


def test_kafka_python_produce_and_consume(kafka_broker: Broker, tmp_path: Path) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic, n = f"live-{uuid.uuid4().hex[:8]}", 300
    create_topic(kafka_broker.bootstrap, topic, partitions=2)
    with recording(tmp_path, kafka_broker.port) as records:
        producer = KafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap, client_id="py-producer", linger_ms=5
        )
        for i in range(n):
            producer.send(topic, value=b"value-%d" % i, partition=i % 2)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_broker.bootstrap,
            group_id=f"g-{topic}",
            client_id="py-consumer",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **consumer_settings(),
        )
        got, deadline = 0, time.monotonic() + 30
        while got < n and time.monotonic() < deadline:
            got += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
        consumer.commit()
        consumer.close()
        assert got == n
        recs = records(lambda rs: produced(rs, "server", topic) >= n and produced(rs, "client", topic) >= n)
    for role in ("client", "server"):
        assert produced(recs, role, topic) == n, role
        produces = of(recs, role, "Produce", topic)
        # One partition's batch: its id; kafka-python often sends both partitions' batches in one request.
        assert {r["attributes"].get("messaging.destination.partition.id", "") for r in produces} <= {
            "0",
            "1",
            "",
        }
        assert all(r["name"] == f"send {topic}" and r["error_type"] is None for r in produces)
        assert all(r["attributes"]["messaging.client.id"] == "py-producer" for r in produces)
        fetches = of(recs, role, "Fetch", topic)
        assert fetches and all(r["name"] == f"poll {topic}" for r in fetches), role
        if role == "client":
            assert sum(r["attributes"].get("messaging.batch.message_count", 0) for r in fetches) == n
        else:  # the broker sends record data with sendfile: sizes only, so no count is made up
            with_data = [r for r in fetches if r["truncated"]]
            assert with_data and all(
                "messaging.batch.message_count" not in r["attributes"] for r in with_data
            )
        groups = {r["attributes"].get("messaging.consumer.group.name") for r in recs if r["role"] == role}
        assert f"g-{topic}" in groups
    # One record per Produce per side: as many client-side as server-side records.
    assert len(of(recs, "client", "Produce", topic)) == len(of(recs, "server", "Produce", topic))


def test_java_client_producer(kafka_broker: Broker, tmp_path: Path) -> None:
    topic, n = f"java-{uuid.uuid4().hex[:8]}", 5000
    create_topic(kafka_broker.bootstrap, topic, partitions=1)
    with recording(tmp_path, kafka_broker.port) as records:
        done = subprocess.run(
            [
                JAVA,
                "-cp",
                f"{kafka_broker.libs}/*",
                str(JAVA_PRODUCER),
                kafka_broker.bootstrap,
                topic,
                str(n),
                "100",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        recs = records(lambda rs: java_produced(rs, "server") >= n and java_produced(rs, "client") >= n)
    for role in ("client", "server"):
        produces = [
            r for r in recs if r["role"] == role and r["attributes"].get("messaging.client.id") == "java-perf"
        ]
        produces = [r for r in produces if r["attributes"]["messaging.operation.name"] == "Produce"]
        # Produce v13 names topics by id; the name comes from a Metadata response on the same connection,
        # and the Java client asks for metadata on another one: then the id is what the record carries.
        assert produces and all(
            r["attributes"].get("messaging.destination.name") == topic
            or "l7scope.kafka.topic_id" in r["attributes"]
            for r in produces
        ), role
        assert sum(r["attributes"]["messaging.batch.message_count"] for r in produces) == n, role
        assert all(r["attributes"]["messaging.destination.partition.id"] == "0" for r in produces)
        assert all(r["error_type"] is None and not r["truncated"] for r in produces)
