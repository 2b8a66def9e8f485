"""Counters of everything the pipeline skipped, dropped or could not parse: nothing is lost silently."""

from __future__ import annotations

import threading
from collections import Counter

# Every counter that means data was lost, in pipeline order: each stop summary lists them all (0
# included, so a clean run shows it), and each is exported as a reason-labelled metric.
LOSSES = (
    "capture_lost_events",  # "ring full" (the CPU budget paused the drain, or a burst); "write refused"
    "dropped_batches",  # the embedded queue was full, or Kafka could not take them
    "dropped_fragments",  # the fragments in those batches
    "parse_errors",  # bytes no parser could read
    "gaps",  # holes in a captured byte stream
    "parser_stuck",  # a connection whose parser made no progress, dropped by the watchdog
    "unmatched_frames",  # requests without a response (or the reverse)
    "evicted_connections",  # connection state dropped (too many connections, too many bytes buffered)
    "bad_messages",  # Kafka messages that were not fragment batches
    "export_failed",  # records an exporter sent and the destination did not accept
    "export_dropped",  # records an exporter never sent (its queue full, or still queued at exit)
    "dropped_records",  # records the records topic could not take
    "alerts_failed",  # alert notifications not delivered
    "alert_records_late",  # records older than every alert window still open (the watermark - window)
)


class Health:
    """Named counters with a protocol (or stage) label and an optional reason; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def count(self, name: str, label: str = "", n: int = 1, reason: str = "") -> None:
        if n:
            with self._lock:
                self._counts[(name, label, reason)] += n

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, name: str) -> int:
        with self._lock:
            return sum(v for (k, _, _), v in self._counts.items() if k == name)


def loss_details(snapshot: dict[tuple[str, str, str], int]) -> str:
    """Non-zero losses by label and reason, `; `-separated, e.g. `export_failed{otlp_spans,timeout}=1024`
    ("none" if none)."""
    parts = [
        f"{name}{{{','.join(p for p in (label, reason) if p)}}}={value}"
        for name in LOSSES
        for (n, label, reason), value in sorted(snapshot.items())
        if n == name and value
    ]
    return "; ".join(parts) or "none"


def stop_summary(health: Health, records: int | None) -> dict[str, int | str]:
    """What every command logs when it stops: the records handed to the exporters (None: a command
    that makes none), every loss counter's total, and `losses`: the non-zero ones by label and reason."""
    snapshot = health.snapshot()
    totals = {name: sum(v for (n, _, _), v in snapshot.items() if n == name) for name in LOSSES}
    made = {} if records is None else {"records": records}
    return {**made, **totals, "losses": loss_details(snapshot)}


def summary_text(summary: dict[str, int | str]) -> str:
    """The summary for people: `3000 records; losses: none`."""
    records = f"{summary['records']} records; " if "records" in summary else ""
    return f"{records}losses: {summary['losses']}"
