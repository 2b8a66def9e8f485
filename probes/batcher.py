"""Groups drained capture events into one Batch per connection, keeping capture order."""

from __future__ import annotations

from collections.abc import Iterable

from probes.fragment import Batch, ConnEvent, Fragment


class Batcher:
    """Remembers each open connection's labels so every batch is self-describing."""

    def __init__(self) -> None:
        self._conns: dict[str, ConnEvent] = {}
        self.orphans = 0  # fragments of a connection never announced (counted, then dropped)

    def group(self, events: Iterable[Fragment | ConnEvent]) -> list[Batch]:
        batches: dict[str, Batch] = {}
        for event in events:
            if isinstance(event, Fragment):
                batch = batches.get(event.conn_id) or self._open_batch(batches, event.conn_id)
                if batch is None:
                    self.orphans += 1
                else:
                    batch.fragments.append(event)
            elif event.closed:
                conn_id = event.info.conn_id
                opened = self._conns.pop(conn_id, None)
                batch = batches.get(conn_id) or Batch(opened.info if opened else event.info, [])
                batch.closed = event
                batches[conn_id] = batch
            else:
                self._conns[event.info.conn_id] = event
        return list(batches.values())

    def _open_batch(self, batches: dict[str, Batch], conn_id: str) -> Batch | None:
        opened = self._conns.get(conn_id)
        if opened is None:
            return None
        batch = batches[conn_id] = Batch(opened.info, [])
        return batch
