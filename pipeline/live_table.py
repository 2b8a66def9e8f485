"""The per-endpoint RED table shared by `l7scope run` (printed) and `l7scope top` (curses).

An exporter: records in, per (service, protocol, role, endpoint) counts, a sliding window of
per-second buckets for rates, and the latest latencies for percentiles. Safe across threads: the
pipeline exports while the terminal view reads rows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.exporter import Exporter
from protocols.base import L7Record, service_name

EndpointKey = tuple[str, str, str, str]  # service, protocol, role, name
ROW = "{:<16} {:<8} {:<6} {:<38} {:>7} {:>5} {:>8} {:>8}"
WINDOW_S = 10  # rates and error % are over the last this many seconds


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))  # the latest ones
    buckets: deque[list[int]] = field(default_factory=deque)  # [second, requests, errors], oldest first

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def add(self, second: int, error: bool, latency_ms: float) -> None:
        self.requests += 1
        self.errors += error
        self.latencies_ms.append(latency_ms)
        if not self.buckets or self.buckets[-1][0] != second:
            self.buckets.append([second, 0, 0])
        self.buckets[-1][1] += 1
        self.buckets[-1][2] += error

    def window(self, now: int, seconds: int) -> tuple[int, int]:
        """(requests, errors) in the last `seconds` whole seconds, dropping older buckets."""
        while self.buckets and self.buckets[0][0] <= now - seconds:
            self.buckets.popleft()
        return sum(b[1] for b in self.buckets), sum(b[2] for b in self.buckets)


@dataclass(frozen=True, slots=True)
class Row:
    service: str
    protocol: str
    role: str
    name: str
    requests: int  # since start
    errors: int  # since start
    rate: float  # requests per second over the window
    error_pct: float  # over the window, or since start when the window is empty
    p50_ms: float
    p90_ms: float
    p99_ms: float


SORT_KEYS: dict[str, Callable[[Row], tuple[float, ...]]] = {
    "rate": lambda r: (-r.rate, -r.requests),
    "errors": lambda r: (-r.error_pct, -r.errors, -r.rate),
    "latency": lambda r: (-r.p99_ms, -r.p50_ms),
    "requests": lambda r: (-r.requests,),
}


class LiveTable(Exporter):
    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: int = WINDOW_S) -> None:
        self.endpoints: dict[EndpointKey, EndpointStats] = {}
        self._clock = clock
        self._started = clock()
        self._window_s = window_s
        self._lock = threading.Lock()

    def export(self, records: list[L7Record]) -> None:
        second = int(self._clock())
        with self._lock:
            for r in records:
                key = (service_name(r.conn), r.protocol, r.role.name.lower(), r.name)
                stats = self.endpoints.get(key)
                if stats is None:
                    stats = self.endpoints[key] = EndpointStats()
                stats.add(second, r.error, r.duration_s * 1000)

    def close(self) -> None:
        pass

    def rows(self, sort: str = "requests", limit: int | None = None) -> list[Row]:
        now = self._clock()
        span = max(1.0, min(float(self._window_s), now - self._started))
        out = []
        with self._lock:
            for (service, proto, role, name), st in self.endpoints.items():
                reqs, errs = st.window(int(now), self._window_s)
                error_pct = 100.0 * (errs / reqs if reqs else st.errors / st.requests if st.requests else 0)
                out.append(
                    Row(service, proto, role, name, st.requests, st.errors, reqs / span, error_pct,
                        st.percentile(0.5), st.percentile(0.9), st.percentile(0.99))
                )  # fmt: skip
        out.sort(key=SORT_KEYS[sort])
        return out[:limit] if limit is not None else out

    def render(self, limit: int = 25, footer: str = "") -> str:
        rows = self.rows("requests", limit)
        lines = [ROW.format("SERVICE", "PROTO", "ROLE", "ENDPOINT", "REQS", "ERR", "P50 ms", "P99 ms")]
        for r in rows:
            p50, p99 = f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"
            lines.append(
                ROW.format(
                    r.service[:16], r.protocol[:8], r.role, r.name[:38], r.requests, r.errors, p50, p99
                )
            )
        if not rows:
            lines.append(
                "(waiting for traffic: HTTP/1.1, HTTP/2, gRPC, MySQL and Redis on any TCP connection)"
            )
        if footer:
            lines.append(footer)
        return "\n".join(lines)
