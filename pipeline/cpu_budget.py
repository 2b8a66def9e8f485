"""A process-wide CPU budget: the agent never takes more than its share of a core from the apps it traces.

The ring buffer is written without wake-ups and drained on a timer, so pausing the drain costs the
traced applications nothing: when the agent is over budget it sleeps, the ring fills, and the kernel
sheds whole events past that point and counts them (`capture_lost_events`, `capture_lost_bytes`).
Loss then comes in contiguous stretches of time, so the exchanges that are captured stay whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CpuBudget:
    """A token bucket of CPU seconds, filled at `share` CPU seconds per wall second.

    Every thread that does the agent's work calls `overdraft_s()` between units of work and sleeps
    that long; CPU is the whole process's (`time.process_time`), so threads the agent does not own
    (the Kafka client's) are paid for too. `share` <= 0 means no limit.
    """

    def __init__(
        self,
        share: float,
        burst_s: float = 0.05,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self._burst = burst_s
        self._cpu, self._clock = cpu, clock
        self._lock = threading.Lock()
        self._credit = burst_s
        self._wall, self._used = clock(), cpu()
        self.paused_s = 0.0  # pauses handed out, summed over threads (two pausing at once count twice)

    def overdraft_s(self) -> float:
        """Seconds to pause now to get back within budget (0.0 when within it or unlimited)."""
        if self.share <= 0:
            return 0.0
        with self._lock:
            wall, used = self._clock(), self._cpu()
            earned = (wall - self._wall) * self.share
            self._credit = min(self._burst, self._credit + earned - (used - self._used))
            self._wall, self._used = wall, used
            pause = max(0.0, -self._credit / self.share)
            self.paused_s += pause
            return pause
