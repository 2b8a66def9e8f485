"""OpenSSL uprobes: find every libssl in use (at start-up and after each exec) and attach to each file once.

A uprobe on a file applies to every process that maps it, so attaching by library path is enough;
new paths (a container's own libssl, /opt builds) are found through the exec events of the tracer.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("l7scope.tls")

# (symbol, entry program, whether it is optional): the return of each goes to l7_ssl_return.
SSL_FUNCTIONS = (
    ("SSL_write", "l7_ssl_write_enter"),
    ("SSL_read", "l7_ssl_read_enter"),
    ("SSL_write_ex", "l7_ssl_write_ex_enter"),  # OpenSSL >= 1.1.1
    ("SSL_read_ex", "l7_ssl_read_ex_enter"),
    ("SSL_do_handshake", "l7_ssl_handshake_enter"),
    ("SSL_connect", "l7_ssl_handshake_enter"),
    ("SSL_accept", "l7_ssl_handshake_enter"),
)
# System library directories probed at start-up, so a process that starts later is covered at once.
SYSTEM_LIB_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libssl.so.*",
    "/usr/lib/aarch64-linux-gnu/libssl.so.*",
    "/usr/lib64/libssl.so.*",
    "/usr/lib/libssl.so.*",
    "/lib/x86_64-linux-gnu/libssl.so.*",
    "/lib64/libssl.so.*",
)
# An exec'd process maps its libraries a moment after exec: look again for this long.
EXEC_RECHECK_S = 2.0


def is_libssl(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith("libssl.so") and not name.endswith((".a", ".la"))


def libssl_in_maps(maps_text: str) -> set[str]:
    """Paths of libssl files in one /proc/PID/maps text."""
    found = set()
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and is_libssl(parts[5].strip()):
            found.add(parts[5].strip())
    return found


def read_maps(pid: int, proc: Path = Path("/proc")) -> str:
    try:
        return (proc / str(pid) / "maps").read_text()
    except OSError:  # exited, or a kernel thread
        return ""


def all_pids(proc: Path = Path("/proc")) -> list[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


@dataclass(slots=True)
class Library:
    path: str  # as opened for attaching (through /proc/PID/root for other mount namespaces)
    symbols: tuple[str, ...]  # functions probed


class TlsProbes:
    """Attaches the SSL programs of a loaded tracer to each libssl file once (by device and inode)."""

    def __init__(self, bpf: Any, own_pid: int = 0, proc: Path = Path("/proc")) -> None:
        self._bpf = bpf
        self._proc = proc
        self._own_pid = own_pid
        self._seen: set[tuple[int, int]] = set()
        self.libraries: list[Library] = []
        self._pending: dict[int, float] = {}  # exec'd pids to look at again, until a deadline

    def attach_startup(self) -> None:
        paths = {p for pattern in SYSTEM_LIB_GLOBS for p in glob.glob(pattern) if is_libssl(p)}
        for path in sorted(paths):
            self.attach(path)
        for pid in all_pids(self._proc):
            if pid != self._own_pid:
                self.scan_pid(pid)

    def on_exec(self, pids: Iterable[int]) -> None:
        now = time.monotonic()
        for pid in pids:
            self._pending[pid] = now + EXEC_RECHECK_S
        self.recheck()

    def recheck(self) -> None:
        """Look at recently exec'd processes again (their libraries appear after exec)."""
        if not self._pending:
            return
        now = time.monotonic()
        for pid, deadline in list(self._pending.items()):
            if self.scan_pid(pid) or now > deadline:
                del self._pending[pid]

    def scan_pid(self, pid: int) -> bool:
        """Attach to the libssl files this process maps; True when it maps one."""
        paths = libssl_in_maps(read_maps(pid, self._proc))
        for path in paths:
            # The path is in the process's mount namespace; its root makes it reachable from ours.
            self.attach(str(self._proc / str(pid) / "root" / path.lstrip("/")))
        return bool(paths)

    def attach(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self._seen:
            return False
        self._seen.add(key)
        attached = []
        for symbol, entry in SSL_FUNCTIONS:
            try:
                self._bpf.attach_uprobe(name=path.encode(), sym=symbol.encode(), fn_name=entry.encode())
                self._bpf.attach_uretprobe(name=path.encode(), sym=symbol.encode(), fn_name=b"l7_ssl_return")
            except Exception as exc:  # bcc raises bare Exception when a symbol is missing
                log.debug("no uprobe on %s:%s (%s)", path, symbol, exc)
                continue
            attached.append(symbol)
        if attached:
            self.libraries.append(Library(path, tuple(attached)))
            log.info("TLS: probing %s (%s)", path, ", ".join(attached))
        return bool(attached)
