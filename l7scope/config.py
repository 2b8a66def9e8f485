"""Configuration: frozen dataclasses with defaults, one TOML file, `L7SCOPE_<SECTION>_<KEY>` overrides.

Every error names the key and the fix in one line. The OpenTelemetry exporters read the standard
OTEL_* variables themselves (pipeline/otlp.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l7scope.redact import is_secret_key


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    copy_chunk: int = 4096  # payload bytes copied per event; larger writes span several events
    ring_mib: int = 16  # ring buffer size (a power of two, 1 to 2048)
    drain_interval_ms: int = 10  # the ring is drained on this timer, not on wake-ups
    max_cpu: float = 0.25  # share of a core for the agent process; past it the kernel sheds, counted (0: off)
    exclude_pids: tuple[int, ...] = ()  # besides the agent itself
    exclude_ports: tuple[int, ...] = ()  # besides the ports l7scope exports to (cli.export_ports)
    header_cache: str = "/var/cache/l7scope/headers"  # BTF-generated kernel headers
    tls: bool = True  # OpenSSL plaintext through uprobes on every libssl found
    go_tls: bool = True  # Go crypto/tls plaintext through uprobes on every Go executable that has it
    go_tls_max_executables: int = 64  # Go executables probed at most; later ones are logged, not probed
    go_tls_max_uprobes: int = 4096  # uprobes on Go executables at most (about 20 each)
    # Allow-lists, checked in the kernel (empty: everything; all that are set must match).
    only_pids: tuple[int, ...] = ()
    only_processes: tuple[str, ...] = ()  # process names (comm)
    only_ports: tuple[int, ...] = ()  # local or remote port
    only_cgroups: tuple[str, ...] = ()  # cgroup v2 ids or paths (relative to the cgroup2 mount)
    services: tuple[str, ...] = ()  # "process-or-container=service.name"; else pod labels, else the process


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    fragments_topic: str = "l7scope.fragments"
    records_topic: str = "l7scope.records"
    alerts_topic: str = "l7scope.alerts"
    group: str = "l7scope-pipeline"
    partitions: int = 12  # for topics l7scope creates
    compression: str = "lz4"  # lz4, zstd, gzip, snappy or none
    max_buffer_mib: int = 64  # agent-side bound while the broker is slow or gone
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str = ""  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)
    sasl_plain_username: str = ""
    sasl_plain_password: str = ""  # better from L7SCOPE_KAFKA_SASL_PLAIN_PASSWORD than in the file
    ssl_cafile: str = ""  # CA bundle that signed the brokers' certificates
    ssl_certfile: str = ""  # client certificate (mutual TLS)
    ssl_keyfile: str = ""  # client private key (mutual TLS)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    queue_batches: int = 4096  # the embedded in-process queue (l7scope run)
    idle_seconds: float = 300.0  # connections silent this long are flushed
    max_buffered_mib: int = 512  # unparsed bytes across all connections
    nice: int = 0  # l7scope run: the parsing thread's nice value (0..19); higher yields the CPU to the apps
    call_chains: bool = True  # link spans by connection ends and serving thread (no headers needed)
    chain_window_ms: int = 1000  # the longest a record waits for its parent before export


@dataclass(frozen=True, slots=True)
class ExportConfig:
    jsonl: str = ""  # a path, or "-" for standard output
    otlp: bool = True  # when an OTEL_EXPORTER_OTLP_*ENDPOINT is set
    live_table: bool = True  # l7scope run prints the per-endpoint table
    refresh_seconds: float = 2.0
    records_topic: str = "auto"  # on, off, or auto: on for `l7scope pipeline`, off for `run`/`replay`
    alert_rules: str = ""  # a YAML rules file (deploy/alerts.example.yaml); empty: no alerting
    alertmanager_url: str = "http://127.0.0.1:9093"  # where alerts go (empty: log and Kafka only)
    map_out: str = ""  # write the service map here at exit (.dot, .json or .svg)
    prometheus: str = ""  # serve /metrics on host:port, e.g. "127.0.0.1:9464"; empty: off
    file_mode: str = "0600"  # permissions of the files l7scope creates (JSONL records, service map)
    otlp_metrics: bool = True  # RED metrics over OTLP when an OTEL_EXPORTER_OTLP_*ENDPOINT is set


@dataclass(frozen=True, slots=True)
class Config:
    node: str = field(default_factory=socket.gethostname)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> Config:
        ring = self.capture.ring_mib
        if not 1 <= ring <= MAX_RING_MIB or ring & (ring - 1):
            raise ConfigError(
                f"capture.ring_mib = {ring}: use a power of two from 1 to {MAX_RING_MIB} such as 16 "
                "(the kernel's ring buffer size is a 32-bit number of bytes)"
            )
        if not 64 <= self.capture.copy_chunk <= 32768:
            raise ConfigError(f"capture.copy_chunk = {self.capture.copy_chunk}: use 64 to 32768 bytes")
        if self.kafka.compression not in ("lz4", "zstd", "gzip", "snappy", "none"):
            raise ConfigError(
                f"kafka.compression = {self.kafka.compression!r}: use lz4, zstd, gzip, snappy or none"
            )
        _validate_kafka_security(self.kafka)
        if self.capture.go_tls_max_executables < 0 or self.capture.go_tls_max_uprobes < 0:
            raise ConfigError("capture.go_tls_max_executables and capture.go_tls_max_uprobes: use 0 or more")
        if self.capture.max_cpu < 0:
            raise ConfigError(f"capture.max_cpu = {self.capture.max_cpu}: use a share of a core, e.g. 0.25")
        if self.export.records_topic not in ("on", "off", "auto"):
            raise ConfigError(f"export.records_topic = {self.export.records_topic!r}: use on, off or auto")
        port = self.export.prometheus.rpartition(":")[2]
        if self.export.prometheus and not (port.isdigit() and int(port) <= 65535):
            raise ConfigError(
                f"export.prometheus = {self.export.prometheus!r}: use host:port (port 0 to 65535) "
                "such as 127.0.0.1:9464"
            )
        file_mode(self.export.file_mode)
        for name, value in (
            ("capture.drain_interval_ms", self.capture.drain_interval_ms),
            ("kafka.partitions", self.kafka.partitions),
            ("kafka.max_buffer_mib", self.kafka.max_buffer_mib),
            ("pipeline.queue_batches", self.pipeline.queue_batches),
            ("pipeline.idle_seconds", self.pipeline.idle_seconds),
            ("pipeline.max_buffered_mib", self.pipeline.max_buffered_mib),
            ("pipeline.chain_window_ms", self.pipeline.chain_window_ms),
            ("export.refresh_seconds", self.export.refresh_seconds),
        ):
            if value <= 0:
                raise ConfigError(f"{name} = {value}: must be positive")
        if not 0 <= self.pipeline.nice <= 19:
            raise ConfigError(f"pipeline.nice = {self.pipeline.nice}: use 0 (default) to 19 (yield the most)")
        for name, ids, low, high in (
            ("capture.exclude_pids", self.capture.exclude_pids, 1, 2**22),
            ("capture.only_pids", self.capture.only_pids, 1, 2**22),
            ("capture.exclude_ports", self.capture.exclude_ports, 1, 65535),
            ("capture.only_ports", self.capture.only_ports, 1, 65535),
        ):
            bad = [i for i in ids if not low <= i <= high]
            if bad:
                raise ConfigError(f"{name} = {list(ids)}: {bad[0]} is out of range: use {low} to {high}")
        for hostport in self.kafka.bootstrap.split(","):
            if not hostport.strip().rpartition(":")[2].isdigit():
                raise ConfigError(
                    f"kafka.bootstrap = {self.kafka.bootstrap!r}: use host:port[,host:port], e.g. kafka:9092"
                )
        return self


# The kernel's BPF map size (max_entries) is a u32: the largest power-of-two ring is 2 GiB.
MAX_RING_MIB = 2048


def file_mode(text: str) -> int:
    """`export.file_mode` ("0600", "640", "0o640") as an int; ConfigError unless rw for the owner."""
    digits = text.strip().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or mode & 0o600 != 0o600 or mode & 0o111:
        raise ConfigError(
            f"export.file_mode = {text!r}: use octal permissions with read and write for the owner "
            "and no execute bit, e.g. 0600 (the default) or 0640"
        )
    return mode


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _validate_kafka_security(kafka: KafkaConfig) -> None:
    if kafka.security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"kafka.security_protocol = {kafka.security_protocol!r}: use {', '.join(SECURITY_PROTOCOLS)}"
        )
    if kafka.security_protocol.startswith("SASL_"):
        if kafka.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"kafka.sasl_mechanism = {kafka.sasl_mechanism!r}: with {kafka.security_protocol} use "
                f"{', '.join(SASL_MECHANISMS)}"
            )
        if not kafka.sasl_plain_username or not kafka.sasl_plain_password:
            raise ConfigError(
                "kafka.sasl_plain_username and kafka.sasl_plain_password are required with "
                f"{kafka.security_protocol}: set them (the password via L7SCOPE_KAFKA_SASL_PLAIN_PASSWORD)"
            )
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"kafka.{key} = {path!r}: no such file, check the path")


def kafka_client_settings(kafka: KafkaConfig) -> dict[str, Any]:
    """Connection and security keyword arguments shared by kafka-python's producer, consumer and admin."""
    settings: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap.split(","),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL_"):
        settings |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_plain_username,
            "sasl_plain_password": kafka.sasl_plain_password,
        }
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(kafka, key):
            settings[key] = getattr(kafka, key)
    return settings


def _shown(key: str, value: Any) -> str:
    """A value for an error message: never the value of a password, token or other secret key."""
    return f"a {type(value).__name__} (value not shown)" if is_secret_key(key) else repr(value)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check a TOML value (or parse an environment string) against a field's type."""
    origin = typing.get_origin(kind)
    from_env = key.startswith("L7SCOPE_")  # only environment values arrive as strings to be parsed
    if origin is tuple:
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key} must be a list, got {_shown(key, value)}")
        return tuple(_coerce(key, v, typing.get_args(kind)[0]) for v in items)
    if kind is bool:
        if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_shown(key, value)}")
        return value
    if kind in (int, float):
        whole = isinstance(value, int) or (kind is float and isinstance(value, float))
        try:
            if isinstance(value, bool) or not (whole or (from_env and isinstance(value, str))):
                raise ValueError
            number = kind(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {_shown(key, value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {_shown(key, value)}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_shown(key, value)}")
    return value


def _build(cls: type, section: str, values: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    prefix = f"{section}." if section else ""
    for key in values:
        nested = isinstance(hints.get(key), type) and dataclasses.is_dataclass(hints[key])
        if key not in known or (nested and not isinstance(values[key], dict)):
            raise ConfigError(f"unknown key {prefix}{key}: known keys are {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[f.name] = _build(kind, f.name, values.get(f.name, {}), env)
            continue
        env_key = "L7SCOPE_" + (f"{section}_{f.name}" if section else f.name).upper()
        if env_key in env:
            kwargs[f.name] = _coerce(env_key, env[env_key], kind)
        elif f.name in values:
            kwargs[f.name] = _coerce(prefix + f.name, values[f.name], kind)
    return cls(**kwargs)


def load(path: str | Path | None, env: Mapping[str, str]) -> Config:
    """Defaults, then the TOML file, then L7SCOPE_* variables; validated."""
    values: dict[str, Any] = {}
    if path:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist: check the path") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a directory: name a TOML file in it") from None
        except PermissionError:
            raise ConfigError(f"config file {path} is not readable: check its permissions") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read ({e.strerror}): name a TOML file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not text (not UTF-8): name a TOML file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    check_environment(env)
    return typing.cast(Config, _build(Config, "", values, env)).validate()


# L7SCOPE_* variables that are not configuration keys: the set-up script's and the tests' own.
NOT_CONFIG_VARIABLES = frozenset({
    "L7SCOPE_CACHE",  # deploy/setup.sh: where downloads and kernel headers are cached
    "L7SCOPE_STRICT",  # tests: a skipped test is a failure
    "L7SCOPE_HEADER_CACHE",  # tests: kernel headers for the capture tests
    "L7SCOPE_LANE",  # deploy/setup.sh test: run only the fast or the full lane
    "L7SCOPE_JAVA",  # tests: the java binary for the Kafka test broker
    "L7SCOPE_CORPUS",  # tests: the conformance corpus
})  # fmt: skip


def config_variables() -> list[str]:
    """Every `L7SCOPE_<SECTION>_<KEY>` (and top-level `L7SCOPE_<KEY>`) that sets a key."""
    names = []
    for f in dataclasses.fields(Config):
        kind = typing.get_type_hints(Config)[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            names += [f"L7SCOPE_{f.name}_{g.name}".upper() for g in dataclasses.fields(kind)]
        else:
            names.append(f"L7SCOPE_{f.name}".upper())
    return names


def check_environment(env: Mapping[str, str]) -> None:
    """An L7SCOPE_* variable that sets nothing is a mistake, like an unknown key in the file."""
    known = config_variables()
    for name in sorted(env):
        if name.startswith("L7SCOPE_") and name not in known and name not in NOT_CONFIG_VARIABLES:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the names"
            raise ConfigError(f"unknown variable {name}: it sets no key; {hint} (or unset it)")
