"""Where l7scope writes: checked before capture starts, and files created private (export.file_mode).

A JSONL file, a service map or a Prometheus address that cannot work is a ConfigError (one line,
exit code 2) at start-up, not a traceback when the first record is written or the capture ends.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import tempfile
from pathlib import Path

from l7scope.config import Config, ConfigError, file_mode

PROMETHEUS_EXAMPLE = "127.0.0.1:9464"


def parse_prometheus_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (loopback) -> (host, port); ConfigError names the fix."""
    host, sep, port = address.strip().rpartition(":")
    if not sep:
        raise ConfigError(
            f"export.prometheus = {address!r}: no host: use host:port such as {PROMETHEUS_EXAMPLE} "
            f"(or :{port or 9464} for loopback)"
        )
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"export.prometheus = {address!r}: the port must be 0 to 65535: use host:port such as "
            f"{PROMETHEUS_EXAMPLE} (empty = off)"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


def prometheus_bind_error(address: str, err: OSError) -> ConfigError:
    """The one-line message for a /metrics address that cannot be listened on."""
    host, port = parse_prometheus_address(address)
    if err.errno == errno.EADDRINUSE:
        fix = f"port {port} on {host} is in use by another process: choose a free one, e.g. {host}:{port + 1}"
    elif err.errno == errno.EADDRNOTAVAIL:
        fix = f"{host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its addresses"
    elif err.errno == errno.EACCES:
        fix = f"port {port} needs privileges: use a port above 1023, e.g. {PROMETHEUS_EXAMPLE}"
    elif isinstance(err, socket.gaierror):
        fix = f"cannot resolve {host!r} ({err.strerror}): use an IP address such as {PROMETHEUS_EXAMPLE}"
    else:
        fix = f"cannot listen there ({err.strerror or err}): use host:port such as {PROMETHEUS_EXAMPLE}"
    return ConfigError(f"export.prometheus = {address!r}: {fix}")


def check_prometheus(address: str) -> None:
    """Bind (and release) the address the /metrics endpoint will serve on, as its server will."""
    host, port = parse_prometheus_address(address)
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
            s.bind(sockaddr)
    except OSError as e:
        raise prometheus_bind_error(address, e) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_writable(path: str, what: str) -> None:
    """`path` can be written as `what` (e.g. "--export jsonl:x"): a regular file (or a character
    device such as /dev/null) that exists and is writable, or one that can be created."""
    target = Path(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConfigError(f"{what}: cannot use {path} ({e.strerror}): choose another path") from None
    if st is not None:
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise ConfigError(f"{what}: {path} is {_kind(st.st_mode)}: name a file to write")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))  # opens, writes nothing
        except OSError as e:
            raise ConfigError(
                f"{what}: cannot write {path} ({e.strerror}): fix its permissions or choose another path"
            ) from None
        return
    parent = target.parent
    if not parent.is_dir():
        raise ConfigError(f"{what}: directory {parent} does not exist: create it or choose another path")
    try:  # a trial file in the directory tells what access(2) cannot (read-only mounts, root squash)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".l7scope-check-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{what}: cannot create files in {parent} ({e.strerror}): choose a writable directory"
        ) from None


def open_private(path: str, mode: int = 0o600, append: bool = True) -> int:
    """A file descriptor for writing `path`; a file that does not exist yet is created with exactly
    `mode` (export.file_mode), whatever the umask; an existing file keeps its permissions."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags)
    os.fchmod(fd, mode)  # the umask only removes bits: 0640 under umask 077 is still 0640
    return fd


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Replace the contents of `path` with `text` (created with `mode`)."""
    with os.fdopen(open_private(path, mode, append=False), "w", encoding="utf-8") as out:
        out.write(text)


def check_stdout() -> None:
    """`jsonl:-` needs an open standard output (not `>&-`)."""
    try:
        os.fstat(sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):  # None, detached, or a closed descriptor
        raise ConfigError(
            "--export jsonl:-: standard output is closed: redirect it, or use jsonl:FILE"
        ) from None


def check_outputs(config: Config) -> None:
    """Every output the configuration names, checked before capture starts."""
    export = config.export
    file_mode(export.file_mode)
    if export.jsonl == "-":
        check_stdout()
    elif export.jsonl:
        check_writable(export.jsonl, f"--export jsonl:{export.jsonl}")
    if export.map_out:
        check_writable(export.map_out, f"--map-out {export.map_out}")
    if export.prometheus:
        check_prometheus(export.prometheus)
