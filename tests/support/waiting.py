"""The one way tests wait for something to happen: poll a check until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], object], timeout_s: float, every_s: float = 0.2) -> bool:
    """Polls `check()` until it is true or `timeout_s` passes; returns whether it held (checked once
    more at the deadline). Callers assert on it with their own message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return bool(check())
