"""A hard time limit on a block of test code (main thread only: it uses SIGALRM)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Hung(BaseException):  # BaseException: code under test that catches Exception must not swallow it
    pass


@contextmanager
def time_limit(seconds: float, what: str = "the block") -> Iterator[None]:
    """Raise `Hung` in this thread if the block runs longer than `seconds`."""

    def expire(signum: int, frame: object) -> None:
        raise Hung(f"{what} did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
