"""`l7scope pipeline` child processes in one consumer group, real broker, real HTTP bytes published.

Steady state: the members split the partitions and each exchange appears exactly once. Crash: one
member is killed with SIGKILL mid-load; afterwards every exchange the client logged is in the
records topic at least once, and repeats carry identical record ids.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.records_sink import decode_record
from probes.health import Health
from probes.publisher import KafkaPublisher
from tests.pipeline.kafka_helpers import assigned, child_env, config_for, read_topic, start_group
from tests.support.http_traffic import Client, HttpTarget, batches, paced
from tests.support.waiting import wait_for

PARTITIONS = 6


@pytest.mark.parametrize("members", [2, 3])
def test_members_split_partitions_each_exchange_once(
    members: int, tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    env = child_env(
        kafka_bootstrap,
        L7SCOPE_KAFKA_FRAGMENTS_TOPIC=topic,
        L7SCOPE_KAFKA_GROUP=f"split-{uuid.uuid4().hex[:6]}",
        L7SCOPE_EXPORT_RECORDS_TOPIC="off",
    )
    outs = [tmp_path / f"member{i}.jsonl" for i in range(members)]
    children = start_group(members, env, lambda i: ["--export", f"jsonl:{outs[i]}"], PARTITIONS)
    try:
        health = Health()
        publisher = KafkaPublisher(config_for(kafka_bootstrap, topic).kafka, health)
        with HttpTarget() as target:
            client = Client(target.port, uuid.uuid4().hex[:6], per_conn=2)
            for _ in range(120):
                for x in client.connection():
                    publisher.publish(list(batches(x)))
        publisher.close()
        assert health.total("delivered_batches") == 2 * len(client.log)

        def lines() -> list[dict[str, object]]:
            return [json.loads(line) for out in outs if out.exists() for line in out.read_text().splitlines()]

        assert wait_for(lambda: len(lines()) >= len(client.log), 60)
        time.sleep(2.0)  # duplicates, if any, would arrive now
        assert all(assigned(c) for c in children)  # no rebalance happened during the run
    finally:
        for c in children:
            c.stop()
    per_member = [[json.loads(line) for line in out.read_text().splitlines()] for out in outs]
    paths = sorted(r["attributes"]["url.path"] for recs in per_member for r in recs)  # type: ignore[index]
    assert paths == sorted(x.path for x in client.log)  # each exchange exactly once
    conns = [{r["conn_id"] for r in recs} for recs in per_member]
    assert all(conns), "a member processed nothing"
    assert sum(len(c) for c in conns) == len(set().union(*conns))  # a connection lives on one member


def test_kill9_member_mid_load_loses_no_exchange(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic, records_topic = kafka_topic(partitions=PARTITIONS), f"records-{uuid.uuid4().hex[:8]}"
    env = child_env(
        kafka_bootstrap,
        L7SCOPE_KAFKA_FRAGMENTS_TOPIC=topic,
        L7SCOPE_KAFKA_RECORDS_TOPIC=records_topic,
        L7SCOPE_KAFKA_GROUP=f"kill-{uuid.uuid4().hex[:6]}",
        L7SCOPE_EXPORT_RECORDS_TOPIC="on",
    )
    children = start_group(3, env, lambda _: [], PARTITIONS)
    victim = children[1]
    health = Health()
    publisher = KafkaPublisher(config_for(kafka_bootstrap, topic).kafka, health)
    target = HttpTarget().start()
    client = Client(target.port, uuid.uuid4().hex[:6], per_conn=3)

    def load() -> None:  # ~40 connections/s, 3 exchanges each, each batch published as soon as made
        for _ in paced(40, 12):
            for x in client.connection():
                publisher.publish([batches(x)[0]])
                publisher.publish([batches(x)[1]])

    loader = threading.Thread(target=load, daemon=True)
    try:
        loader.start()
        time.sleep(5)
        victim.kill()
        loader.join(timeout=60)
        publisher.close()
        assert health.total("dropped_batches") == 0
        assert health.total("delivered_batches") == 2 * len(client.log)
        expected = {x.path for x in client.log}

        def seen() -> dict[str, set[str]]:
            ids: dict[str, set[str]] = defaultdict(set)
            for _, _, _, value in read_topic(kafka_bootstrap, records_topic, idle_s=1.0):
                r = decode_record(value)
                ids[str(r.attributes.get("url.path"))].add(r.record_id)
            return ids

        assert wait_for(lambda: expected <= set(seen()), 90, every_s=3), expected - set(seen())
        survivors = [assigned(c) for c in children if c is not victim]
    finally:
        target.close()
        for c in children:
            c.stop()
    ids = seen()
    assert expected <= set(ids)  # every exchange the client made, at least once
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    copies = sum(1 for _ in read_topic(kafka_bootstrap, records_topic, idle_s=1.0))
    print(f"{len(expected)} exchanges, {copies} records ({copies - len(expected)} re-processed duplicates)")
    assert sorted(p for a in survivors for p in a or ()) == list(range(PARTITIONS))  # they took over
