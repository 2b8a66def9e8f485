"""Counters of everything the pipeline skipped, dropped or could not parse: nothing is lost silently."""

from __future__ import annotations

import threading
from collections import Counter


class Health:
    """Named counters with a protocol (or stage) label and an optional reason; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def count(self, name: str, label: str = "", n: int = 1, reason: str = "") -> None:
        if n:
            with self._lock:
                self._counts[(name, label, reason)] += n

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, name: str) -> int:
        with self._lock:
            return sum(v for (k, _, _), v in self._counts.items() if k == name)
