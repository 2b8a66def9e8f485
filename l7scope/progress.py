"""A one-line progress bar on a terminal (stderr), for long replays; silent when not a TTY."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

_WIDTH = 30


class ProgressBar:
    """`bar(done, total)` redraws at most every `interval` seconds; `bar.close()` ends the line."""

    def __init__(
        self, out: IO[str], interval: float = 0.2, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out
        self.enabled = out.isatty()
        self.interval = interval
        self.clock = clock
        self._start = clock()
        self._last = -interval
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if not self.enabled or (now - self._last < self.interval and done < total):
            return
        self._last = now
        self.out.write("\r" + render(done, total, now - self._start))
        self.out.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()


def render(done: int, total: int, elapsed: float) -> str:
    """`[#########.....]  62%  31.0/50.0 MB  12.4 MB/s` (a line that fits 80 columns)."""
    frac = min(1.0, done / total) if total > 0 else 1.0
    filled = int(frac * _WIDTH)
    rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
    bar = "#" * filled + "." * (_WIDTH - filled)
    return f"[{bar}] {frac * 100:3.0f}%  {done / 1e6:.1f}/{total / 1e6:.1f} MB  {rate:.1f} MB/s"
