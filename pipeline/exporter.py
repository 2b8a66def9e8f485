"""What every exporter is to the pipeline: `export` and `close`, and the hooks it may override.

Exporters take the pipeline's outputs, never raw capture batches. The hooks have no-op defaults, so
the pipeline calls each on every exporter (no probing per call): `export_activity` (the connection
table's other output: each batch's bytes on its connection, parsed or not: the service map and
graph; the table makes it only when some exporter overrides this hook, seen once when the Pipeline
is built), `flush` (before an offset commit: what was handed over is acknowledged),
`set_consumer_lag` (a Kafka source's lag, after a poll). An exporter
that talks to a collector is a `BoundedExporter`: at the stop it shares a deadline with the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pipeline.conn_table import ConnActivity
from protocols.base import L7Record


class Exporter(ABC):
    @abstractmethod
    def export(self, records: list[L7Record]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def export_activity(self, activity: list[ConnActivity]) -> None:  # noqa: B027  (a hook: no-op by default)
        """Each batch's activity on its connection, parsed or not; before the records of the same feed."""

    def flush(self) -> None:  # noqa: B027
        """Before offsets are committed: what `export` was given is durable when this returns."""

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:  # noqa: B027
        """Messages between a Kafka source's position and the log end, after a poll."""


class BoundedExporter(Exporter):
    """An exporter whose close can be given a time limit (what it could not send is counted)."""

    @abstractmethod
    def close_within(self, timeout_s: float) -> None: ...
