# ruff: noqa: E402  (the tree to measure goes on sys.path before the project imports)
"""RED metrics cost per exchange: l7scope's own aggregation (RedMetrics.export) against the previous path
through the OpenTelemetry SDK (tests/support/sdk_red_metrics.SdkReference), side by side in one process.

  python -m bench.red_metrics [--rounds 5] [--records 20000] [--root /tmp/l7-old]

Both paths get the same records (tests/support/sdk_red_metrics.records: HTTP, gRPC and MySQL, servers
and clients, errors, body sizes, half with a propagated trace id) in batches of 500, with exemplars on
and one in-memory reader, the rounds alternating; per path the best round's CPU time per exchange
(time.process_time). "own, 2 readers": each reader keeps its own aggregation, as in the SDK.
RedMetrics.export includes what it does besides the RED histograms (the service graph's per-record work,
still through the SDK, and the truncated/degraded counts). Then the cost of one collection of every series.
With --root, RedMetrics.export of that checkout (an earlier tree) is measured in a subprocess on the same
records, alternating round by round with this tree's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# --root: the other tree's modules; run as a script, bench/pipeline.py must not shadow `pipeline`
sys.path[:] = [
    os.environ.get("RED_BENCH_ROOT") or str(HERE),
    *(p for p in sys.path if p != str(HERE / "bench")),
]

from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader

from pipeline.red_metrics import RedMetrics, build_meter_provider
from probes.health import Health
from protocols.base import L7Record

# by path: an earlier tree (--root) has no tests/support/sdk_red_metrics.py
_spec = importlib.util.spec_from_file_location("sdk_red_metrics", HERE / "tests/support/sdk_red_metrics.py")
assert _spec is not None and _spec.loader is not None
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)
SdkReference, records = support.SdkReference, support.records

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


def export_only(n: int) -> float:
    """RedMetrics.export per exchange, in whichever tree is on the path (the --root child)."""
    red, _ = ours(1)
    items = records(n, seed=1)
    red.export(items)  # series, instruments and caches made: steady state, as the other rows
    return per_exchange(red.export, items)


def main(rounds: int, n: int, root: str) -> None:
    items = records(n, seed=1)
    best: dict[str, float] = {}
    for _ in range(rounds):
        if root:
            child = subprocess.run(
                [sys.executable, __file__, "--export-only", "--records", str(n)],
                env=os.environ | {"RED_BENCH_ROOT": root}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            label, cost = f"RedMetrics.export, {root}", float(child.stdout)
            best[label] = min(best.get(label, cost), cost)
        sdk = SdkReference(build_meter_provider([InMemoryMetricReader()]))
        red, _ = ours(1)
        red2, _ = ours(2)
        for name, export in (
            ("histograms: SDK record()", sdk.export),
            ("histograms: own, 1 reader", red._red.add),
            ("histograms: own, 2 readers", red2._red.add),
            ("RedMetrics.export, this tree", red.export),
        ):
            cost = per_exchange(export, items)
            best[name] = min(best.get(name, cost), cost)
    for name, cost in best.items():
        print(f"{name:40s} {cost * 1e6:7.2f} us/exchange  ({1 / cost:,.0f}/s)")
    red, readers = ours(1)
    red.export(items)
    series = sum(len(h.series) for h in red._red._histograms.values())
    start = time.process_time()
    data = readers[0].get_metrics_data()
    took = time.process_time() - start
    assert data is not None
    print(f"one collection of {series} series: {took * 1e3:.1f} ms CPU")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--root", default="", help="an earlier checkout: its RedMetrics.export, alternating")
    ap.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_only:
        print(export_only(args.records))
    else:
        main(args.rounds, args.records, args.root)
