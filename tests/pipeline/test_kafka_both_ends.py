"""Two `l7scope pipeline` replicas, one consumer group, real broker: traffic traced from both ends.

The agent keys fragment batches by node and the connection's sorted endpoints
(probes/publisher.fragments_key), so a connection's client end and server end traced on one node land
on one partition and meet in one replica, which counts each exchange once in the service graph. Keyed
by conn_id, the ends were split over the replicas and an exchange was counted by both.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipeline.service_graph import GRACE_S
from probes.health import Health
from probes.publisher import KafkaPublisher, fragments_key
from tests.pipeline.kafka_helpers import assigned, child_env, config_for, read_topic, start_group
from tests.support.http_traffic import Client, HttpTarget, both_ends, server_end
from tests.support.kafka_broker import free_port
from tests.support.l7scope_proc import L7scopeProcess
from tests.support.waiting import wait_for

PARTITIONS = 6
REQUESTS = "l7scope_service_graph_requests_total"


def edge_requests(port: int) -> dict[tuple[str, str], float]:
    """One replica's service-graph request counter per (client, server), scraped from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == REQUESTS:
                edge = (s.labels["client"], s.labels["server"])
                counts[edge] = counts.get(edge, 0.0) + s.value
    return counts


def test_both_ends_meet_in_one_partition(kafka_bootstrap: str, kafka_topic: Callable[..., str]) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    health = Health()
    publisher = KafkaPublisher(config_for(kafka_bootstrap, topic, partitions=PARTITIONS).kafka, health)
    with HttpTarget() as target:
        client = Client(target.port, uuid.uuid4().hex[:6])
        for _ in range(12):
            for x in client.connection():
                first, second = both_ends(x)
                publisher.publish(first)
                publisher.publish(second)
    publisher.close()
    assert health.total("delivered_batches") == 4 * len(client.log)
    by_key: dict[bytes | None, set[int]] = {}
    for partition, _, key, _ in read_topic(kafka_bootstrap, topic):
        by_key.setdefault(key, set()).add(partition)
    conns = {x.conn.conn_id: x.conn for x in client.log}
    assert len(by_key) == len(conns)  # one key per connection, both ends under it
    for conn in conns.values():
        assert fragments_key(conn) == fragments_key(server_end(conn))
        assert len(by_key[fragments_key(conn)]) == 1  # 4 messages, one partition
    assert len({p for ps in by_key.values() for p in ps}) > 1  # connections still spread out


def test_two_replicas_count_each_exchange_traced_from_both_ends_once(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    env = child_env(
        kafka_bootstrap,
        L7SCOPE_KAFKA_FRAGMENTS_TOPIC=topic,
        L7SCOPE_KAFKA_GROUP=f"ends-{uuid.uuid4().hex[:6]}",
        L7SCOPE_EXPORT_RECORDS_TOPIC="off",
    )
    ports = [free_port(), free_port()]
    maps = [tmp_path / f"map{i}.json" for i in range(2)]  # each replica's service map, written at exit
    children: list[L7scopeProcess] = start_group(
        2, env, lambda i: ["--export", f"prometheus:127.0.0.1:{ports[i]}"], PARTITIONS,
        env_of=lambda i: {"L7SCOPE_EXPORT_MAP_OUT": str(maps[i])},
    )  # fmt: skip
    try:
        health = Health()
        publisher = KafkaPublisher(config_for(kafka_bootstrap, topic, partitions=PARTITIONS).kafka, health)
        with HttpTarget() as target:
            client = Client(target.port, uuid.uuid4().hex[:6], per_conn=2)
            for _ in range(60):
                for x in client.connection():
                    first, second = both_ends(x)  # as two drains of one agent publish them
                    publisher.publish(first)
                    publisher.publish(second)
        publisher.close()
        exchanges = len(client.log)
        assert health.total("delivered_batches") == 4 * exchanges

        def total() -> float:
            return sum(sum(edge_requests(p).values()) for p in ports)

        assert wait_for(lambda: total() >= exchanges, 60, every_s=0.5), total()
        # An end whose far end is not in its replica waits GRACE_S, then is counted by address: by now
        # a double count would show.
        time.sleep(GRACE_S + 1.5)
        per_replica = [edge_requests(p) for p in ports]
        assert all(assigned(c) for c in children)  # no rebalance happened during the run
    finally:
        for c in children:
            c.stop()
    edges: dict[tuple[str, str], float] = {}
    for counts in per_replica:
        for edge, n in counts.items():
            edges[edge] = edges.get(edge, 0.0) + n
    assert edges == {("loadgen", "httpd"): exchanges}, edges  # each exchange once, named by both ends
    assert all(sum(c.values()) > 0 for c in per_replica), per_replica  # both replicas took part
    # The service map agrees: its edges, summed over the replicas, hold each exchange once.
    map_edges: dict[tuple[str, str], int] = {}
    for path in maps:
        for e in json.loads(path.read_text())["edges"]:
            edge = (e["client"], e["server"])
            map_edges[edge] = map_edges.get(edge, 0) + e["requests"]
    assert map_edges == {("loadgen", "httpd"): exchanges}, map_edges
