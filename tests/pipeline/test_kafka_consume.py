"""Kafka -> run_pipeline in-process, real broker: records from real HTTP bytes, garbage skipped, replay."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewPartitions

from l7scope.config import Config
from pipeline.conn_table import ConnTable
from pipeline.run import default_protocols
from probes.codec import encode_batch
from probes.health import Health
from probes.kafka_io import KafkaSource, StartAt
from probes.publisher import KafkaPublisher
from proto import fragments_pb2 as pb
from tests.pipeline.kafka_helpers import config_for, pipeline_thread
from tests.support.http_traffic import Client, Exchange, HttpTarget, batches
from tests.support.waiting import wait_for


def publish(config: Config, exchanges: list[Exchange]) -> Health:
    health = Health()
    publisher = KafkaPublisher(config.kafka, health)
    for x in exchanges:
        publisher.publish(list(batches(x)))
    publisher.close()
    assert health.total("dropped_batches") == 0
    assert health.total("delivered_batches") == 2 * len(exchanges)
    return health


def make_traffic(connections: int, per_conn: int) -> list[Exchange]:
    with HttpTarget() as target:
        client = Client(target.port, uuid.uuid4().hex[:6], per_conn=per_conn)
        for _ in range(connections):
            client.connection()
    return client.log


def test_records_from_published_http_bytes(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="l7scope.run")
    config = config_for(kafka_bootstrap, kafka_topic(partitions=4))
    log = make_traffic(connections=20, per_conn=3)
    publish(config, log)
    with pipeline_thread(config, f"g-{uuid.uuid4().hex[:6]}") as (collect, health):
        assert wait_for(lambda: len(collect.records) >= len(log), 30), collect.paths()
        time.sleep(1.0)
        # Lag is reported per partition read, and reaches 0 once everything is consumed.
        assert wait_for(lambda: bool(collect.lags) and not any(collect.lags.values()), 10), collect.lags
    assert {topic for topic, _ in collect.lags} == {config.kafka.fragments_topic}
    assert sorted(collect.paths()) == sorted(x.path for x in log)
    ids = [r.record_id for r in collect.records]
    assert len(set(ids)) == len(ids)
    assert all(r.record_id.startswith(r.conn.conn_id + "/") for r in collect.records)
    assert health.total("bad_messages") == 0
    # The stop summary counts what the exporters were handed, and names every loss (none here).
    stopped = [r for r in caplog.records if r.getMessage().startswith("pipeline stopped")]
    assert [(r.records, r.losses) for r in stopped] == [(len(collect.records), "none")]  # type: ignore[attr-defined]


def test_garbage_is_counted_logged_and_skipped(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    topic = kafka_topic(partitions=1)
    config = config_for(kafka_bootstrap, topic, partitions=1)
    first, second = make_traffic(connections=2, per_conn=1)
    good = encode_batch(batches(first)[0])
    wrong_version = pb.FragmentBatch()
    wrong_version.ParseFromString(good)
    wrong_version.schema_version = 7
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for b in batches(first):
        producer.send(topic, key=b"k", value=encode_batch(b))
    for value in (b"\xff\xfe not protobuf at all", wrong_version.SerializeToString(), good[: len(good) // 2]):
        producer.send(topic, key=b"k", value=value)
    for b in batches(second):
        producer.send(topic, key=b"k", value=encode_batch(b))
    producer.flush()
    producer.close()
    caplog.set_level(logging.WARNING, "l7scope.source")
    with pipeline_thread(config, "g-garbage") as (c, health):
        assert wait_for(lambda: len(c.records) >= 2, 30), c.paths()
    assert sorted(c.paths()) == sorted([first.path, second.path])  # the consumer kept going
    assert health.total("bad_messages") == 3
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    where = [s.split(":")[0] for s in skipped]
    assert where == [f"skipped {topic} partition 0 offset {o}" for o in (2, 3, 4)]
    assert "schema_version 7" in skipped[1]


def test_new_group_from_time_reparses_only_later_history(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    config = config_for(kafka_bootstrap, kafka_topic(partitions=3))
    before = make_traffic(connections=6, per_conn=1)
    publish(config, before)
    time.sleep(1.5)
    cut = time.time()
    time.sleep(0.5)
    after = make_traffic(connections=6, per_conn=1)
    publish(config, after)
    with pipeline_thread(config, f"from-time-{uuid.uuid4().hex[:6]}", start_at=str(cut)) as (c, _):
        assert wait_for(lambda: len(c.records) >= len(after), 30)
        time.sleep(1.0)
    assert sorted(c.paths()) == sorted(x.path for x in after)
    with pipeline_thread(config, f"from-start-{uuid.uuid4().hex[:6]}", from_beginning=True) as (c2, _):
        assert wait_for(lambda: len(c2.records) >= len(before) + len(after), 30)
    assert sorted(c2.paths()) == sorted(x.path for x in before + after)


def test_start_at_parses_iso_and_epoch() -> None:
    assert StartAt.parse_time("1700000000").time_ms == 1_700_000_000_000
    assert StartAt.parse_time("2023-11-14T22:13:20Z").time_ms == 1_700_000_000_000
    assert StartAt.parse_time("2023-11-14T22:13:20").time_ms == 1_700_000_000_000  # naive is UTC
    with pytest.raises(ValueError, match="neither"):
        StartAt.parse_time("yesterday")


def test_low_water_holds_back_unfinished_connections() -> None:
    table = ConnTable(default_protocols(), Health())
    x = make_traffic(connections=1, per_conn=2)
    req0, resp0 = batches(x[0])
    req1, _ = batches(x[1])
    table.apply(req0, partition=5, offset=10)
    assert table.low_water(5) == 10  # a request waits for its response: re-read from offset 10
    assert len(table.apply(resp0, partition=5, offset=11)) == 1
    assert table.low_water(5) is None
    table.apply(req1, partition=5, offset=12)
    assert table.low_water(5) == 12 and table.low_water(4) is None
    assert table.flush_partitions({4}) == [] and len(table) == 1
    table.flush_partitions({5})
    assert len(table) == 0 and table.low_water(5) is None


def test_a_rebalance_cut_short_by_the_poll_timeout_still_completes(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Partitions added under a lone member: it rejoins to take them. A poll whose timeout ends while
    that rejoin is in flight must not leave it unfinished (kafka-python 3.0.12 did: the member then
    owned nothing, sent no heartbeats and was dropped from the group)."""
    topic = kafka_topic(partitions=2)
    config = config_for(kafka_bootstrap, topic)
    source = KafkaSource(config.kafka, Health(), group=f"g-{uuid.uuid4().hex[:6]}", metadata_max_age_ms=300)
    try:
        assert wait_for(lambda: source.poll(200) is not None and source.assignment == {0, 1}, 30)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.create_partitions({topic: NewPartitions(total_count=4)})
        admin.close()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # every rebalance step is interrupted by a zero timeout
            source.poll(0)
            time.sleep(0.02)
        assert wait_for(lambda: source.poll(200) is not None and source.assignment == {0, 1, 2, 3}, 30)
    finally:
        source.close()
