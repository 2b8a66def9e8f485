"""Process labels for captured connections, read from /proc once per pid."""

from __future__ import annotations

from pathlib import Path


class ProcessNames:
    """pid -> process name (the group leader's comm), cached; falls back to the event's thread comm."""

    __slots__ = ("_cache", "_limit", "_proc")

    def __init__(self, limit: int = 16384, proc: Path = Path("/proc")) -> None:
        self._cache: dict[int, str] = {}
        self._limit = limit
        self._proc = proc

    def name(self, pid: int, comm: bytes = b"") -> str:
        cached = self._cache.get(pid)
        if cached is not None:
            return cached
        name = read_comm(self._proc, pid) or comm.split(b"\0", 1)[0].decode(errors="replace")
        if len(self._cache) >= self._limit:
            self._cache.pop(next(iter(self._cache)))  # oldest first: pids get reused over time
        self._cache[pid] = name
        return name

    def forget(self, pid: int) -> None:
        self._cache.pop(pid, None)


def read_comm(proc: Path, pid: int) -> str:
    """The process's comm, or "" when it has exited."""
    try:
        return (proc / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return ""
