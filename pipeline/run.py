"""The whole graph, wired in one screen: capture -> batches -> conn table -> records -> exporters.

`run_embedded` puts a bounded in-process queue where Kafka would be; `run_agent` and
`run_pipeline` are the two halves of the scale-out path; `run_replay` feeds a pcap file through the
same stages.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Protocol

from l7scope.config import Config, file_mode
from pipeline.call_chains import CallChains, ChainLimits
from pipeline.conn_table import ConnTable, TableLimits
from pipeline.cpu_budget import CpuBudget
from pipeline.exporter import Exporter
from pipeline.framing import AnySpec
from pipeline.jsonl import JsonlExporter
from pipeline.live_table import LiveTable
from pipeline.otlp import OtlpEndpoint, OtlpSpanExporter
from pipeline.pipeline import Pipeline
from probes.batcher import Batcher
from probes.fragment import Batch, ConnEvent, Fragment
from probes.health import Health, stop_summary, summary_text

if TYPE_CHECKING:
    from probes.kafka_io import KafkaSource

log = logging.getLogger("l7scope.run")


class Capture(Protocol):  # probes.capture.Capture, kept abstract so this module does not import bcc
    def poll(self, limit: int = ...) -> list[Fragment | ConnEvent]: ...
    def close(self) -> None: ...


def default_protocols() -> tuple[AnySpec, ...]:
    from protocols.registry import PROTOCOLS

    return PROTOCOLS


def build_exporters(
    config: Config, env: Mapping[str, str], health: Health, consuming: bool = False
) -> list[Exporter]:
    """`consuming`: this is `l7scope pipeline`, where Kafka is present and records_topic=auto means on."""
    exporters: list[Exporter] = []
    if config.export.jsonl:
        exporters.append(JsonlExporter(config.export.jsonl, health, file_mode(config.export.file_mode)))
    endpoint = OtlpEndpoint.from_env(env, "traces") if config.export.otlp else None
    if endpoint is not None:
        exporters.append(OtlpSpanExporter(endpoint, health))
    switch = config.export.records_topic
    records_topic = switch == "on" or (consuming and switch == "auto")
    if records_topic:
        from pipeline.records_sink import RecordsSink

        exporters.append(RecordsSink(config.kafka, health))
    from pipeline.red_metrics import build_metrics_exporter

    topology = None
    if config.export.map_out or config.export.prometheus:  # the map at exit, and live at /map.svg
        from pipeline.topology import Topology

        topology = Topology(config.export.map_out, file_mode=file_mode(config.export.file_mode))
    pages = {"/map.svg": topology.svg_page} if topology is not None else {}
    metrics = build_metrics_exporter(config, env, health, pages)
    if metrics is not None:
        exporters.append(metrics)
    if topology is not None:
        exporters.append(topology)
    if config.export.alert_rules and consuming and records_topic:
        # A replica sees only its partitions' connections: its windows would hold part of each service
        # (an alert firing once per replica, or never). The records topic has every service whole.
        log.warning(
            "export.alert_rules is not evaluated by `l7scope pipeline` while records go to %s: "
            "run `l7scope alerts evaluate` (one consumer group on that topic) for alerting",
            config.kafka.records_topic,
        )
    elif config.export.alert_rules:
        from pipeline.alerts import build_alerting

        if consuming:
            log.warning("alert rules evaluated in this replica over its own partitions only: with "
                        "more than one replica, turn export.records_topic on and run `l7scope alerts "
                        "evaluate`")  # fmt: skip
        kafka = config.kafka if records_topic else None  # alerts go to Kafka where records do
        export = config.export
        exporters.append(build_alerting(export.alert_rules, export.alertmanager_url, health, kafka))
    return exporters


def new_chains(config: Config, health: Health) -> CallChains | None:
    """The call-chain stage (pipeline/call_chains.py), unless `pipeline.call_chains` is off."""
    if not config.pipeline.call_chains:
        return None
    window = config.pipeline.chain_window_ms / 1000
    return CallChains(health, ChainLimits(settle_s=min(ChainLimits().settle_s, window), window_s=window))


def sees_every_partition(source: KafkaSource) -> bool:
    """Thread links need every connection of a node: only a member assigned the whole topic has them."""
    every = source.consumer.partitions_for_topic(source.topic) or set()
    return bool(every) and every <= source.assignment


def new_table(config: Config, health: Health) -> ConnTable:
    limits = TableLimits(
        idle_seconds=config.pipeline.idle_seconds, max_buffered_bytes=config.pipeline.max_buffered_mib << 20
    )
    return ConnTable(default_protocols(), health, table_limits=limits)


# Records per poll: a full ring is drained in several ~15 ms steps, so the CPU budget is checked often.
DRAIN_LIMIT = 8192


def drain_forever(
    capture: Capture,
    sink: Callable[[list[Batch]], None],
    stop: threading.Event,
    interval_s: float,
    health: Health | None = None,
    publish_interval_s: float = 0.1,
    budget: CpuBudget | None = None,
) -> None:
    """The agent's drain loop: on a timer (the ring is written without wake-ups), never blocking.

    The ring is drained every `interval_s`; batches go to the sink every `publish_interval_s`, one
    per connection for all drains since the last (per-message costs in Kafka dominate otherwise).
    Over its CPU `budget` the loop pauses instead, and the kernel sheds (and counts) what overflows.
    """
    budget = budget or CpuBudget(0.0)
    gc.freeze()  # the start-up heap (bcc, protobuf, exporters) stays: keep it out of every collection
    batcher = Batcher()
    losses = CaptureLosses(capture, health)
    events = busy = 0.0
    next_publish = time.monotonic() + publish_interval_s
    while not stop.is_set():
        started = time.monotonic()
        drained = capture.poll(DRAIN_LIMIT)
        events += len(drained)
        batcher.add(drained)
        if started >= next_publish:
            next_publish = started + publish_interval_s
            batches = batcher.take()
            if batches:
                sink(batches)
        losses.update(started)
        busy += time.monotonic() - started
        wait = 0.0 if len(drained) >= DRAIN_LIMIT else interval_s - (time.monotonic() - started)
        stop.wait(max(wait, budget.overdraft_s()))
    drained = capture.poll()
    batcher.add(drained)
    sink(batcher.take())
    losses.update(float("inf"))
    stats = getattr(capture, "stats", None)
    kernel = stats() if stats is not None else None
    log.info("drain stopped", extra={
        "drained_events": int(events + len(drained)), "drain_busy_s": round(busy, 3),
        "kernel_events": getattr(kernel, "events", -1),
        "kernel_lost_events": getattr(kernel, "lost_events", -1),
        "kernel_refused_events": getattr(kernel, "refused_events", -1),
        "cpu_paused_s": round(budget.paused_s, 3),
        "ring_reader": getattr(capture, "ring_reader", "")})  # fmt: skip


class CaptureLosses:
    """The kernel's loss counters (probes.capture.CaptureStats) into Health, as deltas, twice a second."""

    # (counter, CaptureStats field, reason): the kernel sheds what the ring has no room for, and counts
    # apart the writes it refused with room to spare (bpf/socket_trace.bpf.c, l7_write).
    FIELDS = (
        ("capture_lost_events", "lost_events", "ring full"),
        ("capture_lost_bytes", "lost_bytes", "ring full"),
        ("capture_lost_events", "refused_events", "write refused"),
        ("capture_lost_bytes", "refused_bytes", "write refused"),
        ("capture_truncated", "truncated", "copy limit"),
        ("capture_lost_events", "tls_unmapped", "tls socket unknown"),
        ("capture_lost_bytes", "tls_unmapped_bytes", "tls socket unknown"),
    )

    def __init__(self, capture: Capture, health: Health | None, every_s: float = 0.5) -> None:
        self._stats = getattr(capture, "stats", None) if health is not None else None
        self._health = health
        self._every = every_s
        self._next = 0.0
        self._last: dict[str, int] = {}

    def update(self, now: float) -> None:
        if self._stats is None or self._health is None or now < self._next:
            return
        self._next = now + self._every
        stats = self._stats()
        for counter, field, reason in self.FIELDS:
            value = getattr(stats, field)
            self._health.count(counter, "kernel", value - self._last.get(field, 0), reason)
            self._last[field] = value


def run_embedded(
    config: Config,
    env: Mapping[str, str],
    capture: Capture,
    stop: threading.Event,
    out: IO[str] = sys.stderr,
    health: Health | None = None,
    extra_exporters: Iterable[Exporter] = (),
) -> Health:
    """Capture and pipeline in one process, with a bounded queue between them.

    `extra_exporters` (e.g. `l7scope top`'s table) receive every record besides the configured ones.
    """
    health = health or Health()
    # Bounded in batches (one connection's fragments each), not in drains, whose size varies.
    handoff: queue.Queue[list[Batch]] = queue.Queue()
    queued, bound, lock = [0], config.pipeline.queue_batches, threading.Lock()

    def enqueue(batches: list[Batch]) -> None:
        with lock:
            full = queued[0] + len(batches) > bound
            if not full:
                queued[0] += len(batches)
        if full:  # the pipeline fell behind: drop, count, keep draining
            health.count("dropped_batches", "embedded_queue", len(batches), reason="queue full")
            fragments = sum(len(b.fragments) for b in batches)
            health.count("dropped_fragments", "embedded_queue", fragments, reason="queue full")
        else:
            handoff.put_nowait(batches)

    def dequeue() -> list[Batch]:
        batches = handoff.get(timeout=0.1)
        with lock:
            queued[0] -= len(batches)
        return batches

    budget = CpuBudget(config.capture.max_cpu)  # capture and parsing share it: one process, one limit
    agent = threading.Thread(
        target=drain_forever,
        args=(capture, enqueue, stop, config.capture.drain_interval_ms / 1000, health),
        kwargs={"budget": budget},
        daemon=True,
    )
    exporters = [*build_exporters(config, env, health), *extra_exporters]
    live = LiveTable() if config.export.live_table else None
    if live is not None:
        exporters.append(live)
    pipeline = Pipeline(new_table(config, health), exporters, new_chains(config, health))
    agent.start()
    if config.pipeline.nice:  # this thread only (Linux: a tid); the drain thread keeps its priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, max(0, config.pipeline.nice)))
    log.info("capturing: embedded pipeline, %d exporters", len(exporters))
    next_render = time.monotonic() + config.export.refresh_seconds
    try:
        while agent.is_alive() or not handoff.empty():
            with contextlib.suppress(queue.Empty):
                for batch in dequeue():  # one connection at a time: the CPU budget is checked often
                    pipeline.feed((batch,))
                    stop.wait(budget.overdraft_s())  # once stopping, the backlog is parsed at full speed
            pipeline.release()  # records whose parents are decided (or whose window ended), when idle too
            if time.monotonic() >= next_render:
                next_render += config.export.refresh_seconds
                pipeline.tick()
                if live is not None:
                    render(live, health, out)
    finally:
        stop.set()
        agent.join(timeout=5)
        # Detaching the probes takes seconds: it runs while the exporters send what they hold.
        closing = threading.Thread(target=capture.close, name="capture-close", daemon=True)
        closing.start()
        pipeline.close()
        closing.join()  # as long as it takes, as before: cut short, the interpreter's exit would redo it
        if live is not None:
            render(live, health, out)
        log_stop("pipeline stopped", health, pipeline.exported, {**chain_stats(pipeline),
            "queue_dropped_batches": health.total("dropped_batches"),
            "queue_dropped_fragments": health.total("dropped_fragments")})  # fmt: skip
    return health


def chain_stats(pipeline: Pipeline) -> dict[str, int | float | str]:
    return pipeline.chains.summary() if pipeline.chains is not None else {}


def log_stop(
    what: str, health: Health, records: int | None, extra: Mapping[str, object] | None = None
) -> None:
    """Every command's stop summary: records exported and every loss counter, by reason."""
    summary = stop_summary(health, records)
    log.info("%s: %s", what, summary_text(summary), extra={**summary, **(extra or {})})


def render(live: LiveTable, health: Health, out: IO[str]) -> None:
    lost = health.total("capture_lost_events") + health.total("dropped_batches")
    footer = f"parse errors {health.total('parse_errors')}  gaps {health.total('gaps')}  dropped {lost}"
    footer += f"  truncated {health.total('capture_truncated')}"
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    out.write(f"{clear}{time.strftime('%H:%M:%S')}  l7scope\n{live.render(footer=footer)}\n\n")
    out.flush()


def run_agent(
    config: Config, capture: Capture, stop: threading.Event, health: Health | None = None
) -> Health:
    """Capture -> Kafka: the per-node half of the scale-out path; starts (and drains) without a broker."""
    from probes.publisher import KafkaPublisher

    health = health or Health()
    publisher = KafkaPublisher(config.kafka, health)  # connects and creates the topic in the background
    log.info("capturing: publishing to %s at %s", config.kafka.fragments_topic, config.kafka.bootstrap)
    try:
        drain_forever(capture, publisher.publish, stop, config.capture.drain_interval_ms / 1000, health,
                      budget=CpuBudget(config.capture.max_cpu))  # fmt: skip
    finally:
        capture.close()
        publisher.close()
        snapshot = health.snapshot().items()
        kafka = {f"{n}{{{r}}}" if r else n: v for (n, label, r), v in snapshot if label == "kafka"}
        log_stop("agent stopped", health, None, {"kafka": str(kafka)})
    return health


def run_pipeline(
    config: Config,
    env: Mapping[str, str],
    stop: threading.Event,
    group: str | None = None,
    from_beginning: bool = True,
    health: Health | None = None,
    start_at: str | None = None,
    extra_exporters: Iterable[Exporter] = (),
    commit_interval_s: float = 1.0,
) -> Health:
    """Kafka -> records -> exporters, as one member of the consumer group; at-least-once.

    `start_at` (ISO-8601 or epoch seconds) starts partitions the group has no offset for at that time.
    Offsets are committed after the records were handed to (and flushed by) every exporter, held back
    to the earliest message an unfinished connection still needs, so a crash re-reads, never skips.
    """
    from probes.kafka_io import KafkaSource, StartAt, ensure_topics

    health = health or Health()
    ensure_topics(config.kafka, config.kafka.fragments_topic)
    exporters = [*build_exporters(config, env, health, consuming=True), *extra_exporters]
    chains = new_chains(config, health)
    pipeline = Pipeline(new_table(config, health), exporters, chains)
    if start_at is not None:
        start = StartAt.parse_time(start_at)
    else:
        start = StartAt("earliest" if from_beginning else "latest")
    # A revoked partition's connections are flushed and exported durably, then its offsets committed.
    source = KafkaSource(config.kafka, health, group=group, start=start, on_revoked=pipeline.revoke)
    log.info("consuming %s as group %s", config.kafka.fragments_topic, group or config.kafka.group)
    gc.freeze()  # the start-up heap stays: full collections of it paused the loop 100-300 ms (p99 latency)
    next_commit = time.monotonic() + commit_interval_s
    next_expire = time.monotonic() + config.export.refresh_seconds
    try:
        while not stop.is_set():
            messages = source.poll()
            if chains is not None:
                chains.thread_links = sees_every_partition(source)
            pipeline.feed([m.batch for m in messages], [(m.partition, m.offset) for m in messages])
            now = time.monotonic()
            if now >= next_expire:
                next_expire = now + config.export.refresh_seconds
                pipeline.tick()
                pipeline.report_lag(config.kafka.fragments_topic, source.lags())
            if now >= next_commit:  # e.g. the records topic acks what it was given, then the commit
                next_commit = now + commit_interval_s
                pipeline.flush_exporters()
                source.commit(pipeline.low_water(source.assignment))
    finally:
        needed = pipeline.low_water(source.assignment)
        pipeline.close()
        try:
            source.commit(needed)
        except Exception as e:  # the group may be mid-rebalance: the next owner re-reads, never skips
            log.warning("final commit failed: %s", e)
        source.close()
        exchanges = health.total("exchanges")
        stats = {"exchanges": exchanges, **chain_stats(pipeline)}
        log_stop("pipeline stopped", health, pipeline.exported, stats)
    return health


def run_replay(
    events: Iterable[Fragment | ConnEvent],
    config: Config,
    env: Mapping[str, str],
    health: Health | None = None,
    stop: threading.Event | None = None,
) -> Health:
    """A capture file's fragments through the same stages (chunks keep each batch small); `stop` ends
    the read early (what was read is still parsed and exported)."""
    health = health or Health()
    batcher = Batcher()
    exporters = build_exporters(config, env, health)
    pipeline = Pipeline(new_table(config, health), exporters, new_chains(config, health))
    chunk: list[Fragment | ConnEvent] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= 512:
            pipeline.feed(batcher.group(chunk))
            chunk = []
            if stop is not None and stop.is_set():
                log.warning("replay stopped early (%s)", getattr(stop, "reason", "") or "stop requested")
                break
    pipeline.feed(batcher.group(chunk))
    pipeline.close()
    log_stop("replay finished", health, pipeline.exported, chain_stats(pipeline))
    return health
