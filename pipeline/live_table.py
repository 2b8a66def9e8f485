"""The live per-endpoint table of `l7scope run`: requests, errors and latency percentiles."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from protocols.base import L7Record

EndpointKey = tuple[str, str, str, str]  # service, protocol, role, name
ROW = "{:<16} {:<6} {:<6} {:<40} {:>7} {:>5} {:>8} {:>8}"


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))  # the latest ones

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class LiveTable:
    def __init__(self) -> None:
        self.endpoints: dict[EndpointKey, EndpointStats] = {}

    def export(self, records: list[L7Record]) -> None:
        for r in records:
            key = (r.conn.process or "?", r.protocol, r.role.name.lower(), r.name)
            stats = self.endpoints.get(key)
            if stats is None:
                stats = self.endpoints[key] = EndpointStats()
            stats.requests += 1
            stats.errors += r.error
            stats.latencies_ms.append(r.duration_s * 1000)

    def close(self) -> None:
        pass

    def render(self, limit: int = 25, footer: str = "") -> str:
        rows = sorted(self.endpoints.items(), key=lambda kv: -kv[1].requests)[:limit]
        lines = [ROW.format("SERVICE", "PROTO", "ROLE", "ENDPOINT", "REQS", "ERR", "P50 ms", "P99 ms")]
        for (service, proto, role, name), st in rows:
            p50, p99 = f"{st.percentile(0.5):.2f}", f"{st.percentile(0.99):.2f}"
            lines.append(ROW.format(service[:16], proto, role, name[:40], st.requests, st.errors, p50, p99))
        if not rows:
            lines.append("(waiting for traffic: HTTP/1.1, HTTP/2, gRPC and MySQL on any TCP connection)")
        if footer:
            lines.append(footer)
        return "\n".join(lines)
