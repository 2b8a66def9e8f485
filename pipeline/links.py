"""Producer -> consumer span links across connections: a record that read a message (a Kafka record
batch) links to the record that wrote it.

Protocols name the messages an exchange wrote (`L7Record.produced`) and read (`consumed`) by keys; this
stage remembers the span of each writer (bounded, oldest forgotten first) and gives each reader the
spans of the writers it finds. The producing application's (client's) span is preferred to the broker's
(server's) for the same message. Readers of messages written before the agent started, or forgotten,
get no link: nothing is lost, so nothing is counted.
"""

from __future__ import annotations

from collections import OrderedDict

from pipeline.otlp import span_ids
from protocols.base import L7Record, Role

MAX_WRITERS = 50_000  # message keys remembered (about 280 bytes each: 14 MB at most)
MAX_LINKS = 32  # links per record (a Fetch may return many batches)


class Linker:
    def __init__(self, capacity: int = MAX_WRITERS) -> None:
        self.capacity = capacity
        self._writers: OrderedDict[str, tuple[str, str, bool]] = OrderedDict()  # key -> trace, span, client

    def link(self, records: list[L7Record]) -> list[L7Record]:
        """Remember this batch's writers, then link its readers (a batch may hold both)."""
        writers = self._writers
        for r in records:
            if not r.produced:
                continue
            trace_id, span_id, _ = span_ids(r)
            client = r.role == Role.CLIENT
            for key in r.produced:
                known = writers.get(key)
                if known is not None and known[2] and not client:
                    continue  # the producing application's span stays preferred
                writers[key] = (trace_id.hex(), span_id.hex(), client)
                writers.move_to_end(key)
            while len(writers) > self.capacity:
                writers.popitem(last=False)
        for r in records:
            if not r.consumed:
                continue
            links: list[tuple[str, str]] = []
            for key in r.consumed:
                known = writers.get(key)
                if known is not None and (known[0], known[1]) not in links:
                    links.append((known[0], known[1]))
                    if len(links) >= MAX_LINKS:
                        break
            if links:
                r.links = tuple(links)
        return records
