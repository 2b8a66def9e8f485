"""`l7scope ARGS` as a child process for live tests and benchmarks: its log read by a thread (never a
full pipe), its SIGTERM-to-exit time measured, its stop summary parsed from the JSON log lines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class L7scopeProcess:
    """Starts `python -m l7scope.cli ARGS` and waits for the `ready` log line; stop by PID."""

    def __init__(
        self, *args: str, env: dict[str, str], cwd: Path | None = None, ready: str = "capturing"
    ) -> None:
        command = [sys.executable, "-m", "l7scope.cli", *args]
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._ready_text = ready
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(90) or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"l7scope {' '.join(args)} did not start:\n" + "".join(self.lines[-20:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self._ready_text in line:
                self._ready.set()
        self._ready.set()

    def stop(self, timeout_s: float = 60.0) -> float:
        """SIGTERM, then wait (SIGKILL after `timeout_s`); returns the seconds it took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        took = time.monotonic() - started
        self._reader.join(timeout=5)
        return took

    def log(self, prefix: str) -> dict[str, Any]:
        """The last JSON log entry whose message starts with `prefix` ({} if none)."""
        for line in reversed(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if str(entry.get("msg", "")).startswith(prefix):
                return dict(entry)
        return {}
