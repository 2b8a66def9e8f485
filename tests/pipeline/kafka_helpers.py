"""Shared by the Kafka pipeline tests: configs, an in-process pipeline, child processes, reading topics."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from l7scope.config import Config, KafkaConfig
from pipeline.exporter import Exporter
from pipeline.run import run_pipeline
from probes.health import Health
from protocols.base import L7Record
from tests.support.l7scope_proc import L7scopeProcess
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def config_for(bootstrap: str, fragments: str, records: str = "", partitions: int = 6) -> Config:
    records = records or fragments + "-rec"
    kafka = KafkaConfig(
        bootstrap=bootstrap, fragments_topic=fragments, records_topic=records, partitions=partitions
    )
    config = Config(node="test", kafka=kafka)
    export = dataclasses.replace(config.export, otlp=False, live_table=False, records_topic="off")
    return dataclasses.replace(config, export=export)


class Collect(Exporter):
    """An exporter that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[L7Record] = []
        self.lags: dict[tuple[str, int], int] = {}  # consumer lag as the pipeline reports it
        self._lock = threading.Lock()

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lags[(topic, partition)] = lag

    def export(self, records: list[L7Record]) -> None:
        with self._lock:
            self.records += records

    def close(self) -> None:
        pass

    def paths(self) -> list[str]:
        with self._lock:
            return [str(r.attributes.get("url.path")) for r in self.records]


@contextmanager
def pipeline_thread(config: Config, group: str, **kwargs: object) -> Iterator[tuple[Collect, Health]]:
    collect, health, stop = Collect(), Health(), threading.Event()
    kwargs.setdefault("extra_exporters", [collect])
    thread = threading.Thread(
        target=run_pipeline, args=(config, {}, stop), kwargs={"group": group, "health": health, **kwargs},
        daemon=True,
    )  # fmt: skip
    thread.start()
    try:
        yield collect, health
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "run_pipeline did not stop"


def assigned(child: L7scopeProcess) -> list[int] | None:
    """The partitions of the latest assignment an `l7scope pipeline` child logged, None before the first."""
    last = None
    for m in child.messages():
        if m.startswith("assigned "):
            last = json.loads(m.rsplit("partitions ", 1)[1])
        elif m.startswith("revoked "):
            last = None
    return last


def child_env(bootstrap: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
    return env | {"L7SCOPE_KAFKA_BOOTSTRAP": bootstrap, "L7SCOPE_EXPORT_OTLP": "false"} | extra


def read_topic(bootstrap: str, topic: str, idle_s: float = 2.0) -> list[tuple[int, int, bytes | None, bytes]]:
    """Every message of `topic` as (partition, offset, key, value), read until idle."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=int(idle_s * 1000),
                             enable_auto_commit=False)  # fmt: skip
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return [(m.partition, m.offset, m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def start_group(
    n: int,
    env: dict[str, str],
    extra: Callable[[int], list[str]],
    partitions: int,
    env_of: Callable[[int], dict[str, str]] = lambda _: {},
) -> list[L7scopeProcess]:
    """`n` `l7scope pipeline` children in one group, returned once they together own all `partitions`.

    Child `i` gets the arguments `extra(i)` and the environment `env | env_of(i)`."""
    # All at once, right after the topic was created: the first generation's leader may assign before
    # it has the topic's partitions ("No partition metadata for topic") and must then rejoin to take
    # them, the case that used to leave a member hung (probes/kafka_io.finish_interrupted_rejoins).
    children = [L7scopeProcess("pipeline", *extra(i), env=env | env_of(i), ready=None) for i in range(n)]

    def settled() -> bool:  # every member owns some partitions, together all, none twice
        got = [assigned(c) for c in children]
        if any(not a for a in got):
            return False
        flat = [p for a in got for p in a or ()]
        return sorted(flat) == list(range(partitions))

    if not wait_for(settled, 60, every_s=0.5):
        for c in children:
            c.stop()
        logs = "\n".join("".join(c.lines[-15:]) for c in children)
        pytest.fail(f"group did not settle: {[assigned(c) for c in children]}\n{logs}")
    return children
