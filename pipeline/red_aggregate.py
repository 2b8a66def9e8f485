"""RED histograms aggregated in plain structures; OpenTelemetry points built only at collection time.

Recording a histogram through the OpenTelemetry SDK costs ~3 us plus ~1 us per attribute per call,
three calls per HTTP exchange (duration, request and response body sizes). Here one exchange is one
dict lookup (metric, service, metric attribute values, error type), one bisect per histogram and a
few list increments; the SDK's point objects (`HistogramDataPoint`, `Metric`) are made once per
collection, per series, for the reader that collects.

Export: the SDK's readers (periodic OTLP, Prometheus, in-memory) stay as they are. `RedMetrics`
hands each reader a collect callback that returns the SDK's own collection (health counters, the
service graph) with these histograms added to l7scope's scope (`merge`), so the OTLP and Prometheus
exporters, `split_by_service` and the wire formats are unchanged. (The SDK has no observable
histogram to feed aggregates through its instruments, and encoding OTLP directly would need a second
Prometheus path too.)

The points equal the SDK's for the same measurements (tests/pipeline/test_red_metrics_equivalence.py
checks them against the SDK): the same explicit-bucket histograms with min and max, kept per reader as
the SDK does (each reader has its own aggregation: its own interval, its own temporality, cumulative
sums folded at each of its collections, so the floating-point sums are bit-identical); one exemplar
per bucket, the last measurement since that reader's last collection (the SDK's aligned-histogram
reservoir); at most `CARDINALITY_LIMIT` attribute sets per histogram, the rest in one
`otel.metric.overflow` series. Differences left: under delta temporality the SDK applies the limit
per collection interval, this over the process's life; attribute values Python holds equal but of
other types (1, 1.0, True) under the same key share a series here (parsers emit one type per key).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import time_ns
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from pipeline.otlp import record_span_ids
from protocols.base import AttrValue, ConnInfo, L7Record

CARDINALITY_LIMIT = 2000  # the SDK's default per instrument and reader
OVERFLOW_ATTRIBUTES: dict[str, AttrValue] = {"otel.metric.overflow": True}

Attrs = dict[str, AttrValue]
# (seq, value, time_unix_nano, record_id, trace_id, measurement attributes): ids hashed at collection
Slot = tuple[int, float, int, str, str, Attrs]


class _Interval:
    """One series as one reader sees it: what came since its last collection, and the fold before."""

    __slots__ = (
        "buckets",
        "max",
        "min",
        "prev_buckets",
        "prev_max",
        "prev_min",
        "prev_sum",
        "start_ns",
        "sum",
    )

    def __init__(self, size: int, start_ns: int) -> None:
        self.buckets = [0] * size
        self.sum: float = 0
        self.min: float = math.inf
        self.max: float = -math.inf
        self.prev_buckets = [0] * size
        self.prev_sum: float = 0
        self.prev_min: float = math.inf
        self.prev_max: float = -math.inf
        self.start_ns = start_ns  # delta: the start of the interval now accumulating


class _Series:
    """One histogram, one attribute set: per-reader intervals and the exemplar slots they share."""

    __slots__ = ("attributes", "bounds", "readers", "slots", "start_ns")

    def __init__(self, attributes: Attrs, bounds: tuple[float, ...], starts: Sequence[int], now: int) -> None:
        self.attributes = attributes
        self.bounds = bounds
        self.readers = [_Interval(len(bounds) + 1, s) for s in starts]
        self.slots: list[Slot | None] = [None] * (len(bounds) + 1)
        self.start_ns = now

    def put(self, value: float) -> int:
        i = bisect_left(self.bounds, value)
        for r in self.readers:
            r.buckets[i] += 1
            r.sum += value
            if value < r.min:
                r.min = value
            if value > r.max:
                r.max = value
        return i


@dataclass
class _Histogram:
    """One instrument: its series in creation order, and when each reader last collected it."""

    name: str
    unit: str
    description: str
    bounds: tuple[float, ...]
    series: dict[tuple[tuple[str, str, Any], ...], _Series] = field(default_factory=dict)
    collected_ns: list[int | None] = field(default_factory=list)  # per reader; delta starts from it


# A record's group: its attributes, its duration series, and per body size [attribute key, metric, series
# once recorded]. The attributes are the measurement's (an overflow series has other ones).
_Group = tuple[Attrs, _Series, list[list[Any]]]


def _canonical(attrs: Attrs) -> tuple[tuple[str, str, Any], ...]:
    """The SDK's notion of one attribute set: keys in any order, values of distinct types distinct."""
    return tuple(sorted((k, type(v).__name__, v) for k, v in attrs.items()))


@dataclass
class RedAggregator:
    """Duration and body-size histograms per (metric, attribute set), for `readers` readers.

    `service` maps a connection to its (service.name, host.name) pair (RedMetrics caps their number);
    `attributes` gives a record's metric attributes (without the service); `buckets` a metric's bounds;
    `sizes` a duration metric's (attribute key, body-size metric) pairs; `describe` a metric's text.
    """

    readers: int
    service: Callable[[ConnInfo], tuple[str, str]]
    attributes: Callable[[L7Record], Attrs]
    buckets: Callable[[str], tuple[float, ...]]
    sizes: Callable[[str], tuple[tuple[str, str], ...]]
    describe: Callable[[str], str]
    size_buckets: tuple[float, ...] = ()
    exemplars: bool = True
    limit: int = CARDINALITY_LIMIT
    max_groups: int = 16384  # records' lookup keys remembered; past it a new key takes the slow path

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._histograms: dict[str, _Histogram] = {}
        self._seq = 0  # batches added: exemplar slots newer than a reader's last collection are its own
        self._collected_seq = [0] * self.readers

    # -- per record --------------------------------------------------------------------------------

    def add(self, records: Iterable[L7Record]) -> None:
        exemplars = self.exemplars
        groups = self._groups
        with self._lock:
            self._seq += 1
            seq = self._seq
            for r in records:
                svc = self.service(r.conn)
                attrs = r.attributes
                key = (r.metric, svc, r.metric_attributes, r.error_type, *map(attrs.get, r.metric_attributes))
                group = groups.get(key)
                if group is None:
                    group = self._group(r, svc)
                    if len(groups) < self.max_groups:  # bounded: values past the series limit keep coming
                        groups[key] = group
                measured, duration, sizes = group
                elapsed = r.end_ns - r.start_ns
                value = (elapsed if elapsed > 0 else 0) / 1e9  # L7Record.duration_s, inlined
                i = duration.put(value)
                if exemplars:
                    duration.slots[i] = (seq, value, time_ns(), r.record_id, r.trace_id, measured)
                for size in sizes:
                    n = attrs.get(size[0])
                    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                        series = size[2]
                        if series is None:
                            series = size[2] = self._series(size[1], "By", measured)
                        series.put(n)  # no exemplars on body sizes (as before: they cost)

    def _group(self, r: L7Record, svc: tuple[str, str]) -> _Group:
        attrs: Attrs = {"service.name": svc[0], "host.name": svc[1], **self.attributes(r)}
        return (
            attrs,
            self._series(r.metric, "s", attrs),
            [[key, name, None] for key, name in self.sizes(r.metric)],
        )

    def _series(self, name: str, unit: str, attrs: Attrs) -> _Series:
        now = time_ns()
        hist = self._histograms.get(name)
        if hist is None:
            bounds = self.buckets(name) if unit == "s" else self.size_buckets
            hist = _Histogram(name, unit, self.describe(name), bounds, collected_ns=[None] * self.readers)
            self._histograms[name] = hist
        canonical = _canonical(attrs)
        series = hist.series.get(canonical)
        if series is None:
            if len(hist.series) >= self.limit:  # the rest share one series, as in the SDK
                canonical = _canonical(OVERFLOW_ATTRIBUTES)
                series = hist.series.get(canonical)
                if series is not None:
                    return series
                attrs = dict(OVERFLOW_ATTRIBUTES)
            starts = [now if c is None else c for c in hist.collected_ns]
            series = hist.series[canonical] = _Series(attrs, hist.bounds, starts, now)
        return series

    # -- per collection ----------------------------------------------------------------------------

    def collect(self, reader: int, temporality: AggregationTemporality) -> list[Metric]:
        """The histograms as reader number `reader` sees them now; its interval starts again."""
        delta = temporality is AggregationTemporality.DELTA
        with self._lock:
            now = time_ns()
            since, self._collected_seq[reader] = self._collected_seq[reader], self._seq
            metrics = []
            for hist in self._histograms.values():
                hist.collected_ns[reader] = now
                points = [
                    p
                    for p in (_point(s, s.readers[reader], since, now, delta) for s in hist.series.values())
                    if p is not None
                ]
                if points:
                    data = Histogram(data_points=points, aggregation_temporality=temporality)
                    metrics.append(Metric(hist.name, hist.description, hist.unit, data))
        return metrics


def _exemplars(series: _Series, since: int) -> list[Exemplar]:
    """The last measurement per bucket since the reader's last collection, with its span's ids."""
    out = []
    for slot in series.slots:
        if slot is None or slot[0] <= since:
            continue
        _, value, t, record_id, trace_id, attrs = slot
        trace, span = record_span_ids(record_id, trace_id)
        kept = {k: v for k, v in attrs.items() if k not in series.attributes} if attrs else None
        out.append(Exemplar(kept, value, t, int.from_bytes(span, "big"), int.from_bytes(trace, "big")))
    return out


def _point(s: _Series, r: _Interval, since: int, now: int, delta: bool) -> HistogramDataPoint | None:
    """The SDK's explicit-bucket collection of one reader's interval (cumulative folds it in)."""
    buckets, sum_, min_, max_ = r.buckets, r.sum, r.min, r.max
    empty = not any(buckets)
    r.buckets, r.sum, r.min, r.max = [0] * len(buckets), 0, math.inf, -math.inf
    if delta:
        start, r.start_ns = r.start_ns, now
        if empty:
            return None
        return HistogramDataPoint(
            attributes=s.attributes, start_time_unix_nano=start, time_unix_nano=now, count=sum(buckets),
            sum=sum_, bucket_counts=tuple(buckets), explicit_bounds=s.bounds, min=min_, max=max_,
            exemplars=_exemplars(s, since),
        )  # fmt: skip
    r.prev_buckets = [a + b for a, b in zip(buckets, r.prev_buckets, strict=True)]
    r.prev_min, r.prev_max, r.prev_sum = min(min_, r.prev_min), max(max_, r.prev_max), sum_ + r.prev_sum
    return HistogramDataPoint(
        attributes=s.attributes, start_time_unix_nano=s.start_ns, time_unix_nano=now,
        count=sum(r.prev_buckets), sum=r.prev_sum, bucket_counts=tuple(r.prev_buckets),
        explicit_bounds=s.bounds, min=r.prev_min, max=r.prev_max, exemplars=_exemplars(s, since),
    )  # fmt: skip
