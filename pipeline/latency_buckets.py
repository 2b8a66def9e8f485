"""Log-bucketed latency counts (5% resolution), as the alert windows and the call history keep them."""

from __future__ import annotations

import math
from collections import Counter

BUCKET_BASE = 1.05  # latency histogram resolution: 5%


def bucket_of(ms: float) -> int:
    return math.ceil(math.log(max(ms * 1000.0, 1.0), BUCKET_BASE))


def bucket_value_ms(bucket: int) -> float:
    """The geometric middle of a bucket, in milliseconds."""
    middle: float = BUCKET_BASE ** (bucket - 0.5)
    return middle / 1000.0


def percentile_ms(latency: Counter[int], q: float) -> float:
    """The `q` quantile (0..1) of bucketed latencies, in milliseconds; 0 when there are none."""
    total = sum(latency.values())
    rank, seen = max(1, math.ceil(q * total)), 0
    for bucket in sorted(latency):
        seen += latency[bucket]
        if seen >= rank:
            return bucket_value_ms(bucket)
    return 0.0
