"""deploy/grafana/l7scope.json: well-formed, covers RED and capture health, and references only
metrics l7scope emits (instrument names from pipeline/red_metrics.py, converted to Prometheus names)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "l7scope.json"
# PromQL words that look like metric names but are functions, keywords or label matchers.
PROMQL_WORDS = {
    "sum", "by", "rate", "histogram_quantile", "le", "without", "avg", "max", "min", "count", "irate",
    "increase", "label_values", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "topk",
}  # fmt: skip
UNIT_SUFFIX = {"s": "_seconds", "ms": "_milliseconds", "By": "_bytes", "1": "_ratio"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return exprs + [v["definition"] for v in dash["templating"]["list"] if "definition" in v]


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that are metric names (not functions, labels or variables)."""
    expr = re.sub(r"label_values\(([^,)]*),[^)]*\)", r"\1", expr)  # the second argument is a label
    without_matchers = re.sub(r"\{[^}]*\}", "", expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_matchers)
    without_strings = re.sub(r'"[^"]*"', "", without_ranges)
    names = set()
    for m in re.finditer(r"(?<![\w$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", without_strings):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    # label names inside by (...) clauses are not metrics
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", without_strings):
        names -= {x.strip() for x in clause.split(",")}
    return names


def prometheus_names(instruments: Iterable[Any]) -> set[str]:
    """OpenTelemetry instrument -> Prometheus series names (dots -> underscores, unit, _total, buckets)."""
    out: set[str] = set()
    for inst in instruments:
        name = inst if isinstance(inst, str) else inst.name
        unit = "" if isinstance(inst, str) else getattr(inst, "unit", "")
        kind = "" if isinstance(inst, str) else str(getattr(inst, "kind", "")).lower()
        base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
        suffix = UNIT_SUFFIX.get(unit, "")
        if suffix and not base.endswith(suffix):
            base += suffix
        if "histogram" in kind:
            out |= {base + s for s in ("_bucket", "_count", "_sum")}
        elif "counter" in kind and "updown" not in kind:
            out.add(base if base.endswith("_total") else base + "_total")
        elif kind:
            out.add(base)
        else:  # a bare name: any of its Prometheus forms
            out |= {base, base + "_total", *(base + s for s in ("_bucket", "_count", "_sum"))}
    return out


def emitted_instruments() -> list[Any]:
    try:
        module = importlib.import_module("pipeline.red_metrics")
    except ImportError:
        pytest.skip("pipeline/red_metrics.py is not in this checkout yet: nothing to compare against")
    for attr in ("INSTRUMENTS", "METRICS", "INSTRUMENT_NAMES", "METRIC_NAMES"):
        found = getattr(module, attr, None)
        if found:
            return list(found.values() if isinstance(found, dict) else found)
    # red_metrics is being written alongside: until it exposes its instruments, say so (not a pass).
    pytest.skip("pipeline/red_metrics.py exposes no INSTRUMENTS list of (name, kind, unit) to check against")


def test_dashboard_is_well_formed() -> None:
    dash = load()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_dashboard_covers_red_and_capture_health() -> None:
    exprs = " ".join(expressions(load()))
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "_count" in exprs and "error_type" in exprs  # rate and errors from the duration histograms
    for health in ("dropped", "truncated", "parse_errors", "gaps", "lag"):
        assert health in exprs, health


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, svc) (rate(http_x_seconds_bucket{a="b"}[$__rate_interval])))'
    assert metric_names(expr) == {"http_x_seconds_bucket"}
    assert prometheus_names(["http.server.request.duration"]) >= {"http_server_request_duration_bucket"}


def test_dashboard_references_only_emitted_metrics() -> None:
    emitted = prometheus_names(emitted_instruments())
    used = set().union(*(metric_names(e) for e in expressions(load())))
    assert used, "no metric names found in the dashboard"
    assert used <= emitted, f"not emitted by l7scope: {sorted(used - emitted)}"
