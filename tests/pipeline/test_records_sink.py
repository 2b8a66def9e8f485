"""The records topic: protobuf round trip, and a real broker receiving records keyed by service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from l7scope.config import KafkaConfig
from pipeline.records_sink import BadRecord, RecordsSink, decode_record, encode_record
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role


def record(i: int, process: str, error: str | None = None) -> L7Record:
    conn = ConnInfo(
        f"node/{100 + i}/7/1", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 50000 + i),
        Role.SERVER, pid=100 + i, process=process, node="node", container_id="abc",
    )  # fmt: skip
    return L7Record(
        protocol="http", role=Role.SERVER, name="GET /users/{id}", start_ns=1_000 + i, end_ns=5_000 + i,
        conn=conn, metric="http.server.request.duration", error_type=error,
        attributes={"http.request.method": "GET", "http.response.status_code": 500 if error else 200,
                    "l7scope.ratio": 0.5, "l7scope.truncated": False},
        truncated=True, record_id=f"node/{100 + i}/7/1:{i}", trace_id="ab" * 16, parent_span_id="cd" * 8,
    )  # fmt: skip


def test_round_trip_keeps_every_field_but_metric_attributes() -> None:
    r = record(1, "python3", error="500")
    back = decode_record(encode_record(r))
    assert back == r  # metric_attributes is () on both sides: not part of the wire schema
    assert type(back.attributes["http.response.status_code"]) is int
    assert type(back.attributes["l7scope.truncated"]) is bool
    assert back.error_type == "500" and decode_record(encode_record(record(2, "x"))).error_type is None


def test_garbage_is_a_bad_record() -> None:
    with pytest.raises(BadRecord):
        decode_record(b"\xff\xff\xff\xff")
    with pytest.raises(BadRecord, match="schema_version 0"):
        decode_record(b"")


def _consume(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, L7Record]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=1000)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got: list[tuple[bytes, L7Record]] = []
    deadline = time.monotonic() + 20
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [(m.key, decode_record(m.value)) for m in consumer]
    finally:
        consumer.close()
    return got


def test_sink_publishes_to_real_broker_keyed_by_service(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    health = Health()
    sink = RecordsSink(KafkaConfig(bootstrap=kafka_bootstrap, records_topic=topic), health)
    sent = [record(i, "checkout" if i % 2 else "mariadbd") for i in range(10)]
    sink.export(sent)
    sink.close()
    got = _consume(kafka_bootstrap, topic, len(sent))
    assert sorted((r.record_id for _, r in got)) == sorted(r.record_id for r in sent)
    assert {r.record_id: r for _, r in got} == {r.record_id: r for r in sent}
    assert all(key == r.conn.process.encode() for key, r in got)
    assert health.total("published_records") == 10 and health.total("dropped_records") == 0


def test_sink_drops_past_its_bound_and_counts(kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(partitions=1)
    health = Health()
    sink = RecordsSink(KafkaConfig(bootstrap=kafka_bootstrap, records_topic=topic), health)
    sink.sender.max_outstanding = 600  # room for about two records before acks come back
    sink.export([record(i, "svc") for i in range(50)])
    sink.close()
    published, dropped = health.total("published_records"), health.total("dropped_records")
    assert published + dropped == 50 and dropped > 0 and published >= 1
    assert sink.sender.outstanding_bytes == 0  # every in-flight message was released
    assert len(_consume(kafka_bootstrap, topic, published)) == published


def test_example_consumer_prints_records(kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(partitions=2)
    sink = RecordsSink(KafkaConfig(bootstrap=kafka_bootstrap, records_topic=topic), Health())
    sink.export([record(1, "checkout"), record(2, "mariadbd", error="1064"), record(1, "checkout")])
    sink.close()
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "records_consumer.py"), "--bootstrap", kafka_bootstrap,
         "--topic", topic, "--timeout-s", "3"],
        capture_output=True, text=True, timeout=60, env=os.environ | {"PYTHONPATH": str(root)},
    )  # fmt: skip
    lines = sorted(out.stdout.splitlines())
    assert len(lines) == 2, out  # the duplicate record id is printed once
    assert lines[0].split()[:4] == ["checkout", "server", "http", "GET"]
    assert lines[1].split()[:2] == ["mariadbd", "server"] and " 1064 " in lines[1]
    assert "127.0.0.1:50002 -> 127.0.0.1:8080" in lines[1]
