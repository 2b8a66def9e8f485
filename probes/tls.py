"""TLS uprobes: find every libssl and every Go executable with crypto/tls in use (at start-up and
after each exec) and attach to each file once.

A uprobe on a file applies to every process that maps it, so attaching by library path is enough;
new paths (a container's own libssl, /opt builds) are found through the exec events of the tracer.
Go executables carry crypto/tls inside: each is inspected on its own (probes/gotls.py).
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

from probes import gotls

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


GO_ENTRY_PROGRAMS = {
    gotls.READ: "l7_go_tls_read_enter",
    gotls.WRITE: "l7_go_tls_write_enter",
    gotls.CLIENT_HANDSHAKE: "l7_go_tls_handshake_enter",
    gotls.SERVER_HANDSHAKE: "l7_go_tls_handshake_enter",
}
GO_RETURN_PROGRAM = "l7_go_tls_return"
BPF_PROG_TYPE_KPROBE = 2  # uprobe programs are kprobe programs (bcc's BPF.KPROBE)


class GoProbes:
    """Attaches the Go TLS programs to each Go executable with crypto/tls once (by device and inode).

    At most `max_executables` executables and `max_uprobes` uprobes in all; an executable past either
    cap, or one that cannot be handled, is logged once with the reason (`refused`).
    """

    def __init__(self, bpf: Any, max_executables: int = 64, max_uprobes: int = 4096) -> None:
        self._bpf = bpf
        self.max_executables = max_executables
        self.max_uprobes = max_uprobes
        self._seen: set[tuple[int, int]] = set()
        self.executables: list[gotls.GoExecutable] = []
        self.probed: set[tuple[int, int]] = set()  # (device, inode) of each executable probed
        self.refused: dict[str, str] = {}  # path -> why it is not probed
        self.uprobes = 0
        self._layout: gotls.Layout | None = None
        # Verified now, not at the first attach: a Go program started later is probed ~0.3 s sooner.
        for program in (*set(GO_ENTRY_PROGRAMS.values()), GO_RETURN_PROGRAM):
            bpf.load_func(program.encode(), BPF_PROG_TYPE_KPROBE)

    def scan_pid(self, pid: int, proc: Path) -> bool:
        """Probe this process's executable if it is a Go program with crypto/tls; True if it is probed now."""
        path = str(proc / str(pid) / "exe")  # a path that works across mount namespaces and for deleted files
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self._seen:
            return False
        self._seen.add(key)
        if not gotls.is_go(path):
            return False
        name = readlink(path)
        try:
            exe = gotls.inspect(path)
            self._admit(exe)
        except gotls.NoTls as exc:
            log.debug("Go TLS: nothing to probe in %s (%s)", name, exc)
            return False
        except (gotls.GoUnsupported, OSError, ValueError, IndexError) as exc:
            self.refused[name] = str(exc)
            log.warning("Go TLS: not probing %s (pid %d): %s", name, pid, exc)
            return False
        if self._attach(exe, name):
            self.probed.add(key)
        return True

    def _admit(self, exe: gotls.GoExecutable) -> None:
        if len(self.executables) >= self.max_executables:
            raise gotls.GoUnsupported(
                f"already probing {len(self.executables)} Go executables (capture.go_tls_max_executables)"
            )
        if self.uprobes + exe.uprobe_count() > self.max_uprobes:
            raise gotls.GoUnsupported(
                f"{exe.uprobe_count()} uprobes would pass the cap of {self.max_uprobes} "
                f"({self.uprobes} in use; capture.go_tls_max_uprobes)"
            )
        if self._layout is None:
            table = self._bpf[b"l7_go_layout"]
            leaf = table.Leaf(*exe.layout.values())
            table[table.Key(0)] = leaf
            self._layout = exe.layout
        elif self._layout.values() != exe.layout.values():
            raise gotls.GoUnsupported(f"{exe.version}: layout {exe.layout} differs from the one in use")

    def _attach(self, exe: gotls.GoExecutable, name: str) -> bool:
        path = exe.path.encode()
        done = 0
        try:
            for fn in exe.functions.values():
                self._bpf.attach_uprobe(name=path, addr=fn.entry, fn_name=GO_ENTRY_PROGRAMS[fn.name].encode())
                done += 1
                for ret in fn.rets:
                    self._bpf.attach_uprobe(name=path, addr=ret, fn_name=GO_RETURN_PROGRAM.encode())
                    done += 1
        except Exception as exc:  # bcc raises bare Exception
            self.uprobes += done  # attached ones stay until the tracer is unloaded
            self.refused[name] = f"attach failed after {done} uprobes: {exc}"
            log.warning("Go TLS: not probing %s: attach failed after %d uprobes (%s)", name, done, exc)
            return False
        self.uprobes += done
        self.executables.append(exe)
        log.info("Go TLS: probing %s (%s, functions from %s, %d uprobes, offsets: %s)", name, exe.version,
                 exe.symbols_from, done, exe.layout.source)  # fmt: skip
        return True


def readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return path


class TlsProbes:
    """Attaches the SSL programs of a loaded tracer to each libssl file once (by device and inode), and
    the Go TLS programs to each Go executable with crypto/tls (`go`, None when Go TLS is off)."""

    def __init__(
        self,
        bpf: Any,
        own_pid: int = 0,
        proc: Path = Path("/proc"),
        go: GoProbes | None = None,
        libssl: bool = True,
    ) -> None:
        self._bpf = bpf
        self._libssl = libssl
        self._proc = proc
        self._own_pid = own_pid
        self._seen: set[tuple[int, int]] = set()
        self.libraries: list[Library] = []
        self._pending: dict[int, float] = {}  # exec'd pids to look at again, until a deadline
        self.go = go

    def attach_startup(self) -> None:
        paths = {p for pattern in SYSTEM_LIB_GLOBS for p in glob.glob(pattern) if is_libssl(p)}
        for path in sorted(paths) if self._libssl else ():
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
        """Attach to the libssl files this process maps (and its executable, if Go); True when it maps one."""
        if self.go is not None:
            self.go.scan_pid(pid, self._proc)
        if not self._libssl:
            return True  # nothing more to look for later
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
