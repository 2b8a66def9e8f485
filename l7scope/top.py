"""`l7scope top`: a live curses view of per-service, per-endpoint RED (rate, error %, p50/p90/p99).

Fed by the embedded pipeline (`run_embedded` with the table as an extra exporter) or by the records
topic (`--kafka`). The feed runs in a thread; the terminal belongs to the main thread.
"""

from __future__ import annotations

import curses
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from l7scope.config import Config, kafka_client_settings
from l7scope.redact import redact
from pipeline.health import Health
from pipeline.live_table import LiveTable, Row

KEYS = {ord("r"): "rate", ord("e"): "errors", ord("l"): "latency"}
HEADER = "{:<16} {:<8} {:<6} {:<36} {:>9} {:>6} {:>9} {:>9} {:>9}"
COLUMNS = ("SERVICE", "PROTO", "ROLE", "ENDPOINT", "RATE/s", "ERR%", "P50 ms", "P90 ms", "P99 ms")


class LogTail(logging.Handler):
    """Keeps the latest log lines for the status line while curses owns the terminal."""

    def __init__(self, keep: int = 50) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(redact(f"{record.levelname.lower()} {record.name}: {record.getMessage()}"))


def format_row(r: Row) -> str:
    return HEADER.format(
        r.service[:16], r.protocol[:8], r.role[:6], r.name[:36], f"{r.rate:.1f}", f"{r.error_pct:.1f}",
        f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}",
    )  # fmt: skip


def footer(health: Health) -> str:
    lost = health.total("capture_lost_events") + health.total("dropped_batches")
    return f"parse errors {health.total('parse_errors')}  gaps {health.total('gaps')}  dropped {lost}"


def draw(screen: Any, table: LiveTable, sort: str, health: Health, status: str) -> None:
    height, width = screen.getmaxyx()
    screen.erase()

    def put(y: int, text: str, attr: int = 0) -> None:
        if 0 <= y < height:
            screen.addnstr(y, 0, text, max(0, width - 1), attr)

    keys = "keys: r rate  e errors  l latency  q quit"
    put(0, f"l7scope top  {time.strftime('%H:%M:%S')}  sorted by {sort}   {keys}")
    put(1, HEADER.format(*COLUMNS), curses.A_REVERSE)
    rows = table.rows(sort, limit=max(0, height - 5))
    for i, row in enumerate(rows):
        put(2 + i, format_row(row))
    if not rows:
        put(2, "(waiting for traffic: HTTP/1.1, HTTP/2, gRPC, MySQL and Redis on any TCP connection)")
    put(height - 2, footer(health))
    put(height - 1, status)
    screen.refresh()


def ui_loop(
    screen: Any, table: LiveTable, health: Health, stop: threading.Event, status: Callable[[], str], sort: str
) -> None:
    """Redraw every second and on every key; returns when q is pressed or `stop` is set."""
    curses.curs_set(0)
    screen.timeout(200)
    next_draw = 0.0
    while not stop.is_set():
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return
        if key in KEYS:
            sort, next_draw = KEYS[key], 0.0
        if time.monotonic() >= next_draw:
            draw(screen, table, sort, health, status())
            next_draw = time.monotonic() + 1.0


def run_top(feed: Callable[[LiveTable, Health, threading.Event], object], stop: threading.Event) -> int:
    """Start `feed` in a thread, show the table until q (or `stop`); returns the feed's error, if any."""
    table, health = LiveTable(), Health()
    tail = LogTail()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [tail]  # log lines would tear the curses screen
    failure: list[BaseException] = []

    def feeder() -> None:
        try:
            feed(table, health, stop)
        except BaseException as e:
            failure.append(e)
            logging.getLogger("l7scope.top").error("feed stopped: %s", e)
        finally:
            stop.set()

    thread = threading.Thread(target=feeder, name="l7scope-top-feed", daemon=True)
    thread.start()
    try:
        curses.wrapper(ui_loop, table, health, stop, lambda: tail.lines[-1] if tail.lines else "", "rate")
    finally:
        stop.set()
        thread.join(timeout=10)
        root.handlers = saved
    if failure:
        raise failure[0]
    return 0


def embedded_feed(
    config: Config, env: Any, capture: Any
) -> Callable[[LiveTable, Health, threading.Event], None]:
    from pipeline.run import run_embedded

    def feed(table: LiveTable, health: Health, stop: threading.Event) -> None:
        run_embedded(config, env, capture, stop, health=health, extra_exporters=[table])

    return feed


def kafka_feed(config: Config) -> Callable[[LiveTable, Health, threading.Event], None]:
    """Records from `l7scope.records`: every partition, from the end, no consumer group (no commits)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.conn_table import ConnTable
    from pipeline.pipeline import Pipeline
    from pipeline.records_sink import decode_record  # written with the records sink

    consumer = KafkaConsumer(  # here, not in the thread: an unreachable broker fails before curses starts
        **kafka_client_settings(config.kafka),
        group_id=None,
        enable_auto_commit=False,
        client_id=f"l7scope-top-{uuid.uuid4().hex[:8]}",
    )

    def feed(table: LiveTable, health: Health, stop: threading.Event) -> None:
        # Records arrive finished: they join the pipeline after its connection table (left empty).
        pipeline = Pipeline(ConnTable((), health), [table])
        try:
            partitions = consumer.partitions_for_topic(config.kafka.records_topic) or set()
            consumer.assign([TopicPartition(config.kafka.records_topic, p) for p in sorted(partitions)])
            consumer.seek_to_end()
            while not stop.is_set():
                records = []
                for messages in consumer.poll(timeout_ms=200).values():
                    for m in messages:
                        try:
                            records.append(decode_record(m.value))
                        except Exception as e:  # a bad message is counted, never fatal
                            health.count("bad_messages", "records", reason=type(e).__name__)
                if records:
                    pipeline.emit(records)
        finally:
            consumer.close()
            pipeline.close()

    return feed
