"""`l7scope doctor`: checks what capture and export need, and prints a pass/fail table with fixes.

Every check is a small function returning a `Check`; the paths it looks at are parameters so tests
can point them elsewhere (a missing tracefs is simulated, never unmounted).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from l7scope.config import Config, KafkaConfig, kafka_client_settings

TRACEFS_PATHS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
# The sock:sock_send_length/sock_recv_length tracepoints capture runs in (6.3); the BPF ring buffer (5.8)
# and bpf_task_pt_regs in tracepoint programs (5.15) come with them. docs/platform.md has the story.
MIN_KERNEL = (6, 3)
# Capabilities (linux/capability.h numbers) that loading and attaching the tracer uses.
CAPS = {"CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}
LIBSSL_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
)
SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
BPF_MAP_CREATE, BPF_MAP_TYPE_RINGBUF = 0, 27


class Status(Enum):
    OK = "ok"
    FAIL = "FAIL"  # a required check: capture cannot run
    WARN = "warn"  # optional: a feature (TLS, say) will be missing
    UNREACHABLE = "UNREACHABLE"  # a configured dependency (Kafka, OTLP) cannot be reached
    SKIP = "skip"  # not configured


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class DoctorPaths:
    tracefs: tuple[Path, ...] = TRACEFS_PATHS
    btf: Path = BTF_PATH
    build_tree: Path = field(default_factory=lambda: Path("/lib/modules") / platform.release() / "build")
    header_cache: Path = Path("/var/cache/l7scope/headers")


# -- the checks ---------------------------------------------------------------------------------


def effective_caps(status: Path = Path("/proc/self/status")) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_caps(caps: int, release: str) -> list[str]:
    """Loading needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN); kernels < 5.11 charge maps to memlock."""
    has = {name for name, bit in CAPS.items() if caps >> bit & 1}
    missing = [] if "CAP_SYS_ADMIN" in has else [c for c in ("CAP_BPF", "CAP_PERFMON") if c not in has]
    if parse_release(release) < (5, 11) and "CAP_SYS_RESOURCE" not in has:
        missing.append("CAP_SYS_RESOURCE")
    return missing


def check_privileges(release: str | None = None) -> Check:
    missing = missing_caps(effective_caps(), release or platform.release())
    if os.geteuid() == 0 and not missing:
        return Check("privileges", Status.OK, "root with the capabilities to load eBPF programs")
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root)"
    return Check(
        "privileges",
        Status.FAIL,
        f"{who}, missing {', '.join(missing) or 'root'}",
        "run as root: sudo l7scope ... (in Kubernetes: uid 0 with the capabilities the DaemonSet lists)",
    )


def parse_release(release: str) -> tuple[int, int]:
    head = release.split("-")[0].split(".")
    nums = [int("".join(c for c in p if c.isdigit()) or 0) for p in head[:2]]
    padded = [*nums, 0, 0]
    return padded[0], padded[1]


def check_kernel(release: str | None = None) -> Check:
    release = release or platform.release()
    if parse_release(release) >= MIN_KERNEL:
        return Check("kernel", Status.OK, f"{release} (>= 6.3)")
    return Check(
        "kernel",
        Status.FAIL,
        f"{release} is older than 6.3 (capture runs in the sock:sock_send/recv_length tracepoints)",
        "upgrade to a kernel >= 6.3 (Ubuntu 24.04 ships 6.8, Debian 13 6.12)",
    )


def check_headers(paths: DoctorPaths) -> Check:
    if (paths.build_tree / "include").is_dir():
        return Check("btf-or-headers", Status.OK, f"kernel headers in {paths.build_tree}")
    if paths.btf.is_file():
        return Check("btf-or-headers", Status.OK, f"BTF at {paths.btf} (headers are generated from it)")
    cached = paths.header_cache / platform.release()
    if (cached / "include" / "vmlinux.h").is_file():
        return Check("btf-or-headers", Status.OK, f"generated headers cached in {cached}")
    return Check(
        "btf-or-headers",
        Status.FAIL,
        f"no kernel headers in {paths.build_tree} and no BTF at {paths.btf}",
        "install this kernel's headers (apt-get install linux-headers-$(uname -r)) "
        "or boot a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    )


def check_tracefs(paths: Sequence[Path]) -> Check:
    denied = []
    for path in paths:
        try:
            if (path / "events").is_dir() and os.listdir(path / "events"):
                return check_tracepoints(path / "events")
        except PermissionError:
            denied.append(str(path))
    if denied:
        return Check(
            "tracefs",
            Status.FAIL,
            f"{denied[0]} is not readable by this user",
            "run as root: sudo l7scope ...",
        )
    return Check(
        "tracefs",
        Status.FAIL,
        f"not mounted at {' or '.join(str(p) for p in paths)}",
        f"mount -t tracefs nodev {paths[0]} (l7scope mounts it itself when run as root)",
    )


# The capture runs in these: the sock:sock_*_length tracepoints are recent (Linux 6.3 and later).
TRACEPOINTS = ("sock/sock_send_length", "sock/sock_recv_length", "sock/inet_sock_set_state",
               "syscalls/sys_enter_close")  # fmt: skip


def check_tracepoints(events: Path) -> Check:
    missing = [t for t in TRACEPOINTS if not (events / t).is_dir()]
    if not missing:
        return Check("tracefs", Status.OK, f"mounted at {events.parent}, with the sock: tracepoints")
    return Check(
        "tracefs",
        Status.FAIL,
        f"this kernel has no tracepoint {', '.join(missing)}",
        "use a kernel with the sock:sock_send_length/sock_recv_length tracepoints (Linux 6.3 and later)",
    )


def check_bcc() -> Check:
    try:
        import bcc
    except ImportError as e:
        return Check(
            "bcc",
            Status.FAIL,
            f"the bcc Python module cannot be imported ({e})",
            "apt-get install python3-bpfcc, then deploy/setup.sh (links it into .venv)",
        )
    return Check("bcc", Status.OK, f"importable from {Path(bcc.__file__).parent}")


def create_ringbuf_map(size: int = 4096) -> int:
    """Create (and close) a tiny BPF_MAP_TYPE_RINGBUF map; returns 0 or the errno."""
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        return errno.ENOSYS
    # union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries (u32 each), rest zero.
    attr = (ctypes.c_uint32 * 32)(BPF_MAP_TYPE_RINGBUF, 0, 0, size)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_MAP_CREATE), ctypes.byref(attr), ctypes.c_uint(128))
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def check_ringbuf() -> Check:
    err = create_ringbuf_map()
    if err == 0:
        return Check("ring-buffer", Status.OK, "BPF_MAP_TYPE_RINGBUF map created")
    if err in (errno.EPERM, errno.EACCES):
        return Check(
            "ring-buffer",
            Status.FAIL,
            "creating a BPF map was refused (EPERM)",
            "run as root (or with CAP_BPF); check kernel.unprivileged_bpf_disabled and lockdown",
        )
    return Check(
        "ring-buffer",
        Status.FAIL,
        f"BPF_MAP_TYPE_RINGBUF unsupported ({errno.errorcode.get(err, err)})",
        "upgrade to a kernel >= 5.8 built with CONFIG_BPF_SYSCALL=y",
    )


def find_libssl(candidates: Sequence[str] = LIBSSL_CANDIDATES) -> str | None:
    found = next((c for c in candidates if os.path.isfile(c)), None)
    return found or ctypes.util.find_library("ssl")


def check_libssl(candidates: Sequence[str] = LIBSSL_CANDIDATES) -> Check:
    found = find_libssl(candidates)
    if found:
        return Check("libssl", Status.OK, f"{found} (TLS payloads via uprobes)")
    return Check(
        "libssl",
        Status.WARN,
        "no libssl found: TLS traffic is seen as encrypted bytes only",
        "apt-get install libssl3 (programs with a statically linked TLS library are not covered)",
    )


def tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


def brokers_unreachable(kafka: KafkaConfig, timeout: float = 3.0) -> str | None:
    """None when some bootstrap broker accepts a TCP connection, else why not (a fast check)."""
    reason = "no bootstrap address"
    for hostport in kafka.bootstrap.split(","):  # validated as host:port by the config
        host, _, port = hostport.strip().rpartition(":")
        found = tcp_reachable(host or "127.0.0.1", int(port), timeout)
        if found is None:
            return None
        reason = found
    return f"no broker answers at {kafka.bootstrap} ({reason})"


def check_kafka(kafka: KafkaConfig, timeout: float = 3.0) -> Check:
    problem = brokers_unreachable(kafka, timeout)
    if problem is not None:
        return Check(
            "kafka",
            Status.UNREACHABLE,
            problem,
            "start the broker or set L7SCOPE_KAFKA_BOOTSTRAP / [kafka] bootstrap",
        )
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:  # the TCP port is open; a metadata request checks TLS/SASL and that it speaks Kafka
        admin = KafkaAdminClient(
            **kafka_client_settings(kafka), client_id="l7scope-doctor", request_timeout_ms=int(timeout * 1000)
        )
        try:
            topics = admin.list_topics()
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError) as e:
        return Check(
            "kafka",
            Status.UNREACHABLE,
            f"{kafka.bootstrap} accepts connections but Kafka requests fail ({type(e).__name__}: {e})",
            "check [kafka] security_protocol, sasl_* and ssl_* against the listener",
        )
    return Check("kafka", Status.OK, f"{kafka.bootstrap}: {len(topics)} topics visible")


def check_otlp(env: Mapping[str, str], timeout: float = 3.0) -> Check:
    from pipeline.otlp import OtlpEndpoint

    try:
        endpoint = OtlpEndpoint.from_env(env, "traces")
    except ValueError as e:
        return Check("otlp", Status.FAIL, str(e), "fix the OTEL_EXPORTER_OTLP_* variable")
    if endpoint is None:
        return Check("otlp", Status.SKIP, "no OTEL_EXPORTER_OTLP_*ENDPOINT set")
    url = urlsplit(endpoint.url)
    port = url.port or (443 if url.scheme == "https" else 4317 if endpoint.protocol == "grpc" else 4318)
    reason = tcp_reachable(url.hostname or "127.0.0.1", port, timeout)
    if reason is None:
        return Check("otlp", Status.OK, f"{endpoint.protocol} {url.hostname}:{port} accepts connections")
    return Check(
        "otlp",
        Status.UNREACHABLE,
        f"{endpoint.protocol} endpoint {url.hostname}:{port} unreachable ({reason})",
        "start the collector or fix OTEL_EXPORTER_OTLP_ENDPOINT",
    )


# -- running and printing -----------------------------------------------------------------------


def run_checks(
    config: Config, env: Mapping[str, str], paths: DoctorPaths | None = None, kafka: bool = False
) -> list[Check]:
    """All checks in order; Kafka only when asked or configured away from the default."""
    paths = paths or DoctorPaths(header_cache=Path(config.capture.header_cache))
    checks: list[Callable[[], Check]] = [
        check_privileges,
        check_kernel,
        lambda: check_headers(paths),
        lambda: check_tracefs(paths.tracefs),
        check_bcc,
        check_ringbuf,
        check_libssl,
    ]
    results = [c() for c in checks]
    if kafka or config.kafka.bootstrap != KafkaConfig().bootstrap or "L7SCOPE_KAFKA_BOOTSTRAP" in env:
        results.append(check_kafka(config.kafka))
    else:
        results.append(
            Check("kafka", Status.SKIP, "not configured (l7scope run needs none; --kafka checks it)")
        )
    results.append(check_otlp(env))
    return results


def exit_code(results: Sequence[Check]) -> int:
    """0 all required checks pass; 2 the machine cannot capture; 3 a configured dependency is unreachable."""
    if any(r.status is Status.FAIL for r in results):
        return 2
    if any(r.status is Status.UNREACHABLE for r in results):
        return 3
    return 0


def render(results: Sequence[Check], out: IO[str]) -> None:
    width = max(len(r.name) for r in results)
    for r in results:
        out.write(f"{r.name:<{width}}  {r.status.value:<11}  {r.detail}\n")
        if r.fix:
            out.write(f"{'':<{width}}  {'':<11}  fix: {r.fix}\n")
    code = exit_code(results)
    verdict = {0: "ready to capture", 2: "capture cannot start", 3: "a dependency is unreachable"}[code]
    out.write(f"\n{verdict}\n")
