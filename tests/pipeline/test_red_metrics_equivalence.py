"""The RED histograms l7scope aggregates itself export the points the OpenTelemetry SDK exported for the
same records: names, units, descriptions, attributes, Resources per service, bucket counts, sums (to the
bit), counts, min/max and exemplars, over several collections, cumulative and delta, one or two readers.

`SdkReference` is the previous per-exchange path (one `Histogram.record()` per histogram and exchange,
an exemplar context holding the record's span), kept in tests/support only as the reference."""

from __future__ import annotations

import dataclasses
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
    MetricsData,
)

from pipeline.health import Health
from pipeline.otlp import span_ids
from pipeline.red_aggregate import CARDINALITY_LIMIT
from pipeline.red_metrics import (
    DURATION_METRICS,
    INSTRUMENTS,
    OVERFLOW_SERVICE,
    RedMetrics,
    build_meter_provider,
    split_by_service,
)
from protocols.base import L7Record
from tests.support.sdk_red_metrics import DB_KEYS, SdkReference, records

RED = {i.name for i in INSTRUMENTS if i.kind == "histogram" and not i.name.startswith("l7scope.")}
DELTA = {Histogram: AggregationTemporality.DELTA}


# -- comparison ------------------------------------------------------------------------------------


def exact(x: Any) -> tuple[str, str]:
    return type(x).__name__, repr(x)  # floats to the bit, ints as ints


def flatten(data: MetricsData | None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The RED points by (Resource, scope, metric, attributes), after the OTLP split by service."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    if data is None:  # the SDK's collection when no instrument has a point
        return out
    for rm in split_by_service(data).resource_metrics:
        resource = tuple(sorted(rm.resource.attributes.items()))
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name not in RED:
                    continue
                for p in m.data.data_points:
                    key = (
                        resource,
                        sm.scope.name,
                        sm.scope.version,
                        m.name,
                        tuple(sorted(p.attributes.items())),
                    )
                    assert key not in out, key
                    assert p.start_time_unix_nano <= p.time_unix_nano
                    out[key] = {
                        "metric": (m.unit, m.description, type(m.data).__name__,
                                   m.data.aggregation_temporality),
                        "attributes": list(p.attributes.items()),  # order too
                        "count": p.count, "sum": exact(p.sum), "min": exact(p.min), "max": exact(p.max),
                        "buckets": tuple(p.bucket_counts), "bounds": tuple(p.explicit_bounds),
                        "exemplars": [
                            (e.filtered_attributes, exact(e.value), e.span_id, e.trace_id)
                            for e in p.exemplars
                        ],
                    }  # fmt: skip
    return out


def assert_same(ours: MetricsData | None, sdk: MetricsData | None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Both collections' RED points, which must be the same; returns them."""
    a, b = flatten(ours), flatten(sdk)
    assert sorted(a) == sorted(b)
    for key in b:
        assert a[key] == b[key], key
    return b


class Paths:
    """RedMetrics and the SDK reference, each on its own provider with the same kind of readers."""

    def __init__(
        self, temporalities: list[dict[type, AggregationTemporality] | None], exemplars: bool = True
    ):
        self.ours = [InMemoryMetricReader(preferred_temporality=t) for t in temporalities]
        self.sdk = [InMemoryMetricReader(preferred_temporality=t) for t in temporalities]
        self.red = RedMetrics(
            build_meter_provider(list[MetricReader](self.ours), exemplars=exemplars),
            Health(),
            exemplars=exemplars,
        )
        self.reference = SdkReference(
            build_meter_provider(list[MetricReader](self.sdk), exemplars=exemplars), exemplars
        )

    def export(self, batch: list[L7Record]) -> None:
        self.red.export(batch)
        self.reference.export(batch)

    def compare(self, reader: int) -> dict[tuple[Any, ...], dict[str, Any]]:
        return assert_same(self.ours[reader].get_metrics_data(), self.sdk[reader].get_metrics_data())


def batches(items: list[L7Record], size: int) -> Iterator[list[L7Record]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("temporality", [None, DELTA], ids=["cumulative", "delta"])
def test_same_points_as_the_sdk_over_several_collections(temporality: Any) -> None:
    paths = Paths([temporality])
    compared: list[dict[tuple[Any, ...], dict[str, Any]]] = []
    for n, batch in enumerate(batches(records(3000), 500)):
        paths.export(batch)
        if n % 2:  # collect after every other batch: folds across collections and empty intervals
            compared.append(paths.compare(0))
    paths.export(records(200, seed=8)[:100])
    compared.append(paths.compare(0))
    compared.append(paths.compare(0))  # nothing new: cumulative points again, no delta points
    assert len(compared[-1]) == (len(compared[-2]) if temporality is None else 0)
    # every kind of histogram took part, for several services, with errors, exemplars, min and max
    points = compared[0]
    assert len(points) > 100
    names = {key[3] for key in points}
    assert {*DURATION_METRICS, "http.server.request.body.size", "http.client.response.body.size"} <= names
    assert len({dict(key[0])["service.name"] for key in points}) >= 5
    assert any(("error.type", "503") in key[-1] for key in points)
    assert sum(len(p["exemplars"]) for p in points.values()) > 100


def test_same_points_with_two_readers_cumulative_and_delta_collected_at_different_times() -> None:
    paths = Paths([None, DELTA])
    for n, batch in enumerate(batches(records(2000, seed=3), 250)):
        paths.export(batch)
        assert paths.compare(n % 2)  # each reader its own intervals, sums and exemplars
    assert len(paths.compare(0)) > 100 and len(paths.compare(1)) == 0  # delta: none since its last


def test_same_points_without_exemplars() -> None:
    paths = Paths([None], exemplars=False)
    paths.export(records(1000, seed=5))
    points = paths.compare(0)
    assert len(points) > 100 and all(p["exemplars"] == [] for p in points.values())


def test_exemplars_are_the_last_record_per_bucket_with_its_span_ids() -> None:
    paths = Paths([None])
    batch = records(1500, seed=11)
    paths.export(batch)
    paths.compare(0)
    data = flatten(paths.ours[0].get_metrics_data())
    assert sum(len(p["exemplars"]) for p in data.values()) == 0  # taken by the first collection
    paths.export(batch[:1])
    (point,) = [p for p in flatten(paths.ours[0].get_metrics_data()).values() if p["exemplars"]]
    trace_id, span_id, _ = span_ids(batch[0])
    ((_, _, span, trace_),) = point["exemplars"]
    assert (span, trace_) == (int.from_bytes(span_id, "big"), int.from_bytes(trace_id, "big"))


def test_overflow_series_past_the_cardinality_limit_and_services_past_the_cap() -> None:
    """Past CARDINALITY_LIMIT attribute sets a histogram gets one `otel.metric.overflow` series (whose
        exemplars keep the attributes), as in the SDK; past `max_services`, the overflow service. Lookup keys
    past `max_groups` are not remembered (a new value per record must not grow memory) and still count."""
    base = records(1, seed=1)[0]
    many = [
        dataclasses.replace(
            base, metric="db.client.operation.duration",
            attributes={"db.namespace": f"n{i}", "db.system.name": "m"},
            metric_attributes=DB_KEYS, record_id=f"o/{i}", start_ns=0, end_ns=i * 1000,
            conn=dataclasses.replace(base.conn, process=f"p{i % 300}", service="", k8s_container=""),
        )
        for i in range(CARDINALITY_LIMIT + 150)
    ]  # fmt: skip
    ours = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([ours]), Health(), max_services=256)
    red._red.max_groups = 1000  # lookup keys remembered: the rest take the slow path, to the same series
    sdk = InMemoryMetricReader()
    reference = SdkReference(build_meter_provider([sdk]), max_services=256)
    red.export(many)
    reference.export(many)
    points = assert_same(ours.get_metrics_data(), sdk.get_metrics_data())
    assert len(points) == CARDINALITY_LIMIT + 1
    (overflow,) = [p for key, p in points.items() if ("otel.metric.overflow", True) in key[-1]]
    assert overflow["count"] == 150 and overflow["exemplars"][0][0]["db.namespace"] == f"n{len(many) - 1}"
    assert any(dict(key[0]).get("service.name") == OVERFLOW_SERVICE for key in points)
    assert len(red._red._groups) == 1000  # bounded, however many attribute values come


def test_same_prometheus_exposition() -> None:
    """The two paths scraped from real `/metrics` endpoints: the same RED lines, to the character."""
    from pipeline.prometheus import PrometheusEndpoint

    def scrape(endpoint: PrometheusEndpoint) -> list[str]:
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return sorted(line for line in text.splitlines() if line.startswith(("http_", "rpc_", "db_")))

    ours, sdk = PrometheusEndpoint("127.0.0.1:0"), PrometheusEndpoint("127.0.0.1:0")
    red = RedMetrics(build_meter_provider([ours.reader]), Health())
    provider = build_meter_provider([sdk.reader])
    reference = SdkReference(provider)
    try:
        for batch in batches(records(600, seed=13), 200):
            red.export(batch)
            reference.export(batch)
            lines = scrape(ours)
            assert lines == scrape(sdk) and len(lines) > 1000
        assert any(line.startswith("http_server_request_duration_seconds_bucket{") for line in lines)
        assert any('le="+Inf"' in line for line in lines) and any("_sum{" in line for line in lines)
    finally:
        red.close()  # shuts its reader and endpoint down
        provider.shutdown()
