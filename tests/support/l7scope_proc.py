"""`l7scope ARGS` as a child process: the one way tests and benchmarks launch it.

`L7scopeProcess` is a command that runs until stopped: its log (stderr) is read by a thread into
`lines` (never a full pipe, whatever it logs), `ready` waits for a log line, `stop` sends SIGTERM by
PID (SIGKILL past a timeout) and measures the time to exit, `log` and `messages` parse the JSON log
lines; leaving it as a context manager stops it. `run_l7scope` runs a command to its end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "l7scope.cli")
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")  # a `prefix`: not root


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without OTEL_*/L7SCOPE_* (each test sets what it means), with the
    kernel headers bcc needs taken from the cache, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
    cache = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope")
    return env | {"L7SCOPE_CAPTURE_HEADER_CACHE": f"{cache}/headers"} | extra


def run_l7scope(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    prefix: Sequence[str] = (),
    timeout_s: float = 60.0,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`[prefix] l7scope ARGS` run to its end in `cwd`; stdout and stderr captured as text unless
    `kwargs` (passed to subprocess.run) say otherwise."""
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    environment = None if env is None else dict(env)
    return subprocess.run([*prefix, *CLI, *args], cwd=cwd, env=environment, timeout=timeout_s, **kwargs)


class L7scopeProcess:
    """Starts `python -m l7scope.cli ARGS` (or `command` + ARGS) in `cwd` and, unless `ready` is None,
    waits up to `ready_timeout_s` for a log line containing `ready` (RuntimeError with the log's tail
    if it exits or the time passes first)."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str],
        cwd: Path = ROOT,
        ready: str | None = "capturing",
        ready_timeout_s: float = 90.0,
        stdout: int | IO[Any] = subprocess.DEVNULL,
        command: Sequence[str] = CLI,
    ) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*command, *args], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if ready is not None and not (
            self.wait_for_line(ready, ready_timeout_s) and self.proc.poll() is None
        ):
            self.kill()
            raise RuntimeError(
                f"l7scope {' '.join(args)} did not log {ready!r}:\n" + "".join(self.lines[-20:])
            )

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def __enter__(self) -> L7scopeProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- its log ----------------------------------------------------------------------------------

    def wait_for_line(self, text: str, timeout_s: float = 60.0) -> bool:
        """Whether a log line containing `text` came within `timeout_s` (False at once if the log ended)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def text(self) -> str:
        """The whole log so far (all of it once the child has exited and `stop` or `wait` returned)."""
        return "".join(self.lines)

    def messages(self) -> list[str]:
        """Each log line's message (the line itself when it is not JSON)."""
        out = []
        for line in list(self.lines):
            try:
                out.append(str(json.loads(line).get("msg", line)))
            except (json.JSONDecodeError, AttributeError):
                out.append(line)
        return out

    def log(self, prefix: str) -> dict[str, Any]:
        """The last JSON log entry whose message starts with `prefix` ({} if none)."""
        for line in reversed(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and str(entry.get("msg", "")).startswith(prefix):
                return entry
        return {}

    # -- stopping, by PID -------------------------------------------------------------------------

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        """The exit code once it exits within `timeout_s` (its log then read to the end), else None."""
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=5)
        return rc

    def stop(self, timeout_s: float = 60.0) -> float:
        """SIGTERM, then wait (SIGKILL after `timeout_s`); returns the seconds it took to exit."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        if self.wait(timeout_s) is None:
            self.kill()
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, and wait for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode
