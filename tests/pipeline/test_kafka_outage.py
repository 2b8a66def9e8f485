"""The broker goes away under load and comes back; the agent also starts before the broker does.

The publisher must never block the capture drain, stay under its byte bound, count every batch it
could not deliver, and resume by itself; the pipeline must resume producing records.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator

from probes.codec import decode_batch
from probes.fragment import Batch
from probes.health import Health
from probes.publisher import KafkaPublisher
from tests.pipeline.kafka_helpers import config_for, pipeline_thread, read_topic
from tests.support.http_traffic import Client, Exchange, HttpTarget, batches, paced
from tests.support.kafka_broker import Broker, create_topic
from tests.support.waiting import wait_for

BOUND = 512 << 10


def real_exchanges(n: int) -> list[Exchange]:
    with HttpTarget() as target:
        client = Client(target.port, uuid.uuid4().hex[:6])
        for _ in range(n):
            client.connection()
    return client.log


def as_new_connection(x: Exchange, conn_id: str) -> tuple[Batch, Batch]:
    """The same real bytes on a fresh connection id, so every published exchange is distinct."""
    conn = dataclasses.replace(x.conn, conn_id=conn_id)
    out = []
    for b in batches(x):
        fragments = [dataclasses.replace(f, conn_id=conn_id) for f in b.fragments]
        closed = dataclasses.replace(b.closed, info=conn) if b.closed else None
        out.append(Batch(conn, fragments, closed))
    return out[0], out[1]


class Load:
    """Publishes exchanges at a fixed rate from a thread (as the drain loop would), timing publish()."""

    def __init__(self, publisher: KafkaPublisher, pool: list[Exchange], rate: float, run: str) -> None:
        self.publisher, self.pool, self.rate, self.run = publisher, pool, rate, run
        self.stop = threading.Event()
        self.sent: list[tuple[float, str]] = []  # (monotonic time, conn id)
        self.publish_s: list[float] = []
        self.thread = threading.Thread(target=self._go, daemon=True)

    def _ticks(self) -> Iterator[int]:
        for i in paced(self.rate, 3600):
            if self.stop.is_set():
                return
            yield i

    def _go(self) -> None:
        for i in self._ticks():
            conn_id = f"outage/{self.run}/{i}"
            req, resp = as_new_connection(self.pool[i % len(self.pool)], conn_id)
            started = time.perf_counter()
            self.publisher.publish([req, resp])
            self.publish_s.append(time.perf_counter() - started)
            self.sent.append((time.monotonic(), conn_id))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / (1 << 20)


def test_broker_down_30s_under_load(kafka_broker: Broker) -> None:
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker.bootstrap, topic, 3)
    config = config_for(kafka_broker.bootstrap, topic)
    health = Health()
    publisher = KafkaPublisher(config.kafka, health, max_outstanding_bytes=BOUND)
    assert publisher.connected.wait(30)
    load = Load(publisher, real_exchanges(50), rate=200, run=uuid.uuid4().hex[:6])
    rss_before = rss_mib()
    with pipeline_thread(config, f"outage-{uuid.uuid4().hex[:6]}") as (collect, _):
        load.thread.start()
        time.sleep(5)
        kafka_broker.stop()
        down_at = time.monotonic()
        time.sleep(30)
        rss_during = rss_mib()
        kafka_broker.launch()
        up_at = time.monotonic()
        time.sleep(10)
        load.stop.set()
        load.thread.join(timeout=10)
        publisher.close(timeout_s=30)
        on_topic = read_topic(kafka_broker.bootstrap, topic)
        complete = _complete_exchanges(on_topic)
        # Sent after the broker returned and on the topic. Not all of them: while the backlog drains the
        # buffer can still be at its bound, and those batches are dropped (counted below), not parsed.
        resumed = {c for t, c in load.sent if t > up_at + 1} & complete
        assert resumed, "nothing sent after the broker returned reached the topic"
        done = lambda: complete <= {r.conn.conn_id for r in collect.records}  # noqa: E731
        assert wait_for(done, 60), "records did not resume: exchanges on the topic were not parsed"
    attempted = 2 * len(load.sent)
    delivered, dropped = health.total("delivered_batches"), health.total("dropped_batches")
    worst = max(load.publish_s)
    print(
        f"outage {up_at - down_at:.1f}s: {attempted} batches, {delivered} delivered, {dropped} dropped "
        f"{dict((k[2], v) for k, v in health.snapshot().items() if k[0] == 'dropped_batches')}; "
        f"publish() max {worst * 1e3:.2f} ms; peak buffered {publisher.peak_outstanding >> 10} KiB "
        f"(bound {BOUND >> 10}); RSS {rss_before:.0f} -> {rss_during:.0f} MiB"
    )
    assert up_at - down_at >= 30
    assert delivered + dropped == attempted  # every batch accounted for
    assert dropped > 0 and health.total("dropped_fragments") >= dropped  # the bound was hit, counted
    assert publisher.peak_outstanding <= BOUND
    assert worst < 0.05  # the drain never waited on the broker
    assert len({(p, o) for p, o, _, _ in on_topic}) >= delivered  # everything acknowledged is there
    assert {c for t, c in load.sent if t < down_at - 1} <= complete  # before the outage: nothing lost


def _complete_exchanges(messages: list[tuple[int, int, bytes | None, bytes]]) -> set[str]:
    """Connection ids whose request and response batches both reached the topic."""
    halves: dict[str, int] = {}
    for _, _, _, value in messages:
        b = decode_batch(value)
        halves[b.conn.conn_id] = halves.get(b.conn.conn_id, 0) + 1
    return {c for c, n in halves.items() if n >= 2}


def test_agent_starts_before_the_broker(kafka_broker: Broker) -> None:
    topic = f"late-{uuid.uuid4().hex[:8]}"  # does not exist yet: the publisher creates it once connected
    config = config_for(kafka_broker.bootstrap, topic)
    kafka_broker.stop()
    health = Health()
    publisher = KafkaPublisher(config.kafka, health, max_outstanding_bytes=64 << 10)
    load = Load(publisher, real_exchanges(20), rate=100, run=uuid.uuid4().hex[:6])
    try:
        load.thread.start()
        time.sleep(5)
        assert not publisher.connected.is_set()
        assert health.total("connect_retries") >= 2
        assert health.total("dropped_batches") > 0  # past 64 KiB queued, counted
        kafka_broker.launch()
        assert publisher.connected.wait(30)
        time.sleep(3)
    finally:
        load.stop.set()
        load.thread.join(timeout=10)
        publisher.close(timeout_s=30)
        if kafka_broker.proc is None:
            kafka_broker.launch()
    attempted = 2 * len(load.sent)
    delivered, dropped = health.total("delivered_batches"), health.total("dropped_batches")
    assert delivered > 0 and delivered + dropped == attempted
    assert max(load.publish_s) < 0.05
    assert len(read_topic(kafka_broker.bootstrap, topic)) >= delivered
