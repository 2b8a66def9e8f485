"""Alert rules from YAML: validated into frozen dataclasses, every problem named by key with its fix.

evaluation_interval: 2s
resend_interval: 30s
rules:
  - alert: CheckoutSlow
    match: {service: "checkout*", protocol: http, role: server, name: "GET /cart*"}
    latency: {percentile: 90, above_ms: 100}      # or error_ratio: {above: 0.05}
    window: 5m                                     # or burn_rate: {slo: 0.999, windows: [...]}
    for: 1m
    labels: {severity: page}
    annotations: {summary: "{service} p90 is {value_text}"}
"""

from __future__ import annotations

import fnmatch
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l7scope.config import ConfigError
from protocols.base import L7Record, service_name

KINDS = ("latency", "error_ratio", "burn_rate")
GROUP_FIELDS = ("service", "protocol", "role", "name", "node")
TEMPLATE_KEYS = frozenset(
    {"alertname", "service", "value", "value_text", "threshold", "threshold_text", "window",
     "requests", "percentile", "root_cause", *GROUP_FIELDS}
)  # fmt: skip
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class RulesError(ConfigError):
    """The rules file has problems; `errors` holds one line per problem."""

    def __init__(self, path: str, errors: list[str]) -> None:
        super().__init__(f"alert rules {path}: " + "; ".join(errors))
        self.errors = errors


def _glob(pattern: str) -> re.Pattern[str] | None:
    return re.compile(fnmatch.translate(pattern)) if pattern else None


@dataclass(frozen=True, slots=True)
class Match:
    """Glob patterns on the record's service (service.name), protocol, role and name, and attributes."""

    service: str = ""
    protocol: str = ""
    role: str = ""
    name: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, service: str, protocol: str, role: str, name: str, attrs: dict[str, str]) -> Match:
        fields = {"service": service, "protocol": protocol, "role": role, "name": name}
        compiled = [(k, p) for k, v in fields.items() if (p := _glob(v)) is not None]
        compiled += [("attributes." + k, re.compile(fnmatch.translate(v))) for k, v in attrs.items()]
        return cls(service, protocol, role, name, tuple(attrs.items()), tuple(compiled))

    def matches(self, r: L7Record) -> bool:
        return all(pattern.match(field_value(r, key)) for key, pattern in self._compiled)


def field_value(r: L7Record, key: str) -> str:
    if key == "service":
        return service_name(r.conn)  # service.name as spans and metrics carry it
    if key == "role":
        return r.role.name.lower()
    if key == "node":
        return r.conn.node
    if key in ("protocol", "name"):
        return str(getattr(r, key))
    value = r.attributes.get(key.removeprefix("attributes."))
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class BurnWindow:
    long_s: float
    short_s: float
    factor: float  # the burn rate both windows must exceed


@dataclass(frozen=True, slots=True)
class Rule:
    alert: str
    kind: str  # one of KINDS
    match: Match
    group_by: tuple[str, ...] = ("service",)  # "service" always first
    window_s: float = 300.0
    for_s: float = 0.0
    min_requests: int = 1
    percentile: float = 99.0  # latency
    threshold: float = 0.0  # latency: milliseconds; error_ratio: a ratio in [0, 1)
    slo: float = 0.0  # burn_rate: the target share of good requests
    burn_windows: tuple[BurnWindow, ...] = ()
    slow_ms: float = 0.0  # burn_rate: a request slower than this is bad too (0: errors only)
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def horizon_s(self) -> float:
        """The longest window this rule looks at."""
        return max(w.long_s for w in self.burn_windows) if self.burn_windows else self.window_s

    @property
    def shortest_s(self) -> float:
        return min(w.short_s for w in self.burn_windows) if self.burn_windows else self.window_s


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    evaluation_interval_s: float = 2.0
    resend_interval_s: float = 30.0


def parse_duration(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    m = _DURATION.match(str(value).strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


class _Checker:
    """Collects problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def duration(self, key: str, value: Any, default: float, positive: bool = True) -> float:
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None or (positive and seconds <= 0):
            self.fail(key, f"{value!r} is not a duration: write e.g. 500ms, 30s, 5m or 1h")
            return default
        return seconds

    def number(self, key: str, value: Any, low: float, high: float, hint: str) -> float:
        if value is None:
            self.fail(key, f"missing: {hint}")
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
            self.fail(key, f"{value!r} is not a number between {low:g} and {high:g} (exclusive): {hint}")
            return 0.0
        return float(value)

    def mapping(self, key: str, value: Any, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping (key: value), got {type(value).__name__}")
            return {}
        for k in value:
            if allowed is not None and k not in allowed:
                self.fail(f"{key}.{k}", f"unknown key: use {', '.join(allowed)}")
        return value

    def strings(self, key: str, value: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.mapping(key, value).items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                self.fail(f"{key}.{k}", f"{v!r} must be a string: quote it")
            else:
                out[str(k)] = str(v)
        return out


RULE_KEYS = (
    "alert", "match", "group_by", "latency", "error_ratio", "burn_rate", "window", "for",
    "min_requests", "labels", "annotations",
)  # fmt: skip


def _rule(c: _Checker, key: str, raw: Any, seen: set[str]) -> Rule | None:
    if not isinstance(raw, dict):
        c.fail(key, "each rule is a mapping with alert: and one of latency/error_ratio/burn_rate")
        return None
    alert = raw.get("alert")
    if not isinstance(alert, str) or not _LABEL.match(alert):
        c.fail(f"{key}.alert", f"{alert!r}: give a name of letters, digits and _ (e.g. CheckoutSlow)")
        alert = "invalid"
    elif alert in seen:
        c.fail(f"{key}.alert", f"{alert!r} is used twice: alert names must be unique")
    seen.add(alert)
    key = f"{key} ({alert})"
    c.mapping(key, raw, RULE_KEYS)
    m = c.mapping(f"{key}.match", raw.get("match"), ("service", "protocol", "role", "name", "attributes"))
    for k in ("service", "protocol", "role", "name"):
        if k in m and not isinstance(m[k], str):
            c.fail(f"{key}.match.{k}", f"{m[k]!r} must be a string (a glob such as 'checkout*'): quote it")
    if isinstance(m.get("role"), str) and m["role"] not in ("", "client", "server", "unknown"):
        c.fail(f"{key}.match.role", f"{m['role']!r}: use client or server")
    texts = ("service", "protocol", "role", "name")
    service, protocol, role, name = (v if isinstance(v := m.get(k), str) else "" for k in texts)
    match = Match.build(
        service, protocol, role, name, c.strings(f"{key}.match.attributes", m.get("attributes"))
    )
    kinds = [k for k in KINDS if k in raw]
    if len(kinds) != 1:
        c.fail(key, f"give exactly one of {', '.join(KINDS)} (found {', '.join(kinds) or 'none'})")
        return None
    kind = kinds[0]
    spec = c.mapping(f"{key}.{kind}", raw[kind], {
        "latency": ("percentile", "above_ms"), "error_ratio": ("above",),
        "burn_rate": ("slo", "windows", "slow_ms"),
    }[kind])  # fmt: skip
    values: dict[str, Any] = {}
    if kind == "latency":
        values["percentile"] = c.number(f"{key}.latency.percentile", spec.get("percentile"), 0, 100,
                                        "e.g. 90 for p90")  # fmt: skip
        values["threshold"] = c.number(f"{key}.latency.above_ms", spec.get("above_ms"), 0, 1e9,
                                       "milliseconds, e.g. 250")  # fmt: skip
    elif kind == "error_ratio":
        values["threshold"] = c.number(f"{key}.error_ratio.above", spec.get("above"), 0, 1,
                                       "a ratio, e.g. 0.05 for 5%")  # fmt: skip
    else:
        values["slo"] = c.number(f"{key}.burn_rate.slo", spec.get("slo"), 0, 1, "e.g. 0.999 for 99.9%")
        if "slow_ms" in spec:
            values["slow_ms"] = c.number(f"{key}.burn_rate.slow_ms", spec["slow_ms"], 0, 1e9,
                                         "requests slower than this count as bad")  # fmt: skip
        values["burn_windows"] = _burn_windows(c, f"{key}.burn_rate.windows", spec.get("windows"))
    window = c.duration(f"{key}.window", raw.get("window"), 300.0)
    if kind != "burn_rate" and "window" not in raw:
        c.fail(f"{key}.window", "missing: say over how long, e.g. window: 5m")
    group_by = raw.get("group_by", [])
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        c.fail(f"{key}.group_by", f"{group_by!r}: a list such as [name] or [name, http.route]")
        group_by = []
    min_requests = raw.get("min_requests", 1)
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 1:
        c.fail(f"{key}.min_requests", f"{min_requests!r}: a whole number >= 1")
        min_requests = 1
    labels = c.strings(f"{key}.labels", raw.get("labels"))
    for name in labels:
        if not _LABEL.match(name):
            c.fail(f"{key}.labels.{name}", "label names are letters, digits and _ (Alertmanager rule)")
    annotations = c.strings(f"{key}.annotations", raw.get("annotations"))
    for name, text in annotations.items():
        unknown = _unknown_placeholders(text)
        if unknown:
            c.fail(f"{key}.annotations.{name}", f"unknown placeholder {{{unknown}}}: use "
                   + ", ".join("{" + k + "}" for k in sorted(TEMPLATE_KEYS)))  # fmt: skip
    return Rule(
        alert=alert, kind=kind, match=match,
        group_by=("service", *(g for g in group_by if g != "service")),
        window_s=window, for_s=c.duration(f"{key}.for", raw.get("for"), 0.0, positive=False),
        min_requests=min_requests, labels=tuple(labels.items()), annotations=tuple(annotations.items()),
        **values,
    )  # fmt: skip


def _unknown_placeholders(text: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError:
        return "unbalanced braces (write {{ for a literal brace)"
    bad = [f for f in fields if f.split(":")[0].split("!")[0] not in TEMPLATE_KEYS]
    return bad[0] if bad else ""


def _burn_windows(c: _Checker, key: str, raw: Any) -> tuple[BurnWindow, ...]:
    if not isinstance(raw, list) or not raw:
        c.fail(key, "a list of {long: 1h, short: 5m, factor: 14.4} entries")
        return ()
    out = []
    for i, w in enumerate(raw):
        wk = f"{key}[{i}]"
        w = c.mapping(wk, w, ("long", "short", "factor"))
        long_s = c.duration(f"{wk}.long", w.get("long"), 3600.0)
        short_s = c.duration(f"{wk}.short", w.get("short"), 300.0)
        if "long" not in w or "short" not in w:
            c.fail(wk, "needs long: and short: windows, e.g. {long: 1h, short: 5m, factor: 14.4}")
        elif short_s >= long_s:
            c.fail(f"{wk}.short", f"must be shorter than long ({short_s:g}s >= {long_s:g}s)")
        factor = c.number(f"{wk}.factor", w.get("factor"), 0, 1e6, "a burn rate such as 14.4")
        out.append(BurnWindow(long_s, short_s, factor))
    return tuple(out)


def parse_rules(text: str, path: str = "<rules>") -> tuple[RuleSet | None, list[str]]:
    c = _Checker()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        return None, [f"{where}: not valid YAML ({getattr(e, 'problem', e)}): fix the syntax"]
    if not isinstance(doc, dict):
        return None, ["top level: must be a mapping with a rules: list"]
    c.mapping("top level", doc, ("rules", "evaluation_interval", "resend_interval"))
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        c.fail("rules", "missing or empty: give a list of rules (see deploy/alerts.example.yaml)")
        raw_rules = []
    seen: set[str] = set()
    rules = [r for i, raw in enumerate(raw_rules) if (r := _rule(c, f"rules[{i}]", raw, seen)) is not None]
    ruleset = RuleSet(
        tuple(rules),
        c.duration("evaluation_interval", doc.get("evaluation_interval"), 2.0),
        c.duration("resend_interval", doc.get("resend_interval"), 30.0),
    )
    return (None if c.errors else ruleset), c.errors


def check_rules(path: str) -> list[str]:
    """Every problem in the file, one line each (empty when the file is good)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        return [f"{path}: cannot read ({e.strerror}): check the path"]
    return parse_rules(text, path)[1]


def load_rules(path: str) -> RuleSet:
    errors = check_rules(path)
    if errors:
        raise RulesError(path, errors)
    ruleset, _ = parse_rules(Path(path).read_text(encoding="utf-8"), path)
    assert ruleset is not None
    return ruleset
