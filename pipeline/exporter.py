"""What every exporter is to the pipeline: `export` and `close`, and the hooks it may override.

The hooks have no-op defaults, so the pipeline calls each on every exporter (no probing): `observe`
(connections, parsed or not: the service map and graph), `flush` (before an offset commit: what was
handed over is acknowledged), `set_consumer_lag` (a Kafka source's lag, after a poll). An exporter
that talks to a collector is a `BoundedExporter`: at the stop it shares a deadline with the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from probes.fragment import Batch
from protocols.base import L7Record


class Exporter(ABC):
    @abstractmethod
    def export(self, records: list[L7Record]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def observe(self, batches: list[Batch]) -> None:  # noqa: B027  (a hook: no-op by default)
        """Every batch the pipeline is fed, parsed or not."""

    def flush(self) -> None:  # noqa: B027
        """Before offsets are committed: what `export` was given is durable when this returns."""

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:  # noqa: B027
        """Messages between a Kafka source's position and the log end, after a poll."""


class BoundedExporter(Exporter):
    """An exporter whose close can be given a time limit (what it could not send is counted)."""

    @abstractmethod
    def close_within(self, timeout_s: float) -> None: ...
