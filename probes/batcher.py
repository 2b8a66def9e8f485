"""Groups drained capture events into one Batch per connection, keeping capture order."""

from __future__ import annotations

from collections.abc import Iterable

from probes.fragment import Batch, ConnEvent, Fragment


class Batcher:
    """Remembers each open connection's labels so every batch is self-describing.

    `add()` may be called for several drains before `take()`: one batch per connection then covers
    them all (fewer, larger Kafka messages); `group()` is both at once.
    """

    def __init__(self) -> None:
        self._conns: dict[str, ConnEvent] = {}
        self._pending: dict[str, Batch] = {}
        self.orphans = 0  # fragments of a connection never announced (counted, then dropped)

    def group(self, events: Iterable[Fragment | ConnEvent]) -> list[Batch]:
        self.add(events)
        return self.take()

    def add(self, events: Iterable[Fragment | ConnEvent]) -> None:
        batches, get = self._pending, self._pending.get
        for event in events:
            if type(event) is Fragment:  # the hot path: one type check and one dict lookup
                batch = get(event.conn_id) or self._open_batch(event.conn_id)
                if batch is None:
                    self.orphans += 1
                else:
                    batch.fragments.append(event)
            elif isinstance(event, ConnEvent) and event.closed:
                conn_id = event.info.conn_id
                opened = self._conns.pop(conn_id, None)
                batch = get(conn_id) or Batch(opened.info if opened else event.info, [])
                batch.closed = event
                batches[conn_id] = batch
            elif isinstance(event, ConnEvent):
                self._conns[event.info.conn_id] = event

    def take(self) -> list[Batch]:
        """The batches added since the last take, one per connection."""
        batches, self._pending = self._pending, {}
        return list(batches.values())

    def _open_batch(self, conn_id: str) -> Batch | None:
        opened = self._conns.get(conn_id)
        if opened is None:
            return None
        batch = self._pending[conn_id] = Batch(opened.info, [])
        return batch
