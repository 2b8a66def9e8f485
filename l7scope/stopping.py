"""Stop requests (SIGINT, SIGTERM, --duration) that the process honours within seconds, always.

A stop request sets an event every loop checks; the graceful path then flushes and returns. If that
path does not end within the grace period (a parser that loops forever, an exporter that never
returns), the process logs where its main thread is and exits with EXIT_STUCK instead of ignoring
the signal: only SIGKILL ended such a process before. A second signal exits at once. Should even
that timer thread never run (a C call holding the GIL), faulthandler's own thread dumps every
thread's stack and exits 1 shortly after.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable

EXIT_STUCK = 4  # documented in `l7scope --help` and docs/troubleshooting.md
GRACE_S = 4.0  # graceful stop budget: the process is gone within 5 s of the request

log = logging.getLogger("l7scope")
_armed: list[StopRequest] = []  # stop requests whose deadline runs


class StopRequest(threading.Event):
    """An Event whose first `set()` starts the grace period after which the process exits."""

    def __init__(
        self, grace_s: float = GRACE_S, exit_now: Callable[[int], object] = os._exit, backstop: bool = False
    ) -> None:
        """`backstop`: also arm faulthandler's exit (process-wide: for the command line only)."""
        super().__init__()
        self.grace_s = grace_s
        self._exit = exit_now
        self._backstop = backstop
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.reason = ""

    def set(self, reason: str = "stop requested") -> None:
        with self._lock:
            first = self._timer is None
            if first:
                self.reason = reason
                self._timer = threading.Timer(self.grace_s, self.expire, args=("did not stop",))
                self._timer.daemon = True
                self._timer.start()
                _armed.append(self)
        super().set()
        if first and self._backstop:
            _backstop(self.grace_s + 0.6)

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def expire(self, why: str) -> None:
        """The graceful stop is over: say where the main thread is, then exit EXIT_STUCK."""
        log.error(
            "%s within %.0f s of the stop request (%s): exiting with code %d; main thread in %s",
            why, self.grace_s, self.reason, EXIT_STUCK, main_thread_at(),
        )  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe must not stop the exit
                stream.flush()
        self._exit(EXIT_STUCK)


def install(duration: float | None, grace_s: float = GRACE_S) -> StopRequest:
    """A stop request set by SIGINT/SIGTERM (a second one exits at once) and after `duration` s."""
    stop = StopRequest(grace_s, backstop=True)

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            stop.expire(f"second {name}: not waiting for the graceful stop")
        stop.set(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    if duration:
        timer = threading.Timer(duration, stop.set, args=("--duration elapsed",))
        timer.daemon = True
        timer.start()
    return stop


def main_thread_at() -> str:
    """`file:line function` of the main thread's innermost frame (where a stuck process is stuck)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    if frame is None:
        return "unknown"
    last = traceback.extract_stack(frame)[-1]
    return f"{last.filename}:{last.lineno} {last.name}"


def command_returned() -> None:
    """The command's function returned. Threads that would keep the process from exiting still face
    the deadline; with none left (main() called in-process, as tests do), it is cancelled."""
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    if _armed:
        while _armed:
            _armed.pop().cancel()
        faulthandler.cancel_dump_traceback_later()


def _backstop(seconds: float) -> None:
    """If even the grace timer cannot run (a C call holding the GIL), faulthandler's C thread dumps
    the stacks and ends the process (exit 1)."""
    with contextlib.suppress(OSError, ValueError, AttributeError, RuntimeError):  # no usable stderr
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
