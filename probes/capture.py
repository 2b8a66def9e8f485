"""Load the socket tracer (bpf/socket_trace.bpf.c) with bcc and turn its ring buffer into
`Fragment`s and `ConnEvent`s.

The ring is written with BPF_RB_NO_WAKEUP, so nothing is pushed to us: the caller drains it on a
short timer with `poll()`. The ring is read through mmap (probes/ringbuf.py) and decoded in place in
one loop; bcc's per-record callback is the fallback when the map cannot be mapped.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from probes.errors import CaptureUnavailable
from probes.existing import ExistingConnections
from probes.fragment import ConnEvent, Fragment, Io, Source
from probes.kernel_headers import prepare_headers
from probes.labels import ProcessLabels
from probes.procinfo import ProcessNames
from probes.ringbuf import BUSY, DISCARD, HEADER, LEN_MASK, RingReader
from probes.tls import GoProbes, TlsProbes
from protocols.base import ConnInfo, Endpoint, Role

__all__ = ["Capture", "CaptureOptions", "CaptureStats", "CaptureUnavailable", "EventDecoder"]

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
PROGRAM = BPF_DIR / "socket_trace.bpf.c"
SSL_PROGRAM = BPF_DIR / "ssl_trace.bpf.c"
GO_TLS_PROGRAM = BPF_DIR / "go_tls.bpf.c"
TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")

# Mirror of `struct l7_event` in bpf/include/events.h (tests/probes check it against bcc's layout).
EVENT_LAYOUT = (
    ("ts_ns", "Q"), ("generation", "Q"), ("position", "Q"), ("length", "Q"), ("total", "Q"),
    ("pid", "I"), ("tid", "I"), ("fd", "i"), ("data_len", "I"),
    ("kind", "B"), ("io", "B"), ("role", "B"), ("source", "B"),
    ("family", "H"), ("local_port", "H"), ("remote_port", "H"), ("chunk", "H"),
    ("local_addr", "16s"), ("remote_addr", "16s"), ("comm", "16s"),
)  # fmt: skip
EVENT_HEADER = struct.Struct("<" + "".join(code for _, code in EVENT_LAYOUT) + "4x")
# A ring record's length word (probes/ringbuf.py) and the fields a DATA event of a known connection
# needs, in one unpack without bytes objects: ts, gen, position, length, pid, tid, fd, data_len, kind,
# io, source.
RING_FAST = struct.Struct("<I4xQQQQ8xIIiIBBxB")
KIND_DATA, KIND_OPEN, KIND_CLOSE, KIND_EXEC = 0, 1, 2, 3
STAT_EVENTS, STAT_LOST_EVENTS, STAT_LOST_BYTES, STAT_TRUNCATED, STAT_TLS_CIPHER_BYTES = 0, 1, 2, 3, 4
STAT_COUNT = 9
AF_INET6 = 10
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_IO = (Io.SEND, Io.RECV)
_SOURCES = tuple(Source)  # indexed by value (0..3)
FILTER_TABLES = (b"l7_only_pids", b"l7_only_comms", b"l7_only_ports", b"l7_only_cgroups")  # enum l7_filter
FILTER_READY = len(FILTER_TABLES)  # enum l7_filter: L7_FILTER_READY
CGROUP2_MOUNTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
# Connections whose CLOSE we never saw are forgotten oldest-first past this many.
MAX_TRACKED_CONNS = 262144


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    node: str = platform.node()
    copy_chunk: int = 4096  # payload bytes per ring event
    max_chunks: int = 32  # events per syscall: bytes past copy_chunk * max_chunks are counted, not copied
    max_iov: int = 32  # iovec entries walked per writev/readv/sendmsg/recvmsg (per message for *mmsg)
    max_mmsg: int = 8  # messages walked per sendmmsg/recvmmsg; later ones are counted, not copied
    tls: bool = True  # uprobes on every libssl found (plaintext of OpenSSL connections)
    go_tls: bool = True  # uprobes on every Go executable with crypto/tls (plaintext of Go TLS connections)
    go_tls_max_executables: int = 64  # Go executables probed at most; later ones are logged and skipped
    go_tls_max_uprobes: int = 4096  # uprobes on Go executables at most (about 20 per executable)
    ring_bytes: int = 16 << 20  # must absorb one drain interval at peak rate
    exclude_pids: tuple[int, ...] = ()
    exclude_self: bool = True  # never trace the agent's own syscalls (its Kafka traffic, say)
    exclude_ports: tuple[int, ...] = ()  # connections with this local or remote port are dropped
    # Allow-lists (empty: everything); all that are set must match, checked once per connection.
    only_pids: tuple[int, ...] = ()
    only_processes: tuple[str, ...] = ()  # process names (the main thread's comm, 15 characters)
    only_ports: tuple[int, ...] = ()  # local or remote port
    only_cgroups: tuple[str, ...] = ()  # cgroup v2 ids, or paths (absolute, or under the cgroup2 mount)
    services: tuple[str, ...] = ()  # "process-or-container-name=service.name" overrides
    header_cache: Path = Path("/var/cache/l7scope/kernel-headers")
    direct_ring: bool = True  # mmap the ring and walk it; False: bcc's per-record callback

    def __post_init__(self) -> None:
        if not 64 <= self.copy_chunk <= 32768:
            raise ValueError(f"copy_chunk={self.copy_chunk}: use 64..32768 bytes")
        if not 1 <= self.max_chunks <= 64:
            raise ValueError(f"max_chunks={self.max_chunks}: use 1..64")
        if not 1 <= self.max_iov <= 64:
            raise ValueError(f"max_iov={self.max_iov}: use 1..64")
        if not 1 <= self.max_mmsg <= 64:
            raise ValueError(f"max_mmsg={self.max_mmsg}: use 1..64")
        pages = self.ring_bytes // 4096
        if self.ring_bytes % 4096 or pages < 1 or pages & (pages - 1):
            raise ValueError(f"ring_bytes={self.ring_bytes}: use a power of two of at least 4096")

    def cflags(self) -> list[str]:
        return [
            f"-I{BPF_DIR / 'include'}",
            f"-DL7_MAX_MMSG={self.max_mmsg}",
            f"-DL7_CHUNK_SIZE={self.copy_chunk}",
            f"-DL7_MAX_CHUNKS={self.max_chunks}",
            f"-DL7_MAX_IOV={self.max_iov}",
            f"-DL7_RING_BYTES={self.ring_bytes}",
        ]


@dataclass(frozen=True, slots=True)
class CaptureStats:
    events: int  # events written to the ring
    lost_events: int  # events the ring had no room for
    lost_bytes: int  # syscall bytes those lost events accounted for
    truncated: int  # syscalls whose payload was not copied in full
    tls_cipher_bytes: int = 0  # ciphertext of TLS connections: counted, not emitted (plaintext is)
    refused_events: int = 0  # events whose ring write the kernel refused with room to spare (retried)
    refused_bytes: int = 0  # syscall bytes those refused events accounted for
    tls_unmapped: int = 0  # TLS plaintext calls dropped: no syscall named their socket (OpenSSL, Go)
    tls_unmapped_bytes: int = 0  # plaintext bytes of those calls


class Capture:
    """The loaded socket tracer. Construct it (compiles, loads, attaches), `poll()` it, `close()` it."""

    def __init__(self, options: CaptureOptions | None = None) -> None:
        self.options = options = options or CaptureOptions()
        check_privileges()
        ensure_tracefs()
        headers = prepare_headers(options.header_cache)
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)
        bcc = import_bcc()
        started = time.monotonic()
        try:
            self._bpf: Any = bcc.BPF(text=program_text().encode(), cflags=options.cflags())
        except Exception as exc:  # bcc raises bare Exception for compile, load and attach errors
            raise CaptureUnavailable(
                f"the eBPF socket tracer could not be loaded ({one_line(exc)}): check that this kernel "
                "allows BPF tracepoint programs and that the headers in "
                f"{headers} match it"
            ) from exc
        self.load_seconds = time.monotonic() - started
        self._raw: list[bytes] = []
        self.records_read = 0  # ring records drained: equals stats().events once the ring is empty
        self._next_clock_check = 0.0
        self._consumed = 0  # ring bytes consumed, as last told to the kernel (l7_ring_fill[1])
        self._ring_fill = self._bpf[b"l7_ring_fill"]
        # Before attaching: a connection opened from here on is seen from its handshake.
        services = dict(item.partition("=")[::2] for item in options.services)
        self._decoder = EventDecoder(
            options.node, existing=ExistingConnections.scan(), labels=ProcessLabels(services)
        )
        pids = set(options.exclude_pids) | ({os.getpid()} if options.exclude_self else set())
        for pid in pids:
            self.exclude_pid(pid)
        for port in options.exclude_ports:
            self.exclude_port(port)
        self.set_filters(options.only_pids, options.only_processes, options.only_ports, options.only_cgroups)
        self._bpf[b"l7_filter_on"][ctypes.c_int(FILTER_READY)] = ctypes.c_uint8(1)  # bind from now on
        self.ring_reader = "bcc"
        self._ring: RingReader | None = None
        if options.direct_ring:
            try:
                self._ring = RingReader(self._bpf[b"l7_events"].map_fd, options.ring_bytes)
                self.ring_reader = "mmap"
            except (OSError, ValueError):  # no mmap of ring maps (kernel < 5.8 has none anyway): bcc path
                self._ring = None
        if self._ring is None:
            raw = self._raw
            # Near-zero work per event: copy the record out of the ring, decode after the drain.
            self._callback = lambda _ctx, data, size: raw.append(ctypes.string_at(data, size))
            self._bpf[b"l7_events"].open_ring_buffer(self._callback)
        go = None
        if options.go_tls:
            go = GoProbes(self._bpf, options.go_tls_max_executables, options.go_tls_max_uprobes)
        self.tls = TlsProbes(self._bpf, own_pid=os.getpid(), go=go, libssl=options.tls)
        if options.tls or options.go_tls:
            self.tls.attach_startup()

    def exclude_pid(self, pid: int) -> None:
        self._bpf[b"l7_excluded_pids"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def exclude_port(self, port: int) -> None:
        self._bpf[b"l7_excluded_ports"][ctypes.c_uint16(port)] = ctypes.c_uint8(1)

    def set_filters(
        self,
        pids: tuple[int, ...] = (),
        processes: tuple[str, ...] = (),
        ports: tuple[int, ...] = (),
        cgroups: tuple[str, ...] = (),
    ) -> None:
        """Replace the allow-lists; connections already bound keep the decision made for them.

        New lists are switched on before old ones are switched off, so no connection that binds
        meanwhile sees every list off (which would let it in for good).
        """
        keys: tuple[list[Any], ...] = (  # ctypes keys of each table's own type
            [ctypes.c_uint32(p) for p in pids],
            [comm_key(self._bpf[b"l7_only_comms"].Key, name) for name in processes],
            [ctypes.c_uint16(p) for p in ports],
            [ctypes.c_uint64(cgroup_id(c)) for c in cgroups],
        )
        on, one = self._bpf[b"l7_filter_on"], ctypes.c_uint8(1)
        lists = list(zip(range(len(FILTER_TABLES)), FILTER_TABLES, keys, strict=True))
        for index, table, wanted in lists:
            for key in wanted:
                self._bpf[table][key] = one
            if wanted:
                on[ctypes.c_int(index)] = one
        for index, table, wanted in lists:
            wanted_bytes = {bytes(k) for k in wanted}
            for key in list(self._bpf[table].keys()):
                if bytes(key) not in wanted_bytes:
                    del self._bpf[table][key]
            if not wanted:
                on[ctypes.c_int(index)] = ctypes.c_uint8(0)

    def poll(self, limit: int = 1 << 62) -> list[Fragment | ConnEvent]:
        """Drain what the ring holds now, up to `limit` records (never blocks), in ring order."""
        out: list[Fragment | ConnEvent] = []
        now = time.monotonic()
        if now >= self._next_clock_check:  # cheap (vDSO); a wall-clock step reaches the stamps in 1 s
            self._next_clock_check = now + 1.0
            self._decoder.follow_wall_clock()
        ring = self._ring
        if ring is not None:
            produced = ring.producer()
            try:  # decoded in place, then the space goes back to the kernel
                out, position, records = self._decoder.decode_ring(
                    ring.buf, ring.base, ring.mask, ring.consumer, produced, limit
                )
            except Exception:
                ring.release(produced)  # a record that cannot be decoded must not wedge the ring
                raise
            ring.release(position)
            self.records_read += records
            self._tell_consumed(position)
        else:
            written = self._ring_fill[ctypes.c_int(0)].value  # before the drain: all of it is consumed
            self._bpf.ring_buffer_consume()
            self._tell_consumed(written)
        if self._raw:
            raw = self._raw[:]
            self._raw.clear()
            self.records_read += len(raw)
            out = self._decoder.decode(raw)
        if self.options.tls or self.options.go_tls:
            execs = self._decoder.take_execs()
            if execs:
                self.tls.on_exec(execs)
            else:
                self.tls.recheck()
        return out

    def _tell_consumed(self, position: int) -> None:
        """The ring bytes consumed so far, for the kernel's fill estimate (l7_ring_fill: written - consumed)
        behind its copy-less-under-pressure rule. The ring's positions start at 0, as the count does."""
        if position != self._consumed:
            self._consumed = position
            self._ring_fill[ctypes.c_int(1)] = ctypes.c_uint64(position)

    def stats(self) -> CaptureStats:
        table = self._bpf[b"l7_stats"]
        values = [int(table.sum(ctypes.c_int(i)).value) for i in range(STAT_COUNT)]
        return CaptureStats(*values)

    def close(self) -> None:
        ring, self._ring = getattr(self, "_ring", None), None
        if ring is not None:
            ring.close()
        bpf, self._bpf = getattr(self, "_bpf", None), None
        if bpf is not None:
            bpf.cleanup()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def epoch_offset_ns() -> int:
    """The kernel stamps events with CLOCK_MONOTONIC (bpf_ktime_get_ns): adding this makes them Unix
    epoch nanoseconds, which mean the same on every node (records, spans and Kafka outlive the host)."""
    return time.time_ns() - time.monotonic_ns()


class EventDecoder:
    """Ring records (bytes of `struct l7_event` + payload) -> ConnEvent/Fragment, tracking connections."""

    def __init__(
        self,
        node: str,
        names: ProcessNames | None = None,
        existing: ExistingConnections | None = None,
        labels: ProcessLabels | None = None,
    ) -> None:
        self.node = node
        self._labels = labels
        self._existing = existing
        self._conns: dict[tuple[int, int, int], ConnInfo] = {}
        self._names = names or ProcessNames()
        self._execs: list[int] = []
        self.epoch_offset_ns = epoch_offset_ns()

    def follow_wall_clock(self) -> None:
        """Take up a step of the wall clock (NTP, an operator) since the last call."""
        self.epoch_offset_ns = epoch_offset_ns()

    def take_execs(self) -> list[int]:
        """Pids that exec'd since the last call (for TLS library discovery)."""
        execs, self._execs = self._execs, []
        return execs

    def decode(self, records: list[bytes]) -> list[Fragment | ConnEvent]:
        out: list[Fragment | ConnEvent] = []
        for record in records:
            self._decode(record, 0, out)
        return out

    def decode_ring(
        self, buf: Any, base: int, mask: int, cons: int, prod: int, limit: int = 1 << 62
    ) -> tuple[list[Fragment | ConnEvent], int, int]:
        """Walk a mapped ring (as probes.ringbuf.walk does) and decode each record in place.

        Returns the events, the position to release, and the number of records decoded.
        """
        out: list[Fragment | ConnEvent] = []
        append, unpack, conns = out.append, RING_FAST.unpack_from, self._conns
        busy, discard, len_mask, data_kind = BUSY, DISCARD, LEN_MASK, KIND_DATA
        fragment, ios, sources = Fragment, _IO, _SOURCES  # locals: no global lookups per record
        epoch = self.epoch_offset_ns
        skip = HEADER + EVENT_HEADER.size
        records = 0
        # The hot path: one unpack per record; a DATA event of a known connection adds one slice and
        # one Fragment, nothing else.
        while cons < prod and records < limit:
            off = base + (cons & mask)
            word, ts, gen, position, length, pid, tid, fd, data_len, kind, io, source = unpack(buf, off)
            if word & busy:
                break
            cons += ((word & len_mask) + HEADER + 7) & ~7
            if word & discard:
                continue
            records += 1
            info = conns.get((pid, fd, gen)) if kind == data_kind else None
            if info is None:
                self._decode(buf, off + HEADER, out)
            else:
                start = off + skip
                append(fragment(info.conn_id, ios[io], position, length, buf[start : start + data_len],
                                ts + epoch, tid, sources[source]))  # fmt: skip
        return out, cons, records

    def _decode(self, buf: Any, off: int, out: list[Fragment | ConnEvent]) -> None:
        (ts, gen, position, length, _total, pid, tid, fd, data_len, kind, io, role, source,
         family, lport, rport, _chunk, laddr, raddr, comm) = EVENT_HEADER.unpack_from(buf, off)  # fmt: skip
        ts += self.epoch_offset_ns
        if kind == KIND_EXEC:
            self._names.forget(pid)  # a new program image: a new name
            if self._labels is not None:
                self._labels.forget(pid)
            self._execs.append(pid)
            return
        key = (pid, fd, gen)
        info = self._conns.get(key)
        if info is None:
            info = self._new_conn(key, role, family, lport, rport, laddr, raddr, comm)
            out.append(ConnEvent(info=info, ts_ns=ts))
        if kind == KIND_DATA:
            start = off + EVENT_HEADER.size
            out.append(
                Fragment(info.conn_id, _IO[io], position, length, buf[start : start + data_len], ts, tid,
                         _SOURCES[source])
            )  # fmt: skip
        elif kind == KIND_CLOSE:
            del self._conns[key]
            out.append(ConnEvent(info=info, ts_ns=ts, closed=True, send_bytes=position, recv_bytes=length))

    def _new_conn(
        self, key: tuple[int, int, int], role: int, family: int, lport: int, rport: int,
        laddr: bytes, raddr: bytes, comm: bytes,
    ) -> ConnInfo:  # fmt: skip
        pid, fd, gen = key
        local = Endpoint(format_ip(family, laddr), lport)
        remote = Endpoint(format_ip(family, raddr), rport)
        inferred = role == 0 and self._existing is not None
        if inferred:
            role = self._existing.infer_role(pid, fd, local, remote)  # type: ignore[union-attr]
        info = ConnInfo(
            conn_id=f"{self.node}/{pid}/{fd}/{gen}",
            local=local,
            remote=remote,
            role=Role(role),
            role_inferred=inferred,
            pid=pid,
            process=self._names.name(pid, comm),
            node=self.node,
        )
        if self._labels is not None:
            lab = self._labels.get(pid, info.process)
            info = replace(info, process=lab.process or info.process, container_id=lab.container_id,
                           executable=lab.executable, service=lab.service, k8s_pod=lab.pod,
                           k8s_namespace=lab.namespace, k8s_container=lab.container)  # fmt: skip
        if len(self._conns) >= MAX_TRACKED_CONNS:
            self._conns.pop(next(iter(self._conns)))
        self._conns[key] = info
        return info


def comm_key(key_type: Any, name: str) -> Any:
    key = key_type()
    raw = name.encode()[:15]
    ctypes.memmove(ctypes.addressof(key), raw, len(raw))
    return key


def cgroup_id(spec: str) -> int:
    """A cgroup v2 id: given as a number, or the inode of the cgroup's directory."""
    if spec.isdigit():
        return int(spec)
    for root in CGROUP2_MOUNTS:
        path = Path(spec) if spec.startswith("/sys/") else root / spec.lstrip("/")
        if path.is_dir():
            return path.stat().st_ino
    mounts = ", ".join(map(str, CGROUP2_MOUNTS))
    raise ValueError(f"cgroup {spec!r}: no such cgroup v2 directory under {mounts}")


def program_text() -> str:
    """The tracer's C source: bcc makes programs only of the main text's functions, so TLS is appended."""
    parts = (f'#line 1 "{p.name}"\n{p.read_text()}' for p in (PROGRAM, SSL_PROGRAM, GO_TLS_PROGRAM))
    return "\n".join(parts)


def format_ip(family: int, addr: bytes) -> str:
    """Address text; IPv4-mapped IPv6 (dual-stack sockets) is shown as plain IPv4."""
    if family == AF_INET6:
        if addr.startswith(_V4_MAPPED):
            return socket.inet_ntop(socket.AF_INET, addr[12:16])
        return socket.inet_ntop(socket.AF_INET6, addr)
    return socket.inet_ntop(socket.AF_INET, addr[:4])


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_privileges() -> None:
    if os.geteuid() != 0:
        raise CaptureUnavailable(
            "capture needs root to load eBPF programs: run the agent as root "
            "(or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
        )


def ensure_tracefs() -> None:
    """bcc attaches tracepoints through tracefs; mount it when the system has not."""
    if (TRACEFS / "events").is_dir() or (DEBUGFS_TRACING / "events").is_dir():
        return
    result = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, timeout=10, check=False
    )
    if result.returncode != 0 or not (TRACEFS / "events").is_dir():
        raise CaptureUnavailable(
            f"tracefs is not mounted and could not be mounted: run `mount -t tracefs nodev {TRACEFS}`"
        )


def import_bcc() -> Any:
    try:
        import bcc  # imported late: bcc reads the tracefs location at import time
    except ImportError as exc:
        raise CaptureUnavailable(
            "the bcc Python module is missing: install python3-bpfcc (Debian/Ubuntu) and make it "
            "visible to this Python"
        ) from exc
    return bcc
