"""One pipeline for every command: batches in, records out to every exporter, once.

`feed` applies batches (at their Kafka position, when they have one) to the connection table and hands
its two outputs to every exporter: each batch's activity on its connection, then the records. `tick`
ends idle connections, `close` flushes the table once and fans the records out once, then closes
the exporters. `exported` counts every record handed over: what the stop summaries add up. Sources
(the in-process queue, Kafka, a capture file) and the Kafka committer are wired around it in
pipeline/run.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

from pipeline.call_chains import CallChains
from pipeline.conn_table import ConnActivity, ConnTable, activity_of
from pipeline.exporter import BoundedExporter, Exporter
from pipeline.links import Linker
from probes.fragment import Batch
from protocols.base import L7Record

log = logging.getLogger("l7scope.run")

# Stopping: exporters that talk to a collector get this long between them to send what they hold, so a
# collector that is down or never answers cannot hold up the exit (what is left is counted).
CLOSE_TIMEOUT_S = 2.5

Position = tuple[int, int]  # (partition, offset) of the message a batch came in


class Pipeline:
    def __init__(
        self, table: ConnTable, exporters: Sequence[Exporter], chains: CallChains | None = None
    ) -> None:
        self.table = table
        self.exporters = list(exporters)
        # Activity goes to the exporters that override its hook; with none, the table makes none.
        self.activity_exporters = [e for e in self.exporters if overrides_activity(e)]
        self.exported = 0
        self.chains = chains  # records wait there for their parents (pipeline/call_chains.py)
        self.linker = Linker()

    def feed(self, batches: Sequence[Batch], positions: Sequence[Position] = ()) -> int:
        """Batches -> the table -> activity, then records, to every exporter; returns the records.

        `positions`, when given, are the batches' Kafka positions (one each): the table keeps the
        earliest an unfinished connection still needs (`low_water`)."""
        chains = self.chains
        if chains is None:
            records, activity = self.table.feed(batches, positions, activity=bool(self.activity_exporters))
            self._activity(activity)
            return self.emit(records)
        if self.activity_exporters:
            self._activity([activity_of(batch) for batch in batches])
        for batch, (partition, offset) in zip(batches, positions or [(-1, -1)] * len(batches), strict=True):
            chains.observe(batch)
            needed = self.table.needed_from(batch.conn.conn_id, offset)  # before apply finishes it
            chains.add(self.table.apply(batch, partition, offset), partition, needed)
            if batch.closed is not None:
                chains.forget(batch.conn.conn_id)
        return self.release()

    def _activity(self, activity: list[ConnActivity]) -> None:
        for exporter in self.activity_exporters:
            exporter.export_activity(activity)

    def release(self, force: bool = False) -> int:
        """Records whose parents are decided go out (all when `force`); returns how many. Call often:
        a record waits there at most the chain window."""
        return self._out(self.chains.release(force)) if self.chains is not None else 0

    def tick(self) -> int:
        """Connections idle too long end: their records go out; returns how many."""
        if self.chains is None:
            return self.emit(self.table.expire())
        needed = self.table.positions()  # before expire forgets them: held records hold their offsets
        for record in self.table.expire():
            self.chains.add([record], *needed.get(record.conn.conn_id, (-1, -1)))
        return self._out(self.chains.release())

    def emit(self, records: list[L7Record], force: bool = False) -> int:
        """The same records to every exporter (fan out once), through the call chains when on (which
        may hold some back, or release earlier ones); returns how many went out."""
        if self.chains is not None:
            self.chains.add(records)
            records = self.chains.release(force)
        return self._out(records)

    def _out(self, records: list[L7Record]) -> int:
        self.linker.link(records)  # after the chains: a writer's trace id is final once released
        self.exported += export_all(records, self.exporters)
        return len(records)

    def flush_exporters(self) -> None:
        """Before a commit: every exporter makes what it was given durable (e.g. the records topic)."""
        for exporter in self.exporters:
            exporter.flush()

    def low_water(self, partitions: Iterable[int]) -> dict[int, int | None]:
        if self.chains is None:
            return {p: self.table.low_water(p) for p in partitions}
        return {p: _earliest(self.table.low_water(p), self.chains.low_water(p)) for p in partitions}

    def revoke(self, partitions: set[int]) -> dict[int, int | None]:
        """Partitions moving to another member: their connections are flushed and exported durably;
        returns the offsets to commit for them (taken before the flush forgets them)."""
        needed = self.low_water(partitions)
        self.emit(self.table.flush_partitions(partitions), force=True)
        self.flush_exporters()
        return needed

    def report_lag(self, topic: str, lags: Mapping[int, int]) -> None:
        for exporter in self.exporters:
            for partition, lag in lags.items():
                exporter.set_consumer_lag(topic, partition, lag)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """Flushes the table once, to every exporter, then closes them; returns the records flushed.

        Bounded exporters share `timeout_s`: each gets an equal part of what is left."""
        flushed = self.emit(self.table.flush(), force=True)
        deadline = time.monotonic() + timeout_s
        bounded = sum(isinstance(e, BoundedExporter) for e in self.exporters)
        for exporter in self.exporters:
            try:
                if isinstance(exporter, BoundedExporter):
                    share, bounded = max(0.0, deadline - time.monotonic()) / bounded, bounded - 1
                    exporter.close_within(share)
                else:
                    exporter.close()
            except Exception:  # one exporter failing to close must not keep the others from closing
                log.exception("closing %s failed", type(exporter).__name__)
        return flushed


def overrides_activity(exporter: Exporter) -> bool:
    return type(exporter).export_activity is not Exporter.export_activity


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def export_all(records: list[L7Record], exporters: Sequence[Exporter]) -> int:
    """The same records to every exporter; returns how many (what the stop summary adds up)."""
    for exporter in exporters:
        exporter.export(records)
    return len(records)
