"""`l7scope alerts evaluate`: alert rules over the records topic, where each service is whole.

`l7scope pipeline` replicas each parse only their partitions' connections, so a rule evaluated in a
replica sees part of a service. The records topic is keyed by service (pipeline/records_sink.py):
all of one service's records, from every replica, land on one partition. This consumer group
(`l7scope-alerts` by default) splits those partitions, so each member evaluates whole services, in
record time (pipeline/alerts.py), with the same evaluator `l7scope run` uses in-process.

Offsets are committed only after the records polled were applied to the windows. The windows live
in memory: on a rebalance (every member's partitions are revoked, then assigned) and on a restart
they start empty, and a newly assigned partition is read from the committed offset, but not from
further back than the longest window (plus lateness): older records can count in no window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError

from l7scope.config import Config, KafkaConfig, kafka_client_settings
from pipeline.alerts import build_alerting
from pipeline.records_sink import BadRecord, decode_record
from probes.health import Health
from probes.kafka_io import ensure_topics, finish_interrupted_rejoins
from protocols.base import L7Record

log = logging.getLogger("l7scope.alerts")

DEFAULT_GROUP = "l7scope-alerts"
DEFAULT_LATENESS_S = 10.0  # records of one service come from several pipeline replicas, each a bit behind


class _Listener(ConsumerRebalanceListener):
    """Runs on the consumer's IO loop: only bookkeeping here, nothing that blocks."""

    def __init__(self, source: RecordsSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.source._revoked({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.source._assigned({tp.partition for tp in assigned})


class RecordsSource:
    """A member of the alerts consumer group on `kafka.records_topic`; `poll` returns decoded records."""

    def __init__(
        self,
        kafka: KafkaConfig,
        health: Health,
        group: str = DEFAULT_GROUP,
        history_s: float = 600.0,
        on_revoked: Callable[[], None] = lambda: None,
        wall: Callable[[], float] = time.time,
        **consumer_overrides: Any,
    ) -> None:
        self.topic = kafka.records_topic
        self.health = health
        self.history_s = history_s
        self.on_revoked = on_revoked
        self.wall = wall
        self.assignment: set[int] = set()
        self._to_start: set[int] = set()  # assigned, not yet moved past history no window can use
        self._lock = threading.Lock()
        settings: dict[str, Any] = kafka_client_settings(kafka) | {
            "group_id": group,
            "enable_auto_commit": False,  # committed after the records are in the windows
            "auto_offset_reset": "earliest",  # then moved to `history_s` ago (`_start_history`)
            "session_timeout_ms": 10000,
            "heartbeat_interval_ms": 1000,
            "max_poll_records": 2000,
            "client_id": "l7scope-alerts",
        }
        self.consumer = KafkaConsumer(**(settings | consumer_overrides))
        finish_interrupted_rejoins(self.consumer)
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    def _revoked(self, partitions: set[int]) -> None:
        with self._lock:
            self.assignment -= partitions
            self._to_start -= partitions
        if partitions:
            self.on_revoked()  # another member may own these services now: their state goes
        log.info("revoked %s partitions %s", self.topic, sorted(partitions))

    def _assigned(self, partitions: set[int]) -> None:
        with self._lock:
            self.assignment |= partitions
            self._to_start |= partitions
            mine = sorted(self.assignment)
        log.info("assigned %s partitions %s", self.topic, mine)

    def poll(self, timeout_ms: int = 200) -> list[L7Record]:
        """Records of the partitions this member owns; a message that is no record is counted, skipped."""
        polled = {tp: list(ms) for tp, ms in self.consumer.poll(timeout_ms=timeout_ms).items() if ms}
        with self._lock:
            starting, self._to_start = self._to_start & self.assignment, set()
            owned = set(self.assignment)
        if starting:
            self._start_history(starting, polled)
        out: list[L7Record] = []
        for tp, messages in polled.items():
            if tp.partition not in owned:  # revoked while this poll returned: the new owner reads them
                continue
            for m in messages:
                try:
                    out.append(decode_record(m.value))
                except BadRecord as e:
                    self.health.count("bad_messages", "records", reason=str(e).split(":")[0])
                    log.warning("skipped %s partition %d offset %d: %s", tp.topic, tp.partition, m.offset, e)
        return out

    def _start_history(self, partitions: set[int], polled: dict[TopicPartition, list[Any]]) -> None:
        """Newly assigned partitions start at the committed offset, or at the first message produced
        `history_s` ago (Kafka's message timestamps) if that is later.

        What this poll returned of them is dropped: the seek re-reads whatever is not too old."""
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        since_ms = int((self.wall() - self.history_s) * 1000)
        found = self.consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        ends = self.consumer.end_offsets(tps)
        for tp in tps:
            messages = polled.pop(tp, [])
            position = messages[0].offset if messages else self.consumer.position(tp)
            hit = found.get(tp)
            # No hit also comes back while a new topic's metadata is not ready: a message this poll
            # returned that is recent enough must not be skipped for it.
            fresh = next((m.offset for m in messages if m.timestamp >= since_ms), None)
            starts = [o for o in (hit.offset if hit is not None else None, fresh) if o is not None]
            target = min(starts) if starts else ends[tp]
            self.consumer.seek(tp, max(position, target))
            if target > position:
                log.info("%s partition %d: skipped %d records older than %.0f s", self.topic,
                         tp.partition, target - position, self.history_s)  # fmt: skip

    def commit(self) -> bool:
        """Commit the position after everything `poll` returned (call once it is applied)."""
        try:
            self.consumer.commit()
        except KafkaError as e:  # e.g. mid-rebalance: re-read by the next owner, into empty windows
            self.health.count("commit_failed", "kafka", reason=type(e).__name__)
            log.warning("offset commit failed (%s): retried at the next commit", e)
            return False
        return True

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def run_alert_evaluator(
    config: Config,
    env: Mapping[str, str],
    stop: threading.Event,
    rules_path: str,
    alertmanager_url: str,
    group: str = DEFAULT_GROUP,
    lateness_s: float = DEFAULT_LATENESS_S,
    health: Health | None = None,
    commit_interval_s: float = 1.0,
) -> Health:
    """Records topic -> alert windows (record time) -> Alertmanager, the log and the alerts topic.

    The Health counters (late records, failed notifications, bad messages) are served as metrics
    where `export.prometheus` / OTLP metrics say, as `l7scope pipeline` serves its own."""
    from pipeline.red_metrics import build_metrics_exporter
    from pipeline.run import log_stop

    health = health or Health()
    ensure_topics(config.kafka, config.kafka.records_topic)
    metrics = build_metrics_exporter(config, env, health)
    evaluator = build_alerting(rules_path, alertmanager_url, health, config.kafka, lateness_s)
    history_s = max(r.horizon_s for r in evaluator.ruleset.rules) + evaluator.lateness_s
    source = RecordsSource(config.kafka, health, group, history_s, on_revoked=evaluator.reset)
    rules, topic = len(evaluator.ruleset.rules), config.kafka.records_topic
    log.info("evaluating %d alert rules on %s as group %s", rules, topic, group)
    applied = 0
    next_commit = time.monotonic() + commit_interval_s
    try:
        while not stop.is_set():
            records = source.poll()
            evaluator.export(records)
            applied += len(records)
            if time.monotonic() >= next_commit:
                next_commit = time.monotonic() + commit_interval_s
                source.commit()
    finally:
        try:
            source.commit()
        finally:
            source.close()
            evaluator.close()
            if metrics is not None:
                metrics.close_within(2.0)
            log_stop("alert evaluation stopped", health, applied)
    return health
