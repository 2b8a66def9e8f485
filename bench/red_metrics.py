"""RED metrics cost per exchange: l7scope's own aggregation (RedMetrics.export) against the previous path
through the OpenTelemetry SDK (tests/support/sdk_red_metrics.SdkReference), side by side in one process.

  python -m bench.red_metrics [rounds, default 5] [records per round, default 20000]

Both paths get the same records (tests/support/sdk_red_metrics.records: HTTP, gRPC and MySQL, servers
and clients, errors, body sizes, half with a propagated trace id) in batches of 500, with exemplars on
and one in-memory reader, the rounds alternating; per path the best round's CPU time per exchange
(time.process_time). "own, 2 readers": each reader keeps its own aggregation, as in the SDK.
RedMetrics.export includes what it does besides the RED histograms (the service graph's per-record work,
still through the SDK, and the truncated/degraded counts). Then the cost of one collection of every series.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader

from pipeline.health import Health
from pipeline.red_metrics import RedMetrics, build_meter_provider
from protocols.base import L7Record
from tests.support.sdk_red_metrics import SdkReference, records

BATCH = 500


def per_exchange(export: Callable[[list[L7Record]], None], items: list[L7Record]) -> float:
    """CPU seconds per record to export `items` in batches."""
    start = time.process_time()
    for i in range(0, len(items), BATCH):
        export(items[i : i + BATCH])
    return (time.process_time() - start) / len(items)


def ours(readers: int) -> tuple[RedMetrics, list[InMemoryMetricReader]]:
    made = [InMemoryMetricReader() for _ in range(readers)]
    return RedMetrics(build_meter_provider(list[MetricReader](made)), Health()), made


def main(rounds: int, n: int) -> None:
    items = records(n, seed=1)
    best: dict[str, float] = {}
    for _ in range(rounds):
        sdk = SdkReference(build_meter_provider([InMemoryMetricReader()]))
        red, _ = ours(1)
        red2, _ = ours(2)
        for name, export in (
            ("histograms: SDK record()", sdk.export),
            ("histograms: own, 1 reader", red._red.add),
            ("histograms: own, 2 readers", red2._red.add),
            ("RedMetrics.export, 1 reader", red.export),
        ):
            cost = per_exchange(export, items)
            best[name] = min(best.get(name, cost), cost)
    for name, cost in best.items():
        print(f"{name:30s} {cost * 1e6:7.2f} us/exchange  ({1 / cost:,.0f}/s)")
    red, readers = ours(1)
    red.export(items)
    series = sum(len(h.series) for h in red._red._histograms.values())
    start = time.process_time()
    data = readers[0].get_metrics_data()
    took = time.process_time() - start
    assert data is not None
    print(f"one collection of {series} series: {took * 1e3:.1f} ms CPU")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5, int(sys.argv[2]) if len(sys.argv) > 2 else 20_000)
