"""Kafka I/O in one place: topics, the bounded sender every topic we write uses, and the fragments source.

Sending (`KafkaSender`: the agent's fragments, the records and alerts topics) never blocks the caller.
`send()` only appends to an in-process queue under a lock. A background thread connects (retrying
while the broker is unreachable, so a process starts without it), creates the topic when missing,
and hands messages to kafka-python's producer (batched, compressed, acks=all, idempotent). Memory is
bounded by the bytes queued here plus those inside the producer not yet acknowledged: past the bound
(a slow or absent broker) messages are dropped and counted, and sending resumes by itself as
acknowledgements free space. Counters (label = `stage`): published_<unit>, delivered_<unit>,
dropped_<unit> (with a reason), dropped_<items> (the items a dropped message carried, e.g.
fragments), connect_retries.

Consuming (`KafkaSource`) reads fragment batches as a member of the pipeline consumer group.
Connections stay on one partition (the agent keys by node and sorted endpoints:
probes/publisher.fragments_key), so the consumer that owns a partition owns those connections' state,
both ends' when both are traced on one node. The caller commits explicitly with the offsets it no
longer needs (`commit`); on revocation `on_revoked` runs inside `poll()` so the caller can flush and
commit before another member takes the partitions over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from l7scope.config import KafkaConfig, kafka_client_settings
from probes.codec import BadBatch, decode_batch
from probes.fragment import Batch
from probes.health import Health

log = logging.getLogger("l7scope.source")
send_log = logging.getLogger("l7scope.kafka")


def ensure_topics(kafka: KafkaConfig, *topics: str, timeout_s: float = 30.0) -> None:
    """Create the topics that are missing, with the configured partition count."""
    ms = int(timeout_s * 1000)
    settings = kafka_client_settings(kafka) | {"request_timeout_ms": ms, "bootstrap_timeout_ms": ms}
    admin = KafkaAdminClient(**settings, client_id="l7scope-admin")
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                admin.create_topics([NewTopic(t, kafka.partitions, 1) for t in missing], timeout_ms=ms)
    finally:
        admin.close()


# -- sending ---------------------------------------------------------------------------------------


def producer_settings(kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
    """Batched, compressed, acks=all + idempotent; metadata waits bounded (they happen off the caller)."""
    return kafka_client_settings(kafka) | {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if kafka.compression == "none" else kafka.compression,
        "linger_ms": 20,
        "batch_size": 256 << 10,
        "max_request_size": 8 << 20,
        "max_block_ms": 2000,  # only the sender thread waits on metadata, never the caller
        "bootstrap_timeout_ms": 2000,  # one connect attempt; the thread retries on its own schedule
        "reconnect_backoff_max_ms": 2000,  # find a returning broker within ~2 s
        "delivery_timeout_ms": 120_000,  # a message not acknowledged by then fails and is counted
        "client_id": client_id,
    }


class KafkaSender:
    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        health: Health,
        *,
        unit: str,  # what one message is, for the counters: "batches", "records", "alerts"
        items: str = "",  # what a message carries, counted when dropped: "fragments"
        client_id: str = "l7scope",
        stage: str = "kafka",
        retry_s: float = 1.0,
        max_outstanding_bytes: int | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.kafka, self.topic, self.health = kafka, topic, health
        self.unit, self.items, self.client_id, self.stage = unit, items, client_id, stage
        self.retry_s = retry_s
        self.max_outstanding = max_outstanding_bytes or kafka.max_buffer_mib << 20
        self.producer_overrides = producer_overrides
        self.producer: KafkaProducer | None = None
        self.connected = threading.Event()
        self.peak_outstanding = 0
        self._pending: deque[tuple[bytes, bytes, int]] = deque()  # key, value, items
        self._in_hand = 0  # taken from the queue by the thread, not yet given to the producer
        self._outstanding = 0
        self._cond = threading.Condition()
        self._closing = False
        self._close_by = float("inf")  # close() still connects and sends until then
        self._thread = threading.Thread(target=self._run, name=f"kafka-{topic}", daemon=True)
        self._thread.start()

    # -- the caller's side: never waits on the network ---------------------------------------------

    def send(self, key: bytes, value: bytes, items: int = 1) -> bool:
        """Queue one message, or drop it (counted) when the memory bound is reached."""
        size = len(key) + len(value)
        with self._cond:
            full = self._outstanding + size > self.max_outstanding
            if not full:
                self._outstanding += size
                self.peak_outstanding = max(self.peak_outstanding, self._outstanding)
                self._pending.append((key, value, items))
                self._cond.notify_all()
        if full:
            self._dropped(items, "buffer bound reached")
        return not full

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything sent so far was handed over and acknowledged (or failed, counted)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._pending or self._in_hand) and time.monotonic() < deadline:
                self._cond.wait(0.05)
        if self.producer is not None:
            self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))

    # -- the sender thread -------------------------------------------------------------------------

    def _run(self) -> None:
        producer = self._connect()
        while producer is not None:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(0.5)
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._in_hand = len(batch)
            for key, value, items in batch:
                self._send(producer, key, value, items)
            with self._cond:
                self._in_hand = 0
                self._cond.notify_all()

    def _connect(self) -> KafkaProducer | None:
        """Retry until the broker answers (or we are closed); what arrives meanwhile queues or drops."""
        warned = False
        while time.monotonic() < self._close_by:
            producer = None
            try:
                ensure_topics(self.kafka, self.topic, timeout_s=2.0)
                producer = KafkaProducer(
                    **(producer_settings(self.kafka, self.client_id) | self.producer_overrides)
                )
                producer.partitions_for(self.topic)  # metadata now, so no send waits for it later
            except Exception as e:  # NoBrokersAvailable, timeouts, auth errors: all mean "not yet"
                if producer is not None:
                    producer.close(timeout=0)
                if not warned:
                    bound = self.max_outstanding >> 20
                    send_log.warning(
                        "Kafka at %s not reachable for %s (%s): retrying; messages queue up to %d MiB, "
                        "then drop (counted)", self.kafka.bootstrap, self.topic, e, bound,
                    )  # fmt: skip
                    warned = True
                self.health.count("connect_retries", self.stage)
                with self._cond:
                    self._cond.wait(self.retry_s)
                continue
            send_log.info("publishing to %s at %s", self.topic, self.kafka.bootstrap)
            self.producer = producer
            self.connected.set()
            return producer
        return None

    def _send(self, producer: KafkaProducer, key: bytes, value: bytes, items: int) -> None:
        size = len(key) + len(value)
        try:
            future = producer.send(self.topic, key=key, value=value)
        except KafkaError as e:
            self._failed(size, items, e)
            return
        self.health.count(f"published_{self.unit}", self.stage)
        future.add_callback(lambda _meta: self._delivered(size))
        future.add_errback(lambda e: self._failed(size, items, e))

    def _failed(self, size: int, items: int, error: BaseException) -> None:
        self._release(size)
        self._dropped(items, type(error).__name__)

    def _delivered(self, size: int) -> None:
        self._release(size)
        self.health.count(f"delivered_{self.unit}", self.stage)

    def _release(self, n: int) -> None:
        with self._cond:
            self._outstanding -= n

    def _dropped(self, items: int, reason: str) -> None:
        self.health.count(f"dropped_{self.unit}", self.stage, reason=reason)
        if self.items:
            self.health.count(f"dropped_{self.items}", self.stage, items, reason=reason)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (within `timeout_s`); whatever cannot be delivered is counted as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._close_by = deadline - min(2.0, timeout_s / 4)  # leave time to flush what was sent
            self._cond.notify_all()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        for key, value, items in left:
            self._release(len(key) + len(value))
            self._dropped(items, "closed before sent")
        if self.producer is None:
            return
        try:
            self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as e:
            send_log.warning("Kafka flush of %s on shutdown failed: %s", self.topic, e)
        # close() fails what is still unacknowledged, which the errbacks count
        self.producer.close(timeout=max(0.1, deadline - time.monotonic()))


# -- consuming -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where a group with no committed offset for a partition starts: earliest, latest, or a time."""

    where: str = "earliest"  # earliest | latest | time
    time_ms: int = 0

    @staticmethod
    def parse_time(text: str) -> StartAt:
        """ISO-8601 (a naive time is UTC) or epoch seconds."""
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{text!r} is neither ISO-8601 nor epoch seconds") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
        return StartAt("time", int(seconds * 1000))


class Message(NamedTuple):  # one per Kafka message: a tuple is built ~3x faster than a frozen dataclass
    partition: int
    offset: int
    batch: Batch


OnRevoked = Callable[[set[int]], Mapping[int, int | None]]  # flush; returns offsets still needed


class _Listener(AsyncConsumerRebalanceListener):
    """Async: kafka-python 3 runs listeners on its IO loop, where a blocking commit is refused."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self.source._revoked({tp.partition for tp in revoked})
        if offsets:  # committed while we are still the owner, before the group moves on
            await self.source.consumer._coordinator._commit_offsets_sync_async(offsets)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.source._assigned({tp.partition for tp in assigned})

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # no longer ours: drop the state without committing; the new owner re-reads what was not committed
        self.source._revoked({tp.partition for tp in lost}, commit=False)


def seed_group_offsets(kafka: KafkaConfig, group: str, time_ms: int) -> bool:
    """A group with no offsets yet starts at `time_ms`: commit the offsets found there (end if none)."""
    settings = kafka_client_settings(kafka) | {"group_id": group, "enable_auto_commit": False}
    consumer = KafkaConsumer(**settings, client_id="l7scope-seed")
    try:
        topic = kafka.fragments_topic
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts or any(consumer.committed(tp) is not None for tp in parts):
            return False
        found, ends = consumer.offsets_for_times(dict.fromkeys(parts, time_ms)), consumer.end_offsets(parts)
        offsets = {}
        for tp in parts:
            hit = found.get(tp)
            offsets[tp] = OffsetAndMetadata(hit.offset if hit is not None else ends[tp], "", -1)
        consumer.assign(parts)
        consumer.commit(offsets)
        where = {tp.partition: o.offset for tp, o in offsets.items()}
        log.info("group %s starts at %d ms: %s", group, time_ms, where)
        return True
    finally:
        consumer.close(autocommit=False)


def finish_interrupted_rejoins(consumer: KafkaConsumer) -> None:
    """Work around a kafka-python 3.0.12 hang: a member can be left half-way through a rebalance.

    When a leader rejoins because the topic's metadata changed (partitions added, or the partitions
    first seen after the group's first assignment) and `poll()`'s timeout ends before the join
    completes, the join goes on in the background and the leader's own assignment clears the reason
    to rejoin. No later `poll()` then finishes the join: the member owns nothing, sends no heartbeat
    and is dropped from the group. Asking to rejoin for as long as a started rebalance has not
    completed (`rejoining`) lets the next `poll()` finish it.
    """
    coordinator = consumer._coordinator
    need_rejoin = coordinator.need_rejoin
    coordinator.need_rejoin = lambda: need_rejoin() or coordinator.rejoining


class KafkaSource:
    def __init__(
        self,
        kafka: KafkaConfig,
        health: Health,
        group: str | None = None,
        start: StartAt = StartAt(),
        on_revoked: OnRevoked | None = None,
        **consumer_overrides: Any,
    ) -> None:
        self.topic = kafka.fragments_topic
        self.health = health
        self.start = start
        self.on_revoked = on_revoked
        self.assignment: set[int] = set()
        settings: dict[str, Any] = kafka_client_settings(kafka) | {
            "group_id": group or kafka.group,
            "enable_auto_commit": False,  # committed after the records are handed to the exporters
            "auto_offset_reset": "latest" if start.where == "latest" else "earliest",
            "session_timeout_ms": 10000,
            "heartbeat_interval_ms": 1000,
            "max_poll_records": 2000,
            "client_id": "l7scope-pipeline",
        }
        if start.where == "time":
            seed_group_offsets(kafka, settings["group_id"], start.time_ms)
        self._next: dict[int, int] = {}  # partition -> offset after the last message returned
        self.consumer = KafkaConsumer(**(settings | consumer_overrides))
        finish_interrupted_rejoins(self.consumer)
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    def poll(self, timeout_ms: int = 200) -> list[Message]:
        """Decoded batches with where they came from; garbage is counted, logged and skipped."""
        out: list[Message] = []
        append = out.append
        for tp, messages in self.consumer.poll(timeout_ms=timeout_ms).items():
            if messages:
                self._next[tp.partition] = messages[-1].offset + 1
            partition = tp.partition
            for m in messages:
                try:
                    append(Message(partition, m.offset, decode_batch(m.value)))
                except BadBatch as e:
                    self.health.count("bad_messages", "kafka", reason=str(e).split(":")[0])
                    log.warning("skipped %s partition %d offset %d: %s", tp.topic, tp.partition, m.offset, e)
        return out

    def commit(self, needed: Mapping[int, int | None]) -> bool:
        """Commit each owned partition's position, held back to the earliest offset still `needed` there.

        A failed commit (broker away, group rebalancing) is counted and retried at the next one: the
        data stays uncommitted, so it is re-read rather than skipped.
        """
        try:
            self.consumer.commit(self._offsets(needed, self.assignment))
        except KafkaError as e:
            self.health.count("commit_failed", "kafka", reason=type(e).__name__)
            log.warning("offset commit failed (%s): retried at the next commit", e)
            return False
        return True

    def _offsets(self, needed: Mapping[int, int | None], partitions: set[int]) -> dict[TopicPartition, Any]:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for p in partitions:
            position = self._next.get(p)
            if position is None:  # nothing read here since the assignment: nothing to commit
                continue
            low = needed.get(p)
            offsets[TopicPartition(self.topic, p)] = OffsetAndMetadata(
                position if low is None else min(low, position), "", -1
            )
        return offsets

    def _revoked(self, partitions: set[int], commit: bool = True) -> dict[TopicPartition, Any]:
        mine = partitions & self.assignment
        offsets: dict[TopicPartition, Any] = {}
        if mine and self.on_revoked is not None:
            try:
                needed = self.on_revoked(mine)
                offsets = self._offsets(needed, mine) if commit else {}
            except Exception:  # the group must still rebalance; the next owner re-reads uncommitted data
                log.exception("flush on revocation of partitions %s failed", sorted(mine))
        self.assignment -= partitions
        for p in partitions:
            self._next.pop(p, None)
        log.info("revoked %s partitions %s", self.topic, sorted(partitions))
        return offsets

    def lags(self) -> dict[int, int]:
        """Messages between this consumer's position and the log end, per owned partition it has read."""
        lags: dict[int, int] = {}
        for p in self.assignment:
            end = self.consumer.highwater(TopicPartition(self.topic, p))  # known after a fetch
            position = self._next.get(p)
            if end is not None and position is not None:
                lags[p] = max(0, end - position)
        return lags

    def _assigned(self, partitions: set[int]) -> None:
        self.assignment |= partitions
        log.info("assigned %s partitions %s", self.topic, sorted(self.assignment))

    def close(self) -> None:
        self.consumer.close(autocommit=False)
